"""The events reader against a real PostgreSQL: an outage is told from refused content by
the database's own errors, a batch holding content the database refuses stores its good
messages once, and a crashing reader is restarted instead of taking the daemon down."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import mailroom
from mailroom import metrics
from mailroom.config.settings import load
from mailroom.events import reader as events_reader
from mailroom.events.parsing import Event
from mailroom.events.reader import EventsReader
from mailroom.events.storing import is_outage
from mailroom.outbox import Outbox

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def error_of(conn: psycopg.Connection[Any], statement: str) -> Exception:
    with pytest.raises(Exception) as caught:  # noqa: PT011 -- sorted by the test's caller
        conn.execute(statement)
    assert isinstance(caught.value, Exception)
    return caught.value


def bounce(recipient: str, message_id: str) -> Event:
    now = datetime.now(UTC)
    key = secrets.token_hex(32)
    return Event(key, message_id, recipient, "Bounce", "Permanent/General", None, now)


def test_the_databases_own_errors_sort_into_outage_and_content(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        content = [
            error_of(conn, "SELECT 1 / 0"),  # 22012
            error_of(conn, "SELECT 'x'::int"),  # 22P02
            # 54000: an index entry over the btree page limit, as a hostile recipient made
            error_of(conn, "CREATE TEMP TABLE t (a text PRIMARY KEY); INSERT INTO t "
                     "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i"),
        ]  # fmt: skip
        assert [getattr(e, "sqlstate", None) for e in content] == ["22012", "22P02", "54000"]
        # the schema or the grants, not the event: a revoked grant must not delete events
        conn.execute("DROP ROLE IF EXISTS mailroom_events_nobody")
        conn.execute("CREATE ROLE mailroom_events_nobody")
        schema = [
            error_of(conn, "SELECT no_such_column"),  # 42703
            # one implicit transaction: the SET ROLE goes with the failed statement
            error_of(conn, "SET ROLE mailroom_events_nobody;"
                     " SELECT count(*) FROM mailroom.events"),  # 42501
        ]  # fmt: skip
        conn.execute("DROP ROLE mailroom_events_nobody")
        assert [getattr(e, "sqlstate", None) for e in schema] == ["42703", "42501"]
        assert all(is_outage(e) for e in schema)
        conn.execute("SET statement_timeout = '10ms'")
        timeout = error_of(conn, "SELECT pg_sleep(1)")  # 57014
        conn.execute("RESET statement_timeout")
        assert not any(is_outage(e) for e in content)
        assert is_outage(timeout)
    with psycopg.connect(db, autocommit=True) as victim, psycopg.connect(db) as killer:
        pid = victim.info.backend_pid
        killer.execute("SELECT pg_terminate_backend(%s)", [pid])
        terminated = error_of(victim, "SELECT 1")  # 57P01, or the client's lost connection
        assert is_outage(terminated)
        assert is_outage(error_of(victim, "SELECT 1"))  # the connection is closed now
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2")
    assert is_outage(refused.value)
    assert is_outage(TimeoutError())
    assert not is_outage(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert not is_outage(psycopg.DataError("PostgreSQL text fields cannot contain NUL"))


async def test_a_batch_the_database_refuses_stores_its_good_messages_once(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any], db: str,
) -> None:  # fmt: skip
    """A recipient too long for the btree index (what the parser now drops) reaching the
    database in the middle of a batch: before, the 54000 error counted as an outage, the
    batch was kept and came back for ever; now the two good messages are stored once and
    the bad one is malformed{reason=refused}."""
    reader = EventsReader(load({"MAILROOM_DATABASE_URL": db}), Outbox(pool, queue="q", owner="w"))
    hostile = f"{secrets.token_hex(1500)}@example.com"  # random: not compressible
    good = [
        ({"MessageId": "sqs-1"}, [bounce("a@example.com", "ses-a")]),
        ({"MessageId": "sqs-2"}, [bounce(hostile, "ses-bad")]),
        ({"MessageId": "sqs-3"}, [bounce("c@example.com", "ses-c")]),
    ]
    refused = metrics.EVENTS_MALFORMED.labels("refused")
    before = refused._value.get()
    done, outage = await reader._store(good)
    assert outage is None
    assert [m["MessageId"] for m in done] == ["sqs-1", "sqs-2", "sqs-3"]  # all deletable
    assert refused._value.get() == before + 1
    rows = conn.execute("SELECT provider_message_id FROM mailroom.events ORDER BY 1").fetchall()
    assert rows == [("ses-a",), ("ses-c",)]


async def test_a_crashing_reader_is_restarted_and_counted(anyio_backend: str) -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("a bug in the reader")
        await anyio.sleep_forever()

    restarts = metrics.EVENTS_READER_RESTARTS._value.get()
    with anyio.move_on_after(2):
        await events_reader.supervise(flaky, cap=0.05)
    assert runs == 3
    assert metrics.EVENTS_READER_RESTARTS._value.get() == restarts + 2


async def test_dropped_events_are_counted_by_reason_and_not_as_duplicates(
    pool: AsyncConnectionPool[Any], conn: psycopg.Connection[Any], db: str,
) -> None:  # fmt: skip
    message_id = mailroom.enqueue(conn, "ann@example.com", subject="S", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sent', provider_message_id = 'ses-ours'"
        " WHERE id = %s",
        [message_id],
    )
    reader = EventsReader(load({"MAILROOM_DATABASE_URL": db}), Outbox(pool, queue="q", owner="w"))
    stranger = metrics.EVENTS_DROPPED.labels("not_a_recipient")
    before, duplicates = stranger._value.get(), metrics.EVENTS_DUPLICATE._value.get()
    batch = [bounce("ann@example.com", "ses-ours"), bounce("eve@example.org", "ses-ours")]
    done, outage = await reader._store([({"MessageId": "sqs-1"}, batch)])
    assert (len(done), outage) == (1, None)
    assert stranger._value.get() == before + 1
    assert metrics.EVENTS_DUPLICATE._value.get() == duplicates
    rows = conn.execute("SELECT recipient FROM mailroom.events").fetchall()
    assert rows == [("ann@example.com",)]
