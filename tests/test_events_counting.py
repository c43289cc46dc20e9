"""Every SES event counts once and right (issue 19, items 4 and 5): transient bounces stored
by concurrent transactions, and the event key. A real PostgreSQL, two connections, one
transaction held open: deterministic, no sleep-and-hope."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from mailroom import config as configuration
from mailroom import events
from mailroom.events_reader import ingest_params
from mailroom.outbox import Outbox, query
from test_deliverability import bounce

CONFIG = dataclasses.replace(configuration.Config(database_url=""), suppress_transient_count=3)


def store(conn: psycopg.Connection[Any], records: list[events.Event]) -> None:
    """Outbox.ingest_events's statements on a sync connection, in the caller's transaction
    (which the test holds open)."""
    params = ingest_params(records, CONFIG)
    if params["lock_addresses"]:
        conn.execute(query("events_lock"), params)
    conn.execute(query("events_ingest"), params)


def daemon_store(db: str, records: list[events.Event]) -> None:
    """The daemon's own path: Outbox.ingest_events through an autocommit pool."""

    async def run() -> None:
        kwargs = {"autocommit": True, "application_name": "second-replica"}
        async with AsyncConnectionPool(db, kwargs=kwargs, min_size=1, max_size=1) as pool:
            await Outbox(pool, queue="q", owner="w").ingest_events(ingest_params(records, CONFIG))

    asyncio.run(run())


def suppressed(conn: psycopg.Connection[Any], address: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM mailroom.suppressions WHERE address = %s", [address]
    ).fetchone()
    return row == (1,)


def waiting_on_a_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'second-replica' AND wait_event_type = 'Lock'"
    ).fetchone()
    return row == (1,)


def test_three_transient_bounces_from_concurrent_transactions_suppress(db: str) -> None:
    address = "ivy@example.com"
    with (
        psycopg.connect(db, autocommit=True) as watcher,
        psycopg.connect(db, autocommit=True) as first,
    ):
        store(watcher, [bounce(address, "Transient", "m-1")])  # committed before
        first.execute("BEGIN")
        store(first, [bounce(address, "Transient", "m-2")])  # held open after its insert
        failure: list[BaseException] = []

        def other_replica() -> None:
            try:
                daemon_store(db, [bounce(address, "Undetermined", "m-3")])
            except BaseException as exc:  # handed to the test below
                failure.append(exc)

        thread = threading.Thread(target=other_replica)
        thread.start()
        deadline = time.monotonic() + 10
        # the second ingest either finishes beside the first (it counted in a snapshot
        # without the first's bounce) or waits for it; either way the first commits next
        while thread.is_alive() and not waiting_on_a_lock(watcher):
            assert time.monotonic() < deadline, "the second ingest neither ran nor waited"
            time.sleep(0.01)
        first.execute("COMMIT")
        thread.join(10)
        assert not thread.is_alive()
        assert not failure, failure
        count = watcher.execute(
            "SELECT count(*) FROM mailroom.events WHERE recipient = %s", [address]
        ).fetchone()
        assert count == (3,)
        assert suppressed(watcher, address)  # 3 transient bounces within the window
