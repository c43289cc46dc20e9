"""One try is one attempt row, whatever the reaper does (issue 19, finding 7).

The race, made deterministic: the holder's lease expires while it is still sending; the
reaper's transaction reaps the message (a ``lease_expired`` row) and stays open; the
holder records "sent" meanwhile, which waits on the reaper's row lock; the reaper
commits. The holder's statement started before that commit, so its snapshot cannot see
the ``lease_expired`` row: only a unique index makes it find (and replace) that row.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

import mailroom
from mailroom import migrate
from mailroom.daemon.retry import Policy, dispose
from mailroom.outbox import Outbox, query
from mailroom.transports.classify import Verdict

pytestmark = pytest.mark.anyio

QUEUE = "user_action_queue"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture  # conftest's, with one connection: the holder's statements run in turn
async def pool(db: str, anyio_backend: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db, kwargs={"autocommit": True}, open=False, min_size=1, max_size=1
    )
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


async def wait_until_blocked(watcher: psycopg.AsyncConnection[Any], pid: int) -> None:
    """Until backend ``pid`` waits on a lock (bounded: the test fails, never hangs)."""
    with anyio.fail_after(10):
        while True:
            cur = await watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            )
            found = await cur.fetchone()
            if found is not None and found[0] == "Lock":
                return
            await anyio.sleep(0.02)


# max_attempts 1: the reaper makes the message dead, and the late success still wins
@pytest.mark.parametrize("max_attempts", [10, 1])
async def test_a_success_racing_the_reaper_is_one_row_naming_the_holder(
    db: str, pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any], max_attempts: int
) -> None:
    message_id = mailroom.enqueue(
        conn, "ann@example.com", subject="Hello", text="Hi", max_attempts=max_attempts
    )
    holder = Outbox(pool, queue=QUEUE, owner="holder")
    [claimed] = await holder.claim(1, 0.2)
    assert (claimed.id, claimed.attempts) == (message_id, 1)
    await anyio.sleep(0.3)  # the lease is over; the holder is still "sending"

    async with (
        await psycopg.AsyncConnection.connect(db) as reaper,
        await psycopg.AsyncConnection.connect(db, autocommit=True) as watcher,
    ):
        cur = await reaper.execute(query("reap_expired"), {"queue": QUEUE})
        assert await cur.fetchone() == (1,)
        # the record runs on the holder's pool connection; learn its backend pid from it
        async with pool.connection() as probe:
            holder_pid = probe.info.backend_pid
        written: set[int] = set()

        async def record() -> None:
            written.update(await holder.record([(message_id, sent("ses-late"))]))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(record)
            await wait_until_blocked(watcher, holder_pid)
            await reaper.commit()

    assert written == {message_id}
    status = conn.execute(
        "SELECT status, provider_message_id FROM mailroom.outbox WHERE id = %s", [message_id]
    ).fetchone()
    assert status == ("sent", "ses-late")
    rows = conn.execute(
        "SELECT attempt, outcome, provider_message_id, worker FROM mailroom.attempts"
        " WHERE message_id = %s ORDER BY id",
        [message_id],
    ).fetchall()
    assert rows == [(1, "sent", "ses-late", "holder")]


async def test_the_reaper_names_the_holder_whose_lease_it_ended(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    message_id = mailroom.enqueue(conn, "ann@example.com", subject="Hello", text="Hi")
    await Outbox(pool, queue=QUEUE, owner="holder").claim(1, 0.2)
    await anyio.sleep(0.3)
    assert await Outbox(pool, queue=QUEUE, owner="reaper").reap_expired() == 1
    rows = conn.execute(
        "SELECT attempt, outcome, error, worker FROM mailroom.attempts WHERE message_id = %s",
        [message_id],
    ).fetchall()
    assert rows == [
        (1, "lease_expired", "lease expired: holder did not record an outcome", "holder")
    ]


async def test_a_paused_try_and_a_reset_count_keep_every_row(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any]
) -> None:
    """Attempt numbers repeat legitimately (a refunded paused try, `dead retry`'s reset):
    the try's key is its lease, so none of these rows is taken for another."""
    message_id = mailroom.enqueue(conn, "ann@example.com", subject="Hello", text="Hi")
    worker = Outbox(pool, queue=QUEUE, owner="w1")
    await worker.claim(1, 60.0)
    paused = dispose(Verdict.PAUSE, 1, 10, Policy(pause=0.0), error="Paused")
    assert await worker.record([(message_id, paused)]) == {message_id}
    await worker.claim(1, 60.0)
    dead = dispose(Verdict.DEAD, 1, 10, Policy(), error="MessageRejected")
    assert await worker.record([(message_id, dead)]) == {message_id}
    # what `mailroom dead retry` does: the count starts again
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'pending', attempts = 0, next_attempt_at = now()"
        " WHERE id = %s",
        [message_id],
    )
    await worker.claim(1, 60.0)
    assert await worker.record([(message_id, sent("ses-1"))]) == {message_id}
    rows = conn.execute(
        "SELECT attempt, outcome FROM mailroom.attempts WHERE message_id = %s ORDER BY id",
        [message_id],
    ).fetchall()
    assert rows == [(1, "paused"), (1, "dead"), (1, "sent")]


@pytest.fixture
def unmigrated(pg_admin_dsn: str) -> Iterator[str]:
    name = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(pg_admin_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            admin.execute(drop.format(sql.Identifier(name)))


def test_the_upgrade_merges_the_duplicates_the_race_left(
    unmigrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = migrate.available
    monkeypatch.setattr(
        migrate, "available", lambda modules=(): [m for m in every(modules) if m.version < 23]
    )
    with psycopg.connect(unmigrated, autocommit=True) as c:
        migrate.migrate(c, channel="token_insert")
        raced, other = (
            mailroom.enqueue(c, f"{n}@example.com", subject="Hello", text="Hi")
            for n in ("raced", "other")
        )
        insert = (
            "INSERT INTO mailroom.attempts (message_id, attempt, outcome, error, worker)"
            " VALUES (%s, %s, %s, %s, %s)"
        )
        expired = "lease expired: {} did not record an outcome"
        # what the race left: the reaper's row and the holder's row of one try
        c.execute(insert, [raced, 1, "lease_expired", expired.format("h1"), "reaper"])
        c.execute(insert, [raced, 1, "sent", None, "h1"])
        # not one try: the sent row is another holder's (a count reset by dead retry)
        c.execute(insert, [other, 1, "lease_expired", expired.format("h2"), "reaper"])
        c.execute(insert, [other, 1, "sent", None, "h3"])

        monkeypatch.setattr(migrate, "available", every)
        assert 23 in [m.version for m in migrate.migrate(c, channel="token_insert")]
        rows = c.execute(
            "SELECT message_id, attempt, outcome, worker FROM mailroom.attempts ORDER BY id"
        ).fetchall()
        assert rows == [
            (raced, 1, "sent", "h1"),
            (other, 1, "lease_expired", "reaper"),
            (other, 1, "sent", "h3"),
        ]


def sent(provider_id: str) -> Any:
    return dispose(Verdict.SENT, 1, 10, Policy(), provider_id=provider_id)
