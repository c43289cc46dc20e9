"""Daemon lifecycle: start, the worker loop (wake -> claim -> send -> record), shutdown.

Signals only set a flag; the loop sees it, stops claiming, lets calls in flight finish
(or releases what never started) and returns.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog
from psycopg_pool import AsyncConnectionPool

from mailroom import health, metrics
from mailroom.config.settings import Config, ConfigError, record_margin
from mailroom.daemon import preflight, presence, reputation, retention, startup, suppression
from mailroom.daemon.batcher import Batcher, claim_size, lease_cap
from mailroom.daemon.capstep import CapStep
from mailroom.daemon.listener import HEARTBEAT_TIMEOUT, KEEPALIVE, Listener
from mailroom.daemon.retry import Policy
from mailroom.daemon.sender import Sender
from mailroom.outbox import UNAVAILABLE, Disposition, Message, Outbox, secure_session_async
from mailroom.transports import Defaults, Transport

log = structlog.get_logger("mailroom.daemon")
T = TypeVar("T")

if TYPE_CHECKING:
    from mailroom.daemon.ratecontrol import RateControl

DB_RETRY_MAX = 5.0  # seconds: longest pause between attempts to reach the database
GAUGE_INTERVAL = 15.0  # seconds between refreshes of the outbox gauges (also a DB probe)
DEBUG_REMINDER = 300.0  # seconds between the debug-mode warnings


class Daemon:
    def __init__(self, config: Config, transport: Transport) -> None:
        self.config = config
        self.sender = Sender(
            transport,
            Policy(base=config.retry_base, cap=config.retry_cap, pause=config.pause_duration),
            concurrency=config.ses_concurrency,
            call_budget=config.ses_connect_timeout + config.ses_read_timeout,
            keys=config.secret_keys,
            defaults=Defaults(source=config.ses_source, config_set=config.ses_config_set or None),
        )

        self.batcher = Batcher(limit=config.batch_limit, timeout=config.batch_timeout)
        self.listener = Listener(
            config.database_url,
            channel=config.channel_name,
            queue=config.queue_name,
            heartbeat_interval=config.healthcheck_interval,
            on_wake=self._on_wake,
        )
        self.health = health.Health(
            db_stale_after=3 * GAUGE_INTERVAL,
            listen_stale_after=config.healthcheck_interval + HEARTBEAT_TIMEOUT + 5.0,
            listen_connected=lambda: self.listener.connected,
            listen_heartbeat=lambda: self.listener.last_heartbeat,
            pause=self._pause_detail,
        )
        self.stopping = False
        self.ready = False
        self.in_flight = 0  # batches being sent or recorded
        self._batches = 0  # batches claimed so far, for the batch id in logs
        self._backlog = True  # more due work may be waiting: claim again
        self._growing = False  # the last claim came back full: size claims to the free calls
        self._simple_share = 1.0  # of the last batch: one call per message until seen
        self.leased = 0  # messages claimed and not yet recorded
        self._lease_cap = lease_cap(config.batch_limit, config.ses_concurrency)
        self._next_poll = 0.0  # backstop poll, moved earlier by scheduled work
        self._wake = anyio.Event()
        self.sender.on_room = self._room
        # mailroom.daemons (presence.py): this daemon's row, written with the gauges and at
        # once when a pause starts or ends
        self._me = presence.Identity.of(
            config, endpoint=getattr(self.sender.transport, "url", ""),
            version=metrics.version(), started_at=datetime.now(UTC),
        )  # fmt: skip
        self._rate_control: RateControl | None = None
        self._refresh_now = anyio.Event()
        self._shown_paused = False

    # -- wake-ups ----------------------------------------------------------------------

    def _on_wake(self, reconnected: bool) -> None:
        if reconnected:
            self._backlog = True
            if not self.ready:
                self.ready = True
                health.sd_notify("READY=1\nSTATUS=listening")
        else:
            self.batcher.notified(anyio.current_time())
        self._wake.set()

    def _room(self) -> None:
        self._wake.set()  # the sender can take another batch

    def _schedule(self, at: float) -> None:
        if at < self._next_poll:
            self._next_poll = at
            self._wake.set()

    def _pause_detail(self) -> str:
        """For /readyz (an HTTP thread): the pause's reason and how long it still runs."""
        left = self.sender.paused_until - time.monotonic()  # asyncio's clock is monotonic
        return f"{left:.0f} s more, {self.sender.pause_reason}" if left > 0 else ""

    def stop(self) -> None:
        if not self.stopping:
            health.sd_notify("STOPPING=1")
        self.stopping = True
        self.health.draining = True
        self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stop() (or SIGTERM/SIGINT when run by serve())."""
        startup.announce(self.config, self.sender.transport)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.config.database_url,
            min_size=1,
            max_size=self.config.ses_concurrency + 2,
            kwargs={"autocommit": True, "application_name": "mailroom", **KEEPALIVE},
            configure=secure_session_async,
            open=False,
            name="mailroom",
        )
        await pool.open(wait=False)
        outbox = Outbox(
            pool,
            queue=self.config.queue_name,
            owner=self.config.worker_name,
            timeout=self.config.db_timeout,
        )
        try:
            rate_control = self._rate_control = startup.rate_control(
                self.config, outbox, self.sender
            )
            if rate_control is not None and rate_control.auto:
                # the quota before the first send: a day's quota nearly used up is not
                # discovered after a burst (on failure: the fallback rate, read again soon)
                await rate_control.read_quota()
            if self.config.caps:
                self.sender.caps = CapStep(self.config.caps, outbox)
            self.sender.suppressed = lambda addresses: _suppressed(outbox, addresses)
            async with anyio.create_task_group() as tg:
                if rate_control is not None:
                    tg.start_soon(rate_control.run, self.sender.paused)
                if self.sender.caps is not None:
                    tg.start_soon(self.sender.caps.prune)
                if self.config.sends_to_ses:
                    tg.start_soon(self._preflight, outbox)
                tg.start_soon(self.listener.run)
                tg.start_soon(self._tick)
                tg.start_soon(self._refresh_gauges, outbox)
                tg.start_soon(retention.run, outbox, self.config)
                tg.start_soon(reputation.refresh, outbox)
                if self.config.events_queue_url:
                    # only a daemon that reads events loads the reader (and its crypto)
                    from mailroom.events import reader as events_reader  # noqa: PLC0415

                    reader = events_reader.EventsReader(self.config, outbox)
                    self.health.extra["events"] = reader.readiness
                    tg.start_soon(events_reader.supervise, reader.run)  # apart from sending
                await self._work(outbox)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(presence.LEAVE_TIMEOUT), contextlib.suppress(*UNAVAILABLE):
                    await presence.leave(outbox, self._me)
                await pool.close()
                await self.sender.transport.aclose()
        log.info("stopped")

    async def _preflight(self, outbox: Outbox) -> None:
        """The findings of `mailroom check --ses`, logged once at start: warnings only."""
        templates = await self._db(lambda: preflight.pending_templates(outbox))
        await startup.log_preflight(templates or [])

    async def serve(self) -> None:
        """run() as a service: HTTP endpoints, and a graceful stop on SIGTERM or SIGINT."""
        if self.config.http_port:
            host, port = self.config.http_host, self.config.http_port
            try:
                server = health.serve(self.health, host, port)
            except OSError as exc:  # a busy port is a setting to change: one line, exit 2
                raise ConfigError(
                    [f"MAILROOM_HTTP_PORT: cannot listen on {host}:{port}: {exc.strerror}"
                     " (another program holds it? set another port, or 0 for no endpoints)"]
                ) from None  # fmt: skip
            log.info("http_listening", port=server.server_address[1])
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            await self.run()
            tg.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutdown_requested", signal=signal.Signals(signum).name)
                self.stop()

    async def _tick(self) -> None:
        """Proves the event loop runs: for /healthz, and as systemd's watchdog ping."""
        watchdog = health.watchdog_interval()
        while True:
            self.health.loop_tick = time.monotonic()
            if not self.sender.paused():
                metrics.SENDING_PAUSED.set(0)
                metrics.SENDING_PAUSE_REASON.clear()
            if self.sender.paused() != self._shown_paused:
                self._shown_paused = self.sender.paused()
                self._refresh_now.set()  # operators see a pause within a second
            if watchdog is not None:
                health.sd_notify("WATCHDOG=1")
            await anyio.sleep(min(1.0, watchdog or 1.0))

    async def _refresh_gauges(self, outbox: Outbox) -> None:
        reminded = anyio.current_time()
        while True:
            result = await self._db(outbox.gauges)
            if result is not None:
                counts, oldest = result
                for status, count in counts.items():
                    metrics.OUTBOX_MESSAGES.labels(status).set(count)
                metrics.OLDEST_DUE_AGE.set(oldest)
            paused = await self._db(outbox.queue_paused)  # an operator's pause (0027)
            if paused is not None:
                metrics.QUEUE_PAUSED.set(int(paused))
            await self._db(lambda: presence.heartbeat(outbox, self._presence()))
            if self.config.debug and anyio.current_time() - reminded >= DEBUG_REMINDER:
                reminded = anyio.current_time()
                log.warning("debug_mode", detail="MAILROOM_DEBUG is on: no email is sent to SES")
            with anyio.move_on_after(GAUGE_INTERVAL):
                await self._refresh_now.wait()
            self._refresh_now = anyio.Event()

    def _presence(self) -> dict[str, Any]:
        control = self._rate_control
        return presence.heartbeat_params(
            self._me,
            pause_seconds=self.sender.paused_until - anyio.current_time(),
            pause_reason=self.sender.pause_reason,
            rate_in_force=control.in_force if control is not None else None,
            reveal=self.config.reveal_addresses,
        )

    # -- the worker loop ---------------------------------------------------------------

    async def _work(self, outbox: Outbox) -> None:
        cfg = self.config
        async with anyio.create_task_group() as batches:
            while not self.stopping:
                now = anyio.current_time()
                if now >= self._next_poll:
                    self._next_poll = now + cfg.poll_interval
                    reaped = await self._db(outbox.reap_expired)
                    if reaped:
                        metrics.LEASES_EXPIRED.inc(reaped)
                        log.warning("expired_leases_reclaimed", count=reaped)
                    self._backlog = True
                if self.batcher.due(now, self.in_flight):
                    self.batcher.flushed()
                    self._backlog = True
                can_claim = (
                    not self.sender.paused()
                    and self.in_flight < cfg.ses_concurrency
                    and self.sender.queued < cfg.ses_concurrency
                    and self.leased < self._lease_cap
                )
                size = 0
                if self._backlog and can_claim:
                    size = claim_size(
                        cfg.batch_limit,
                        backlogged=self._growing,
                        free_calls=self.sender.free_calls(),
                        want_calls=self.sender.batch_calls,
                        simple_share=self._simple_share,
                        room=self._lease_cap - self.leased,
                    )
                if size:
                    batch = await self._db(functools.partial(outbox.claim, size, cfg.lease))
                    if batch is None:  # database unreachable; _db has backed off
                        continue
                    self._backlog = self._growing = len(batch) == size
                    if batch:
                        simple = sum(1 for m in batch if m.template is None)
                        self._simple_share = simple / len(batch)
                        metrics.BATCH_SIZE.observe(len(batch))
                        metrics.IN_FLIGHT.inc(len(batch))
                        self.in_flight += 1
                        self.leased += len(batch)
                        look_ahead = not self._backlog  # after the batch: off the latency path
                        batches.start_soon(
                            self._process, outbox, batch, now + cfg.lease, look_ahead
                        )
                        # the batch plans its calls (sender.queued) before the next claim
                        await anyio.lowlevel.checkpoint()
                    elif not self._backlog:
                        await self._look_ahead(outbox)
                    continue
                paused_until = self.sender.paused_until if self.sender.paused() else None
                wake_at = min(
                    t for t in (self._next_poll, self.batcher.deadline(), paused_until) if t
                )
                with anyio.move_on_after(max(wake_at - anyio.current_time(), 0.0)):
                    await self._wake.wait()
                self._wake = anyio.Event()
            # Shutting down: start no call; those in flight finish within the deadline.
            self.sender.draining = True
            log.info("draining", batches_in_flight=self.in_flight)
            batches.cancel_scope.deadline = anyio.current_time() + cfg.shutdown_timeout

    async def _look_ahead(self, outbox: Outbox) -> None:
        """Wake up for the next scheduled message or lease expiry, which the LISTEN
        channel will not announce."""
        delay = await self._db(outbox.next_wakeup)
        if delay is not None:
            # Past due but not claimed: another replica holds it; look again later.
            self._schedule(anyio.current_time() + (delay + 0.001 if delay > 0 else 1.0))

    async def _process(
        self, outbox: Outbox, batch: Sequence[Message], lease_end: float, look_ahead: bool
    ) -> None:
        self._batches += 1
        context = structlog.contextvars.bind_contextvars(
            batch=f"{self.config.worker_name}/{self._batches}"
        )
        unrecorded = len(batch)
        try:
            deadline = lease_end - record_margin(self.config.lease)
            outcomes = await self.sender.send(batch, deadline=deadline)
            await self._record(outbox, outcomes)
            metrics.IN_FLIGHT.dec(unrecorded)  # recorded: not in flight during the look-ahead
            unrecorded = 0
            # Retries and releases are due again soon: wake up for them, not for the
            # lease expiry that was the earliest event when the batch was claimed.
            delays = [d.delay for _, d in outcomes if d.status in ("retrying", "pending")]
            if delays:
                self._schedule(anyio.current_time() + min(delays))
            if look_ahead:
                await self._look_ahead(outbox)
        finally:
            structlog.contextvars.reset_contextvars(**context)
            metrics.IN_FLIGHT.dec(unrecorded)
            self.in_flight -= 1
            self.leased -= len(batch)
            self._wake.set()

    async def _record(self, outbox: Outbox, outcomes: Sequence[tuple[int, Disposition]]) -> None:
        delay = 0.05
        while True:
            try:
                written = await outbox.record(outcomes)
            except UNAVAILABLE as exc:
                log.warning(
                    "record_failed", error=type(exc).__name__, count=len(outcomes), retry_in=delay
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)
                continue
            break
        statuses: dict[str, int] = {}
        for _, disposition in outcomes:
            statuses[disposition.status] = statuses.get(disposition.status, 0) + 1
        lost = len(outcomes) - len(written)
        log.info("batch_done", messages=len(outcomes), **statuses)
        if lost:
            log.warning("lease_lost", messages=lost, detail="another worker owns them now")

    async def _db(self, operation: Callable[[], Awaitable[T]]) -> T | None:
        """Run a database operation; on failure log, back off briefly and return None."""
        try:
            result = await operation()
        except UNAVAILABLE as exc:
            self.health.db_ok = False
            self.health.db_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            log.warning("database_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
            await anyio.sleep(min(DB_RETRY_MAX, 0.5))
            return None
        self.health.db_ok = True
        self.health.db_ok_at = time.monotonic()
        return result


async def _suppressed(outbox: Outbox, addresses: list[str]) -> dict[str, suppression.Entry]:
    rows = await outbox.suppressed_among(addresses)
    return {address: suppression.Entry(reason, since) for address, reason, since in rows}
