"""The LISTEN session against real network faults, through a TCP proxy."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mailroom.daemon.listener import Listener
from tcp_proxy import TcpProxy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _through(proxy: TcpProxy, dsn: str) -> str:
    return make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))


async def _until(predicate: Any, limit: float = 15.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 -- polls the listener's state from outside
            await anyio.sleep(0.02)


async def _notify(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_notify('token_insert', 'q')")


@pytest.mark.anyio
async def test_healthy_listen_connection_survives_its_heartbeats(db: str) -> None:
    listener = Listener(db, channel="token_insert", queue="q", heartbeat_interval=0.1,
                        on_wake=lambda _: None)  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.run)
        await _until(lambda: listener.connected)
        first_beat = listener.last_heartbeat
        await anyio.sleep(1.0)  # about ten heartbeats
        assert listener.reconnects == 0
        assert listener.last_heartbeat is not None
        assert first_beat is not None
        assert listener.last_heartbeat > first_beat
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["stall", "cut"])
async def test_half_open_or_reset_listen_connection_is_replaced(db: str, fault: str) -> None:
    target = conninfo_to_dict(db)
    with TcpProxy(str(target["host"]), int(str(target["port"]))) as proxy:
        wakes: list[bool] = []
        listener = Listener(
            _through(proxy, db), channel="token_insert", queue="q",
            heartbeat_interval=0.3, on_wake=wakes.append,
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            await _until(lambda: listener.connected)
            first_pid = listener.backend_pid
            await _notify(db)
            await _until(lambda: False in wakes)  # a plain notification arrives

            # stall: the socket stays open but silent, only the heartbeat can tell
            assert getattr(proxy, fault)() >= 1
            await _until(lambda: listener.reconnects >= 1 and listener.connected)
            assert listener.backend_pid != first_pid
            assert wakes.count(True) >= 2  # every (re)connect asks for a backlog drain
            wakes.clear()
            await _notify(db)
            await _until(lambda: False in wakes)  # and the new session really listens
            tg.cancel_scope.cancel()
