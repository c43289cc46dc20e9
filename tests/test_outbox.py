"""The daemon's side of the outbox on a real PostgreSQL: claim, record, reap, next_wakeup."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import mailroom
from mailroom.daemon.retry import Policy, dispose, released
from mailroom.outbox import Disposition, Outbox
from mailroom.transports.classify import Verdict

pytestmark = pytest.mark.anyio

QUEUE = "user_action_queue"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def enqueue(conn: psycopg.Connection[Any], **fields: Any) -> int:
    fields.setdefault("subject", "Hello")
    fields.setdefault("text", "Hi")
    return mailroom.enqueue(conn, fields.pop("to", "ann@example.com"), **fields)


def row(conn: psycopg.Connection[Any], message_id: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(
        f"SELECT {columns} FROM mailroom.outbox WHERE id = %s",  # noqa: S608 -- test literals
        [message_id],
    ).fetchone()
    assert found is not None
    return tuple(found)


def attempt_rows(conn: psycopg.Connection[Any], message_id: int) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in conn.execute(
            "SELECT attempt, outcome, provider_message_id, error, worker FROM mailroom.attempts"
            " WHERE message_id = %s ORDER BY id",
            [message_id],
        ).fetchall()
    ]


def sent(provider_id: str) -> Disposition:
    return dispose(Verdict.SENT, 1, 10, Policy(), provider_id=provider_id)


def retry_in(seconds: float, error: str = "Throttling: slow down") -> Disposition:
    return dispose(
        Verdict.RETRY, 1, 10, Policy(base=seconds, cap=seconds), error=error, rand=lambda: 1.0
    )


# -- claim ------------------------------------------------------------------------------


async def test_claim_order_priority_then_due_time_then_id(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    now = datetime.now(UTC)
    # inserted so that id order is nearly the reverse of the claim order
    e = enqueue(conn, priority=-1, not_before=now - timedelta(hours=1))
    a = enqueue(conn, priority=0, not_before=now - timedelta(minutes=10))
    b = enqueue(conn, priority=5, not_before=now - timedelta(minutes=1))
    c = enqueue(conn, priority=5, not_before=now - timedelta(minutes=5))
    d = enqueue(conn, priority=5, not_before=now - timedelta(minutes=5))  # ties c: by id
    future = enqueue(conn, priority=9, not_before=now + timedelta(hours=1))
    other_queue = enqueue(conn, priority=100, queue="other_queue")
    dead = enqueue(conn, priority=100)
    conn.execute("UPDATE mailroom.outbox SET status = 'dead' WHERE id = %s", [dead])

    outbox = Outbox(pool, queue=QUEUE, owner="w1")
    first = await outbox.claim(3, 30.0)
    assert {m.id for m in first} == {c, d, b}
    assert [m.id for m in await outbox.claim(1, 30.0)] == [a]
    assert [m.id for m in await outbox.claim(1, 30.0)] == [e]
    assert await outbox.claim(10, 30.0) == []

    for untouched in (future, other_queue):
        assert row(conn, untouched, "status, attempts, locked_by") == ("pending", 0, None)
    assert row(conn, dead, "status, attempts") == ("dead", 0)


async def test_claim_order_one_at_a_time(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    now = datetime.now(UTC)
    low_old = enqueue(conn, priority=0, not_before=now - timedelta(minutes=9))
    high_new = enqueue(conn, priority=1, not_before=now - timedelta(seconds=1))
    low_new = enqueue(conn, priority=0, not_before=now - timedelta(minutes=1))
    tie_1 = enqueue(conn, priority=0, not_before=now - timedelta(minutes=5))
    tie_2 = enqueue(conn, priority=0, not_before=now - timedelta(minutes=5))
    outbox = Outbox(pool, queue=QUEUE, owner="w1")
    order: list[int] = []
    while batch := await outbox.claim(1, 30.0):
        order.extend(m.id for m in batch)
    assert order == [high_new, low_old, tie_1, tie_2, low_new]


async def test_claim_leases_the_row(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    message_id = enqueue(
        conn,
        to=["ann@example.com", "bob@example.com"],
        cc="cc@example.com",
        subject=None,
        text=None,
        template="welcome",
        data={"login": "ann"},
        from_address="team@example.com",
        config_set="transactional",
        max_attempts=4,
    )
    before = time.time()
    [message] = await Outbox(pool, queue=QUEUE, owner="worker-7").claim(10, 45.0)
    assert message.id == message_id
    assert (message.attempts, message.max_attempts) == (1, 4)
    assert message.to == ["ann@example.com", "bob@example.com"]
    assert message.cc == ["cc@example.com"]
    assert message.template == "welcome"
    assert message.template_data is not None
    assert json.loads(message.template_data) == {"login": "ann"}  # JSON text, as SES takes it
    assert (message.from_address, message.config_set) == ("team@example.com", "transactional")
    assert message.kind == "template"
    assert before - 5 < message.created_at <= time.time()

    status, attempts, locked_by, lease_left = row(
        conn, message_id, "status, attempts, locked_by, extract(epoch FROM locked_until - now())"
    )
    assert (status, attempts, locked_by) == ("sending", 1, "worker-7")
    assert 43.0 < lease_left <= 45.0
    # a leased row is not claimable again
    assert await Outbox(pool, queue=QUEUE, owner="other").claim(10, 45.0) == []


async def test_concurrent_claimers_never_share_a_row(
    db: str, pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    total = 200
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text)"
        " SELECT ARRAY['u' || g || '@example.com'], 's', 't' FROM generate_series(1, %s) g",
        [total],
    )
    other_pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db, kwargs={"autocommit": True}, open=False, min_size=2, max_size=4
    )
    await other_pool.open(wait=True)
    try:
        owners = {
            "daemon-a": Outbox(pool, queue=QUEUE, owner="daemon-a"),
            "daemon-b": Outbox(other_pool, queue=QUEUE, owner="daemon-b"),
        }
        got: dict[str, list[int]] = {name: [] for name in owners}

        async def take(name: str) -> None:
            got[name].extend(m.id for m in await owners[name].claim(10, 60.0))

        for _round in range(total):  # bounded; ends when a round claims nothing
            before = sum(len(ids) for ids in got.values())
            async with anyio.create_task_group() as tg:
                for name in owners:
                    for _ in range(2):
                        tg.start_soon(take, name)
            if sum(len(ids) for ids in got.values()) == before:
                break
    finally:
        await other_pool.close()

    everything = got["daemon-a"] + got["daemon-b"]
    assert len(everything) == len(set(everything)) == total
    assert got["daemon-a"]
    assert got["daemon-b"]
    holders = dict(
        conn.execute(
            "SELECT id, locked_by FROM mailroom.outbox WHERE status = 'sending'"
        ).fetchall()
    )
    assert len(holders) == total
    for name, ids in got.items():
        assert {holders[i] for i in ids} == {name}
    attempts = conn.execute("SELECT DISTINCT attempts FROM mailroom.outbox").fetchall()
    assert attempts == [(1,)]


# -- record -----------------------------------------------------------------------------


async def test_record_applies_a_whole_batch(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    ids = [enqueue(conn, to=f"u{n}@example.com") for n in range(5)]
    to_send, to_retry, to_kill, to_release, to_pause = ids
    outbox = Outbox(pool, queue=QUEUE, owner="w1")
    assert {m.id for m in await outbox.claim(10, 60.0)} == set(ids)

    written = await outbox.record(
        [
            (to_send, sent("ses-0001")),
            (to_retry, retry_in(30.0)),
            (to_kill, dispose(Verdict.DEAD, 1, 10, Policy(), error="MessageRejected: no")),
            (to_release, released()),
            (to_pause, dispose(Verdict.PAUSE, 1, 10, Policy(pause=120.0), error="Paused")),
        ]
    )
    assert written == set(ids)

    columns = (
        "status, attempts, provider_message_id, sent_at IS NOT NULL, locked_by, locked_until,"
        " last_error, extract(epoch FROM next_attempt_at - now())"
    )
    status, attempts, provider, has_sent_at, locked_by, locked_until, error, _ = row(
        conn, to_send, columns
    )
    assert (status, attempts, provider, has_sent_at, locked_by, locked_until, error) == (
        "sent",
        1,
        "ses-0001",
        True,
        None,
        None,
        None,
    )
    assert attempt_rows(conn, to_send) == [(1, "sent", "ses-0001", None, "w1")]

    status, attempts, provider, has_sent_at, locked_by, _, error, due_in = row(
        conn, to_retry, columns
    )
    assert (status, attempts, provider, has_sent_at, locked_by) == (
        "retrying",
        1,
        None,
        False,
        None,
    )
    assert error == "Throttling: slow down"
    assert 29.0 < due_in <= 30.0
    assert attempt_rows(conn, to_retry) == [(1, "retry", None, "Throttling: slow down", "w1")]

    assert row(conn, to_kill, "status, attempts, last_error, locked_by") == (
        "dead",
        1,
        "MessageRejected: no",
        None,
    )
    assert attempt_rows(conn, to_kill) == [(1, "dead", None, "MessageRejected: no", "w1")]

    status, attempts, _, _, locked_by, _, _, due_in = row(conn, to_release, columns)
    assert (status, attempts, locked_by) == ("pending", 0, None)
    assert due_in <= 0.0
    assert attempt_rows(conn, to_release) == []

    status, attempts, _, _, locked_by, _, error, due_in = row(conn, to_pause, columns)
    assert (status, attempts, locked_by, error) == ("retrying", 0, None, "Paused")
    assert 119.0 < due_in <= 120.0
    assert attempt_rows(conn, to_pause) == [(1, "paused", None, "Paused", "w1")]

    # only the released message is due again, and its refunded try is counted once
    [again] = await outbox.claim(10, 60.0)
    assert (again.id, again.attempts) == (to_release, 1)


async def test_record_of_nothing_writes_nothing(pool: AsyncConnectionPool[Any]) -> None:
    assert await Outbox(pool, queue=QUEUE, owner="w1").record([]) == set()


async def test_owner_that_lost_its_lease_can_only_record_sent(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    first = enqueue(conn, to="one@example.com", priority=1)
    second = enqueue(conn, to="two@example.com", priority=1)
    slow = Outbox(pool, queue=QUEUE, owner="slow")
    fresh = Outbox(pool, queue=QUEUE, owner="fresh")

    assert {m.id for m in await slow.claim(2, 0.2)} == {first, second}
    await anyio.sleep(0.3)
    assert await fresh.reap_expired() == 2
    assert {(m.id, m.attempts) for m in await fresh.claim(2, 60.0)} == {(first, 2), (second, 2)}
    third = enqueue(conn, to="three@example.com")
    assert [m.id for m in await slow.claim(1, 60.0)] == [third]  # a lease slow still holds

    # slow's stale outcomes are refused, row by row: record returns only what it wrote
    stale = [
        (first, retry_in(5.0)),
        (second, dispose(Verdict.DEAD, 1, 10, Policy(), error="MessageRejected")),
        (first, released()),
        (third, retry_in(5.0)),
    ]
    assert await slow.record(stale) == {third}
    for message_id in (first, second):
        assert row(conn, message_id, "status, attempts, locked_by") == ("sending", 2, "fresh")
        assert [r[1] for r in attempt_rows(conn, message_id)] == ["lease_expired"]

    # direction 1: the new holder records a retry; the stale holder then reports success,
    # which is always worth recording, even over a row that is retrying
    assert await fresh.record([(first, retry_in(600.0))]) == {first}
    assert await slow.record([(first, sent("ses-slow-1"))]) == {first}
    assert row(conn, first, "status, provider_message_id, locked_by, locked_until") == (
        "sent",
        "ses-slow-1",
        None,
        None,
    )

    # direction 2: the stale holder reports success while the new holder still has the
    # lease; the new holder can then no longer overwrite the sent row
    assert await slow.record([(second, sent("ses-slow-2"))]) == {second}
    assert await fresh.record([(second, retry_in(5.0))]) == set()
    assert await fresh.record([(second, sent("ses-fresh-2"))]) == set()
    assert row(conn, second, "status, provider_message_id, locked_by, sent_at IS NOT NULL") == (
        "sent",
        "ses-slow-2",
        None,
        True,
    )
    # slow's try 1 was logged "lease_expired" by the reaper; its late success replaces that
    # row: one try, one row (fresh's try 2 was refused, so it logged nothing)
    assert [r[:3] for r in attempt_rows(conn, second)] == [(1, "sent", "ses-slow-2")]


async def test_a_late_success_after_a_reaped_lease_is_one_attempt_and_no_error(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    message_id = enqueue(conn)
    slow = Outbox(pool, queue=QUEUE, owner="slow")
    assert [m.id for m in await slow.claim(1, 0.2)] == [message_id]
    await anyio.sleep(0.3)
    assert await Outbox(pool, queue=QUEUE, owner="reaper").reap_expired() == 1
    assert row(conn, message_id, "last_error") == ("lease expired: slow did not record an outcome",)
    assert await slow.record([(message_id, sent("ses-late"))]) == {message_id}
    assert row(conn, message_id, "status, attempts, last_error") == ("sent", 1, None)
    assert [r[:3] for r in attempt_rows(conn, message_id)] == [(1, "sent", "ses-late")]


async def test_a_sent_message_keeps_no_error_of_an_earlier_try(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    message_id = enqueue(conn)
    outbox = Outbox(pool, queue=QUEUE, owner="w1")
    await outbox.claim(1, 60.0)
    await outbox.record([(message_id, retry_in(0.0))])
    assert row(conn, message_id, "last_error") != (None,)
    await outbox.claim(1, 60.0)
    await outbox.record([(message_id, sent("ses-1"))])
    assert row(conn, message_id, "status, last_error") == ("sent", None)
    assert [r[1] for r in attempt_rows(conn, message_id)] == ["retry", "sent"]


async def test_sent_is_recorded_even_after_the_lease_was_reaped_to_dead(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    message_id = enqueue(conn, max_attempts=1)
    slow = Outbox(pool, queue=QUEUE, owner="slow")
    assert [m.id for m in await slow.claim(1, 0.2)] == [message_id]
    await anyio.sleep(0.3)
    assert await Outbox(pool, queue=QUEUE, owner="reaper").reap_expired() == 1
    assert row(conn, message_id, "status") == ("dead",)
    # SES did accept the message; the slow worker reports it
    assert await slow.record([(message_id, sent("ses-late"))]) == {message_id}
    assert row(conn, message_id, "status, provider_message_id") == ("sent", "ses-late")


# -- reap_expired -----------------------------------------------------------------------


async def test_reap_expired_leases(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    retried = enqueue(conn, priority=2, max_attempts=3)
    exhausted = enqueue(conn, priority=2, max_attempts=1)
    held = enqueue(conn, priority=1)
    waiting = enqueue(conn, priority=0, not_before=datetime.now(UTC) + timedelta(hours=1))
    elsewhere = enqueue(conn, queue="other_queue")

    crashed = Outbox(pool, queue=QUEUE, owner="crashed")
    assert {m.id for m in await crashed.claim(2, 0.2)} == {retried, exhausted}
    assert [m.id for m in await Outbox(pool, queue=QUEUE, owner="alive").claim(1, 60.0)] == [held]
    assert [m.id for m in await Outbox(pool, queue="other_queue", owner="x").claim(1, 0.2)] == [
        elsewhere
    ]

    reaper = Outbox(pool, queue=QUEUE, owner="reaper")
    await anyio.sleep(0.3)
    assert await reaper.reap_expired() == 2
    assert await reaper.reap_expired() == 0

    status, attempts, locked_by, locked_until, error, due_in = row(
        conn,
        retried,
        "status, attempts, locked_by, locked_until, last_error,"
        " extract(epoch FROM next_attempt_at - now())",
    )
    assert (status, attempts, locked_by, locked_until) == ("retrying", 1, None, None)
    assert "lease expired" in error
    assert "crashed" in error
    assert due_in <= 0.0
    # the try was crashed's: its row names the holder, not the reaper (issue 19, finding 7)
    assert attempt_rows(conn, retried) == [(1, "lease_expired", None, error, "crashed")]

    assert row(conn, exhausted, "status, attempts, locked_by") == ("dead", 1, None)
    assert [r[:2] for r in attempt_rows(conn, exhausted)] == [(1, "lease_expired")]

    assert row(conn, held, "status, locked_by") == ("sending", "alive")
    assert attempt_rows(conn, held) == []
    assert row(conn, waiting, "status, attempts") == ("pending", 0)
    assert row(conn, elsewhere, "status, locked_by") == ("sending", "x")  # another queue's

    # the reaped message is claimable again, and the crashed try still counts
    [again] = await reaper.claim(10, 60.0)
    assert (again.id, again.attempts) == (retried, 2)


# -- next_wakeup ------------------------------------------------------------------------


async def test_next_wakeup(pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]) -> None:
    outbox = Outbox(pool, queue=QUEUE, owner="w1")
    assert await outbox.next_wakeup() is None

    enqueue(conn, not_before=datetime.now(UTC) + timedelta(seconds=30))
    enqueue(conn, queue="other_queue", not_before=datetime.now(UTC) + timedelta(seconds=1))
    wakeup = await outbox.next_wakeup()
    assert wakeup is not None
    assert 29.0 < wakeup <= 30.0

    due_now = enqueue(conn)
    wakeup = await outbox.next_wakeup()
    assert wakeup is not None
    assert wakeup <= 0.0

    # a leased message wakes the daemon when its lease runs out
    assert [m.id for m in await outbox.claim(10, 10.0)] == [due_now]
    wakeup = await outbox.next_wakeup()
    assert wakeup is not None
    assert 9.0 < wakeup <= 10.0

    # finished messages never wake anyone
    assert await outbox.record([(due_now, sent("ses-1"))]) == {due_now}
    wakeup = await outbox.next_wakeup()
    assert wakeup is not None
    assert 29.0 < wakeup <= 30.0

    assert await Outbox(pool, queue="empty_queue", owner="w1").next_wakeup() is None
