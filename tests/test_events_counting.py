"""Every SES event counts once and right (issue 19, items 4 and 5): transient bounces stored
by concurrent transactions, and the event key. A real PostgreSQL, two connections, one
transaction held open: deterministic, no sleep-and-hope."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from mailroom.config import settings as configuration
from mailroom.events import parsing as events
from mailroom.events.storing import ingest_params
from mailroom.outbox import Outbox, query
from test_deliverability import bounce
from test_events import fixture, sns

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


# -- one event, one key --------------------------------------------------------------------


def ingest(conn: psycopg.Connection[Any], records: list[events.Event]) -> tuple[Any, ...]:
    row = conn.execute(query("events_ingest"), ingest_params(records, CONFIG)).fetchone()
    assert row is not None
    return tuple(row)


def reasons(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [
        (str(a), str(r))
        for a, r in conn.execute("SELECT address, reason FROM mailroom.suppressions ORDER BY 1")
    ]


def test_a_transient_then_a_permanent_bounce_of_one_message_are_two_events(
    conn: psycopg.Connection[Any],
) -> None:
    transient = bounce("ann@example.com", "Transient", "m-1")
    permanent = bounce("ann@example.com", "Permanent", "m-1")
    assert transient.key != permanent.key
    assert ingest(conn, [transient])[1] == []
    new, added = ingest(conn, [permanent])[:2]
    assert new == [permanent.key]  # before: one key for both, the Permanent dropped
    assert added == ["bounce"]
    assert reasons(conn) == [("ann@example.com", "bounce")]


def test_two_complaints_with_their_own_feedback_ids_are_two_events(
    conn: psycopg.Connection[Any],
) -> None:
    first = fixture("complaint")
    first["complaint"]["complaintFeedbackType"] = "not-spam"
    second = fixture("complaint")
    second["complaint"]["feedbackId"] = "0100018f-complaint-2"
    (a,), (b,) = events.parse(sns(first)), events.parse(sns(second))
    assert a.key != b.key
    assert ingest(conn, [a])[1] == []  # not-spam: no suppression
    assert ingest(conn, [b])[1] == ["complaint"]  # before: the abuse report was dropped
    (redelivered,) = events.parse(sns(second, "sns-9"))
    assert ingest(conn, [redelivered])[:2] == ([], [])


def legacy_row(conn: psycopg.Connection[Any], record: events.Event) -> None:
    """A row stored before the key covered the bounce type and feedback id."""
    assert record.legacy_key is not None
    conn.execute(
        "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
        " subtype, detail, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [record.legacy_key, record.provider_message_id, record.recipient, record.type,
         record.subtype, record.detail, record.occurred_at],
    )  # fmt: skip


def test_an_event_stored_before_the_new_key_is_still_a_duplicate_when_redelivered(
    conn: psycopg.Connection[Any],
) -> None:
    config = dataclasses.replace(CONFIG, suppress_transient_count=2)
    old = bounce("ivy@example.com", "Transient", "m-1")
    legacy_row(conn, old)
    (complaint,) = events.parse(sns(fixture("complaint")))
    legacy_row(conn, complaint)
    # the old formula, unchanged: sha256 of type, messageId, recipient, "" joined by U+001F
    assert (
        old.legacy_key
        == hashlib.sha256(
            "\x1f".join(("Bounce", "m-1", "ivy@example.com", "")).encode()
        ).hexdigest()
    )
    row = conn.execute(query("events_ingest"), ingest_params([old, complaint], config)).fetchone()
    assert row is not None
    assert (list(row[0]), list(row[1])) == ([], [])  # redeliveries: neither stored nor counted
    # a Permanent bounce of the same message and recipient is a new event, and suppresses
    permanent = bounce("ivy@example.com", "Permanent", "m-1")
    assert permanent.legacy_key == old.legacy_key
    new, added = ingest(conn, [permanent])[:2]
    assert (new, added) == ([permanent.key], ["bounce"])


def test_keys_of_events_that_were_never_ambiguous_are_unchanged() -> None:
    (delivery, _) = events.parse(sns(fixture("delivery")))
    assert delivery.legacy_key is None
    assert (
        delivery.key
        == hashlib.sha256(
            "\x1f".join(("Delivery", "0100018f-message-3", "carol@example.com", "")).encode()
        ).hexdigest()
    )
