"""The LISTEN session: one dedicated connection (never pooled), kept honest by TCP
keepalives and a heartbeat on the session itself, replaced when it dies.

Notifications sent while disconnected are lost, so every (re)connect reports a "backlog"
wake-up and the daemon claims whatever is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import psycopg
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from mailroom import metrics, outbox

log = structlog.get_logger("mailroom.listener")

# Half-open TCP (a peer gone without a RST) is found by keepalive probes on an idle
# connection within idle + interval * count seconds, and by tcp_user_timeout when sent
# data stays unacknowledged; the heartbeat bounds what the kernel cannot see.
KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
HEARTBEAT_TIMEOUT = 10.0  # seconds, at most; never longer than the heartbeat interval


class ListenerLost(Exception):
    """The LISTEN session stopped answering or stopped listening."""


class Listener:
    def __init__(
        self,
        dsn: str,
        *,
        channel: str,
        queue: str,
        heartbeat_interval: float,
        on_wake: Callable[[bool], None],
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.queue = queue
        self.heartbeat_interval = heartbeat_interval
        self.on_wake = on_wake  # called with True after a (re)connect: drain the backlog
        self.connected = False
        self.reconnects = 0
        self.last_heartbeat: float | None = None
        self.backend_pid: int | None = None

    async def run(self) -> None:
        """Listen for ever: connect with backoff, serve the session, reconnect on loss."""
        while True:
            conn = await self._connect()
            try:
                await self._serve(conn)
            except (psycopg.Error, ListenerLost, OSError, TimeoutError) as exc:
                log.warning(
                    "listen_connection_lost", error=type(exc).__name__, detail=str(exc)[:200]
                )
            finally:
                self.connected = False
                metrics.LISTEN_CONNECTED.set(0)
                with anyio.CancelScope(shield=True):
                    await conn.close()
            self.reconnects += 1
            metrics.LISTEN_RECONNECTS.inc()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        retrying = AsyncRetrying(
            wait=wait_random_exponential(multiplier=0.1, max=15.0),  # full jitter
            retry=retry_if_exception_type((psycopg.OperationalError, OSError, TimeoutError)),
            before_sleep=lambda state: log.warning(
                "listen_connect_failed",
                attempt=state.attempt_number,
                error=type(state.outcome.exception()).__name__ if state.outcome else None,
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=10,
                    application_name="mailroom-listener",
                    **KEEPALIVE,
                )
                try:
                    await outbox.secure_session_async(conn)
                    await outbox.listen(conn, self.channel)
                except BaseException:
                    await conn.close()
                    raise
                return conn
        raise AssertionError("unreachable: tenacity retries until it returns")

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.connected = True
        self.backend_pid = conn.info.backend_pid
        self._beat()
        log.info("listening", channel=self.channel, backend_pid=self.backend_pid)
        self.on_wake(True)
        while True:
            # notifies() holds the connection lock: end it on a timeout to run the heartbeat.
            async for notify in conn.notifies(timeout=self.heartbeat_interval):
                if notify.payload in ("", self.queue):
                    self.on_wake(False)
            with anyio.fail_after(min(HEARTBEAT_TIMEOUT, self.heartbeat_interval)):
                if not await outbox.is_listening(conn, self.channel):
                    raise ListenerLost("session is no longer listening")
            self._beat()

    def _beat(self) -> None:
        self.last_heartbeat = time.monotonic()
        metrics.LISTEN_CONNECTED.set(1)
        metrics.LISTEN_HEARTBEAT.set(time.time())
