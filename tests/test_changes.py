"""The changes feed (migration 0030, mailroom.feed): what the triggers record, that an
application reads, hears and moves only its own, the iterators over every driver, and the
retention floor. Real PostgreSQL; the daemon's writes are the statements it runs (the
end-to-end run through the daemon and SQS is tests/test_changes_django.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg2
import pytest
import sqlalchemy
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.orm import Session

import mailroom
from conftest import wait_for
from mailroom import feed
from mailroom.config import settings
from mailroom.outbox import query
from test_client import sqlalchemy_url

EVENT = (
    "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
    " subtype, detail, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, pg_catalog.now())"
)


def sent(owner: psycopg.Connection[Any], mid: int, provider_id: str) -> None:
    """The daemon's claim and its record of a success, as two statements."""
    owner.execute(
        "UPDATE mailroom.outbox SET status = 'sending', locked_by = 'w',"
        " locked_until = pg_catalog.now() + interval '1 minute' WHERE id = %s",
        [mid],
    )
    owner.execute(
        "UPDATE mailroom.outbox SET status = 'sent', provider_message_id = %s,"
        " sent_at = pg_catalog.now(),"
        " locked_by = NULL, locked_until = NULL WHERE id = %s",
        [provider_id, mid],
    )


def seen(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return [
        (c.message_id, c.state, c.reason, c.bounce_type, c.bounce_subtype, c.recipient)
        for c in mailroom.changes(conn, follow=False)
    ]


@pytest.fixture
def apps(login_as: Callable[..., str]) -> Iterator[tuple[psycopg.Connection[Any], ...]]:
    """Two applications, A and B, each its own login role in mailroom_app."""
    with (
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as a,
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as b,
    ):
        yield a, b


def test_each_final_state_and_event_is_recorded_for_the_enqueuer_only(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...]
) -> None:
    a, b = apps
    m1 = mailroom.enqueue(a, ["ann@example.com", "Bob <bob@example.com>"], subject="s", text="t")
    m2, m3 = (mailroom.enqueue(a, "c@example.com", subject="s", text="t") for _ in range(2))
    m4 = mailroom.enqueue(b, "dee@example.com", subject="s", text="t")
    assert seen(a) == []  # enqueued is not a change
    sent(conn, m1, "p1")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'dead', last_error = 'MessageRejected: no'"
        " WHERE id = %s",
        [m2],
    )
    assert mailroom.cancel(a, m3)
    sent(conn, m4, "p4")
    for key, provider, recipient, kind, subtype, detail in (
        ("e1", "p1", "ann@example.com", "Delivery", "", "250 ok"),
        ("e2", "p1", "bob@example.com", "Bounce", "Permanent/General", "smtp; 550 5.1.1 unknown"),
        ("e3", "p1", "ann@example.com", "Complaint", "abuse", None),
        ("e4", "p1", "ann@example.com", "Send", "", None),  # not a change
        ("e5", "p1", "ann@example.com", "Open", "", None),  # nor this
        ("e6", "p4", "dee@example.com", "Delivery", "", "250 ok"),
        ("e7", "p-unknown", "x@example.com", "Bounce", "Permanent/General", None),  # no owner
    ):
        conn.execute(EVENT, [key, provider, recipient, kind, subtype, detail])
    # a status that does not change (an outcome recorded again) is not a change
    conn.execute("UPDATE mailroom.outbox SET updated_at = now()")
    assert seen(a) == [
        (m1, "sent", None, None, None, None),
        (m2, "dead", "MessageRejected: no", None, None, None),
        (m3, "cancelled", "cancelled by the application", None, None, None),
        (m1, "delivered", "250 ok", None, None, "ann@example.com"),
        (m1, "bounced", "smtp; 550 5.1.1 unknown", "Permanent", "General", "bob@example.com"),
        (m1, "complained", "abuse", None, None, "ann@example.com"),
    ]
    assert seen(b) == [(m4, "sent", None, None, None, None),
                       (m4, "delivered", "250 ok", None, None, "dee@example.com")]  # fmt: skip
    # the owner (the role that ran the updates and inserted the events) enqueued nothing
    assert seen(conn) == []
    # resuming after a cursor gives what follows it, and nothing else
    ids = [c.id for c in mailroom.changes(a, follow=False)]
    assert ids == sorted(ids)
    assert [c.id for c in mailroom.changes(a, ids[2], follow=False, batch=2)] == ids[3:]


def bounced(conn: psycopg.Connection[Any], mid: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM mailroom.changes WHERE message_id = %s AND state = 'bounced'", [mid]
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("first", ["event", "record"])
def test_an_event_and_its_record_racing_give_one_change_whichever_commits_first(
    first: str, conn: psycopg.Connection[Any], db: str,
    apps: tuple[psycopg.Connection[Any], ...],
) -> None:  # fmt: skip
    """SES may publish an event before the daemon's record of the send commits: the event
    cannot find its message yet. Each side, held open in its transaction while the other
    runs, must not miss (nor double) the bounce."""
    a, _ = apps
    mid = mailroom.enqueue(a, "bob@example.com", subject="s", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sending', locked_by = 'w',"
        " locked_until = pg_catalog.now() + interval '1 minute' WHERE id = %s",
        [mid],
    )
    record = (
        "UPDATE mailroom.outbox SET status = 'sent', provider_message_id = 'p-race',"
        " sent_at = now(), locked_by = NULL, locked_until = NULL WHERE id = %s"
    )
    event = [f"k-{first}", "p-race", "bob@example.com", "Bounce", "Permanent/General", "550"]
    with psycopg.connect(db) as held, psycopg.connect(db, autocommit=True) as other:
        if first == "event":
            held.execute(EVENT, event)
            second = threading.Thread(target=lambda: other.execute(record, [mid]))
        else:
            held.execute(record, [mid])
            second = threading.Thread(target=lambda: other.execute(EVENT, event))
        second.start()
        second.join(1.0)
        assert second.is_alive()  # it waits for the first to commit
        held.commit()
        second.join(10)
        assert not second.is_alive()
    assert bounced(conn, mid) == 1
    assert [c.state for c in mailroom.changes(a, follow=False)] == ["sent", "bounced"]


def test_a_change_committed_after_a_later_one_was_read_is_not_skipped(
    login_as: Callable[..., str],
) -> None:
    """Row ids are taken at insert, not at commit: the cursor is not the id (0030)."""
    dsn = login_as("mailroom_app")
    with (
        psycopg.connect(dsn) as slow,
        psycopg.connect(dsn, autocommit=True) as fast,
        psycopg.connect(dsn, autocommit=True) as reader,
    ):
        first, second = (mailroom.enqueue(fast, "a@example.com", subject="s", text="t")
                         for _ in range(2))  # fmt: skip
        assert mailroom.cancel(slow, first)  # its change row is written first, not committed
        assert mailroom.cancel(fast, second)
        got = list(mailroom.changes(reader, follow=False))
        assert [c.message_id for c in got] == [second]
        slow.commit()
        later = list(mailroom.changes(reader, got[-1].id, follow=False))
        assert [c.message_id for c in later] == [first]
        assert later[0].id > got[-1].id


def test_a_reader_left_in_a_transaction_holds_no_other_reader_up(
    login_as: Callable[..., str],
) -> None:
    dsn = login_as("mailroom_app")
    with (
        psycopg.connect(dsn, autocommit=True) as writer,
        psycopg.connect(dsn) as idle,  # reads, then never commits: holds the numbering
        psycopg.connect(dsn, autocommit=True, options="-c lock_timeout=2s") as reader,
    ):
        first, second = (mailroom.enqueue(writer, "a@example.com", subject="s", text="t")
                         for _ in range(2))  # fmt: skip
        assert mailroom.cancel(writer, first)
        assert [c.message_id for c in mailroom.changes(idle, follow=False)] == [first]
        assert mailroom.cancel(writer, second)
        # not waited for (lock_timeout would raise): what is numbered and committed, none
        assert list(mailroom.changes(reader, follow=False)) == []
        idle.commit()
        got = list(mailroom.changes(reader, follow=False))
        assert [(c.id, c.message_id) for c in got] == [(1, first), (2, second)]


def test_a_long_absence_is_numbered_in_bounded_steps_and_nothing_is_lost(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    dsn = login_as("mailroom_app")
    role = conninfo_to_dict(dsn)["user"]
    conn.execute(  # 10,005 changes recorded while the application was away
        "INSERT INTO mailroom.changes (application, message_id, state)"
        " SELECT %s, i, 'sent' FROM generate_series(1, 10005) AS i",
        [role],
    )
    with psycopg.connect(dsn, autocommit=True) as app:
        first = app.execute("SELECT id, message_id FROM mailroom.changes_since(0, 10000)")
        rows = first.fetchall()
        assert rows == [(i, i) for i in range(1, 10001)]  # one read numbers at most 10,000
        numbered = conn.execute("SELECT count(seq) FROM mailroom.changes").fetchone()
        assert numbered == (10000,)
        rest = [c.message_id for c in mailroom.changes(app, 10000, follow=False)]
        assert rest == list(range(10001, 10006))


def test_another_application_cannot_read_write_or_move_what_is_not_its_own(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...],
    login_as: Callable[..., str],
) -> None:  # fmt: skip
    a, b = apps
    mids = [mailroom.enqueue(a, "ann@example.com", subject="s", text="t") for _ in range(3)]
    for mid in mids:
        assert mailroom.cancel(a, mid)
    own = mailroom.enqueue(b, "bob@example.com", subject="s", text="t")
    assert mailroom.cancel(b, own)
    a_ids = [c.id for c in mailroom.changes(a, follow=False)]
    (b_id,) = [c.id for c in mailroom.changes(b, follow=False)]
    assert a_ids == [1, 2, 3]  # each application's own numbering
    assert b_id == 1
    assert feed.ack(a, "django", a_ids[0]) == a_ids[0]
    # B sees only its own, whatever the cursor and the size asked for
    rows = b.execute("SELECT message_id FROM mailroom.changes_since(-1, 10000)").fetchall()
    assert rows == [(own,)]
    for statement in (
        "SELECT * FROM mailroom.changes",
        "SELECT * FROM mailroom.change_cursors",
        # (refused for any name: A's would be refused the same way)
        "INSERT INTO mailroom.changes (application, message_id, state) VALUES ('a', 1, 'sent')",
        "UPDATE mailroom.changes SET application = session_user",
        "DELETE FROM mailroom.changes",
        "TRUNCATE mailroom.changes",
        "UPDATE mailroom.change_cursors SET acked = 0",
        "INSERT INTO mailroom.change_cursors (application, consumer, acked)"
        " VALUES ('a', 'django', 0)",
        "DELETE FROM mailroom.change_cursors",
        "SELECT mailroom.prune_changes(604800, 10)",
    ):
        with pytest.raises(errors.InsufficientPrivilege):
            b.execute(statement)  # type: ignore[arg-type]  # static text
    # B's cursor of the same name is B's: A's does not move
    assert feed.stored_cursor(b, "django") == 0
    assert feed.ack(b, "django", b_id) == b_id
    with pytest.raises(errors.InvalidParameterValue):  # past B's own last change
        feed.ack(b, "django", b_id + 1)
    assert feed.stored_cursor(a, "django") == a_ids[0]
    # forward only, and never past one's own last change
    assert feed.ack(a, "django", 0) == a_ids[0]
    with pytest.raises(errors.InvalidParameterValue):
        feed.ack(a, "django", a_ids[2] + 1)
    assert feed.ack(a, "django", a_ids[2]) == a_ids[2]
    with pytest.raises(errors.InvalidParameterValue):
        a.execute("SELECT * FROM mailroom.changes_since(0, 10001)")
    # a role outside mailroom_app gets nothing, the daemon only its pruning
    with psycopg.connect(login_as(None), autocommit=True) as stranger:
        for statement in (
            "SELECT * FROM mailroom.changes_since(0, 10)",
            "SELECT mailroom.changes_ack('x', 0)",
            "SELECT mailroom.changes_listen()",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                stranger.execute(statement)  # type: ignore[arg-type]  # static text
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        with pytest.raises(errors.InsufficientPrivilege):
            daemon.execute("SELECT * FROM mailroom.changes")
        with pytest.raises(errors.InvalidParameterValue):  # the floor holds for its role
            daemon.execute("SELECT mailroom.prune_changes(86400, 10)")
    # the operator reads every application's (what each was told)
    with psycopg.connect(login_as("mailroom_operator"), autocommit=True) as operator:
        row = operator.execute("SELECT count(*) FROM mailroom.changes").fetchone()
        assert row == (4,)


def test_a_notification_wakes_and_carries_nothing(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...]
) -> None:
    a, b = apps
    channel = a.execute("SELECT mailroom.changes_listen()").fetchone()
    assert channel is not None
    b_channel = b.execute("SELECT mailroom.changes_listen()").fetchone()
    assert b_channel is not None
    assert channel != b_channel
    # LISTEN needs no privilege: B can listen on A's channel, and learns only "something"
    b.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel[0])))
    mid = mailroom.enqueue(a, "ann@example.com", subject="secret subject", text="t")
    assert mailroom.cancel(a, mid)
    heard_a = list(a.notifies(timeout=5, stop_after=1))
    heard_b = list(b.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in heard_a] == [(channel[0], "")]
    assert [(n.channel, n.payload) for n in heard_b] == [(channel[0], "")]
    assert list(b.notifies(timeout=0.3)) == []  # nothing on B's own channel


def test_the_daemons_claim_writes_and_wakes_nothing_and_its_record_both(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...]
) -> None:
    """The daemon's own statements (queries.sql): its claim returns before the trigger's
    writers run (0034), so it must still be its record that writes the send and an event
    SES published before the record committed, and wakes the application once."""
    a, _ = apps
    channel = a.execute("SELECT mailroom.changes_listen()").fetchone()
    assert channel is not None
    a.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel[0])))
    mid = mailroom.enqueue(a, "ann@example.com", subject="s", text="t")
    conn.execute(EVENT, ["k-early", "p-early", "ann@example.com", "Delivery", "", "250 ok"])
    claim = {"queue": "user_action_queue", "limit": 10, "owner": "w", "lease_seconds": 60.0}
    rows = conn.cursor(binary=True).execute(query("claim"), claim).fetchall()
    assert [r[0] for r in rows] == [mid]
    assert list(a.notifies(timeout=0.3)) == []
    assert seen(a) == []
    outcome = {"owner": "w", "ids": [mid], "provider_ids": ["p-early"], "statuses": None,
               "refunds": None, "delays": None, "errors": None, "attempt_outcomes": None,
               "tries": [rows[0][1]], "leases": [rows[0][-1]]}  # fmt: skip
    conn.execute(query("record"), outcome)
    heard = list(a.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in heard] == [(channel[0], "")]
    assert seen(a) == [(mid, "sent", None, None, None, None),
                       (mid, "delivered", "250 ok", None, None, "ann@example.com")]  # fmt: skip
    assert list(a.notifies(timeout=0.3)) == []  # one wake-up, not one per writer


class Follower:
    """mailroom.changes(...) in a thread, following, as an application runs it."""

    def __init__(self, conn: Any, poll: float) -> None:
        self.got: list[feed.Change] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=lambda: self.got.extend(
                c for c in mailroom.changes(conn, poll=poll, stop=self.stop.is_set)
            )
        )
        self.thread.start()


def _connect(kind: str, dsn: str) -> Any:
    if kind == "psycopg":
        return psycopg.connect(dsn, autocommit=True)
    if kind == "psycopg-in-transaction":
        return psycopg.connect(dsn)
    if kind == "psycopg2":
        raw = psycopg2.connect(dsn)
        raw.autocommit = True
        return raw
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(dsn, "psycopg2"), poolclass=sqlalchemy.NullPool
    )
    if kind == "sqlalchemy-session":
        return Session(engine)
    options = {"isolation_level": "AUTOCOMMIT"} if kind == "sqlalchemy" else {}
    return engine.connect().execution_options(**options)


# LISTEN where the driver can hear it (poll 30 s: a change that arrives at once was heard);
# a connection in a transaction cannot hear, and polls (0.3 s)
@pytest.mark.parametrize(
    ("kind", "poll"),
    [("psycopg", 30.0), ("psycopg2", 30.0), ("sqlalchemy", 30.0),
     ("sqlalchemy-in-transaction", 0.3), ("sqlalchemy-session", 0.3),
     ("psycopg-in-transaction", 0.3)],
)  # fmt: skip
def test_the_iterator_catches_up_then_hears_what_follows(
    kind: str, poll: float, login_as: Callable[..., str]
) -> None:
    dsn = login_as("mailroom_app")
    with psycopg.connect(dsn, autocommit=True) as writer:
        first = mailroom.enqueue(writer, "ann@example.com", subject="s", text="t")
        assert mailroom.cancel(writer, first)
        conn = _connect(kind, dsn)
        follower = Follower(conn, poll)
        try:
            wait_for(lambda: len(follower.got) == 1, timeout=10)
            time.sleep(0.3)  # past the catch-up, waiting
            second = mailroom.enqueue(writer, "bob@example.com", subject="s", text="t")
            start = time.monotonic()
            assert mailroom.cancel(writer, second)
            wait_for(lambda: len(follower.got) == 2, timeout=5)
            assert time.monotonic() - start < 3
        finally:
            follower.stop.set()
            follower.thread.join(5)
            alive = follower.thread.is_alive()
            conn.close()
        assert not alive  # stop() is asked while waiting
    assert [(c.message_id, c.state) for c in follower.got] == [(first, "cancelled"),
                                                               (second, "cancelled")]  # fmt: skip


def test_the_async_iterator_catches_up_then_hears_what_follows(
    login_as: Callable[..., str],
) -> None:
    dsn = login_as("mailroom_app")

    async def run() -> list[tuple[int, str]]:
        got: list[tuple[int, str]] = []
        connect = psycopg.AsyncConnection.connect
        async with (
            await connect(dsn, autocommit=True) as aconn,
            await connect(dsn, autocommit=True) as writer,
        ):
            mid = await mailroom.enqueue_async(writer, "ann@example.com", subject="s", text="t")
            await mailroom.cancel_async(writer, mid)

            async def later() -> None:
                await asyncio.sleep(0.5)
                mid = await mailroom.enqueue_async(writer, "b@example.com", subject="s", text="t")
                await mailroom.cancel_async(writer, mid)

            task = asyncio.create_task(later())
            start = time.monotonic()
            async for change in mailroom.changes_async(aconn, poll=30.0):
                got.append((change.message_id, change.state))
                if len(got) == 2:
                    break
            assert time.monotonic() - start < 5  # heard, not polled
            await task
            caught_up = [c async for c in mailroom.changes_async(aconn, follow=False)]
            assert len(caught_up) == 2
        return got

    got = asyncio.run(run())
    assert [state for _, state in got] == ["cancelled", "cancelled"]


def test_rows_become_changes_by_column_name_and_the_next_step_is_decided() -> None:
    at = datetime.now(UTC)
    columns = ["id", "message_id", "state", "reason", "bounce_type", "bounce_subtype",
               "recipient", "at", "added_later"]  # fmt: skip
    (change,) = feed.to_changes((columns, [(7, 42, "bounced", "550", "Permanent", "General",
                                            "a@example.com", at, "ignored")]))  # fmt: skip
    assert change == feed.Change(7, 42, "bounced", "550", "Permanent", "General",
                                 "a@example.com", at)  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.state = "sent"  # type: ignore[misc]  # what the test is about
    assert feed.next_step(100, 100, follow=True, listening=True) == "read"  # a full batch
    assert feed.next_step(3, 100, follow=False, listening=None) == "stop"
    assert feed.next_step(3, 100, follow=True, listening=None) == "listen"
    assert feed.next_step(0, 100, follow=True, listening=False) == "wait"


def test_bad_arguments_are_refused_before_any_query(conn: psycopg.Connection[Any]) -> None:
    for kwargs in ({"cursor": -1}, {"batch": 0}, {"batch": 10001}, {"poll": 0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            next(mailroom.changes(object(), **kwargs))
    with pytest.raises(TypeError, match="cannot use"):
        next(mailroom.changes(object()))

    async def wrong_kind() -> None:
        async with await psycopg.AsyncConnection.connect(str(conn.info.dsn)) as aconn:
            with pytest.raises(TypeError, match="changes_async"):
                next(mailroom.changes(aconn))
            with pytest.raises(TypeError, match="not a psycopg AsyncConnection"):
                await anext(mailroom.changes_async(conn))

    asyncio.run(wrong_kind())


def test_retention_prunes_old_changes_and_never_younger_than_a_week(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...]
) -> None:
    from mailroom.daemon import retention  # noqa: PLC0415 -- the daemon's side

    a, _ = apps
    for _ in range(5):
        assert mailroom.cancel(a, mailroom.enqueue(a, "ann@example.com", subject="s", text="t"))
    ids = [c.id for c in mailroom.changes(a, follow=False)]
    # three of them recorded 8 days ago; 6 days for the fourth
    conn.execute("UPDATE mailroom.changes SET at = now() - interval '8 days' WHERE seq <= %s",
                 [ids[2]])  # fmt: skip
    conn.execute("UPDATE mailroom.changes SET at = now() - interval '6 days' WHERE seq = %s",
                 [ids[3]])  # fmt: skip
    with pytest.raises(errors.InvalidParameterValue, match="seven"):
        conn.execute("SELECT mailroom.prune_changes(518400, 10)")  # six days: refused
    # the daemon's start-up check names it when its role cannot prune the feed
    missing = a.execute(query("daemon_privileges")).fetchall()
    assert ("EXECUTE on mailroom.prune_changes()",) in missing
    config = dataclasses.replace(load(), retention_sent=0.0, retention_dead=0.0,
                                 retention_events=0.0, retention_changes=7 * 86400.0,
                                 retention_batch=2)  # fmt: skip

    async def prune() -> list[dict[str, int]]:
        async with await psycopg.AsyncConnection.connect(str(conn.info.dsn),
                                                         autocommit=True) as aconn:  # fmt: skip
            return [await retention.prune_once(aconn, config) for _ in range(3)]

    passes = asyncio.run(prune())
    assert [p["changes"] for p in passes] == [2, 1, 0]
    assert [c.id for c in mailroom.changes(a, follow=False)] == ids[3:]
    assert load().retention_changes == 30 * 86400
    assert load(MAILROOM_RETENTION_CHANGES="0").retention_changes == 0
    with pytest.raises(settings.ConfigError, match="MAILROOM_RETENTION_CHANGES: must be 0"):
        load(MAILROOM_RETENTION_CHANGES="6d")


def load(**env: str) -> settings.Config:
    return settings.load({"MAILROOM_DATABASE_URL": "postgresql:///x", **env})


# What the feed's SQL names, planted in public by a login that can only create there: an
# exact-type operator or function in a schema searched first would win over pg_catalog's,
# and a table named like mailroom's could stand in for it on an unqualified reference.
PLANTS = """
CREATE TABLE public.sightings (who text, via text);
GRANT INSERT ON public.sightings TO PUBLIC;
CREATE TABLE public.changes (id bigint, application text, message_id bigint, state text);
CREATE TABLE public.events (id bigint, provider_message_id text, event_type text);
CREATE TABLE public.outbox (id bigint, provider_message_id text, enqueued_by text);
CREATE FUNCTION public.seen(via text) RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
BEGIN INSERT INTO public.sightings VALUES (current_user, via); RETURN true; END $$;
CREATE FUNCTION public.eq(a text, b text) RETURNS boolean LANGUAGE sql
AS $$ SELECT public.seen('text = text') AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.eq);
CREATE FUNCTION public.ne(a text, b text) RETURNS boolean LANGUAGE sql
AS $$ SELECT public.seen('text <> text') AND a OPERATOR(pg_catalog.<>) b $$;
CREATE OPERATOR public.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = public.ne);
CREATE FUNCTION public.gt(a bigint, b bigint) RETURNS boolean LANGUAGE sql
AS $$ SELECT public.seen('bigint > bigint') AND a OPERATOR(pg_catalog.>) b $$;
CREATE OPERATOR public.> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.gt);
CREATE FUNCTION public.changes_channel(a text) RETURNS text LANGUAGE sql
AS $$ SELECT 'x' WHERE public.seen('changes_channel') $$;
CREATE FUNCTION public.pg_notify(a text, b text) RETURNS void LANGUAGE sql
AS $$ SELECT public.seen('pg_notify') $$;
CREATE FUNCTION public.sha256(b bytea) RETURNS bytea LANGUAGE sql
AS $$ SELECT pg_catalog.sha256(b) WHERE public.seen('sha256') $$;
CREATE FUNCTION public.split_part(a text, b text, c integer) RETURNS text LANGUAGE sql
AS $$ SELECT 'x' WHERE public.seen('split_part') $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql
AS $$ SELECT pg_catalog.now() WHERE public.seen('now') $$;
"""


def test_objects_planted_in_public_never_bind_into_the_feed(
    conn: psycopg.Connection[Any], db: str, login_as: Callable[..., str]
) -> None:
    attacker = login_as(None)
    app_dsn = login_as("mailroom_app")
    daemon_dsn = login_as("mailroom_daemon")
    who = {name: conninfo_to_dict(dsn)["user"] for name, dsn in
           (("attacker", attacker), ("app", app_dsn), ("daemon", daemon_dsn))}  # fmt: skip
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(
        sql.Identifier(who["attacker"])))  # fmt: skip
    for name in ("app", "daemon"):  # the worst case: public first on their path
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = public, pg_catalog").format(
            sql.Identifier(who[name])))  # fmt: skip
    with psycopg.connect(attacker, autocommit=True) as planting:
        planting.execute(PLANTS)
    try:
        with (
            psycopg.connect(app_dsn, autocommit=True) as app,
            psycopg.connect(daemon_dsn, autocommit=True) as daemon,
            psycopg.connect(db, autocommit=True) as owner,
        ):
            owner.execute("SET search_path = public, pg_catalog")
            app.execute("SELECT mailroom.changes_listen()")
            mids = [mailroom.enqueue(app, "bob@example.com", subject="s", text="t")
                    for _ in range(2)]  # fmt: skip
            assert mailroom.cancel(app, mids[0])
            sent(owner, mids[1], "p-planted")
            # the daemon's own statements: an event before and one after (both triggers)
            daemon.execute(EVENT, ["k1", "p-planted", "bob@example.com", "Bounce",
                                   "Permanent/General", "550"])  # fmt: skip
            daemon.execute(EVENT, ["k2", "p-planted", "bob@example.com", "Delivery", "", "250"])
            daemon.execute("SELECT mailroom.prune_changes(604800, 10)")
            got = list(mailroom.changes(app, follow=False))
            assert [c.state for c in got] == ["cancelled", "sent", "bounced", "delivered"]
            assert feed.ack(app, "django", got[-1].id) == got[-1].id
            assert feed.stored_cursor(app, "django") == got[-1].id
            assert len(list(app.notifies(timeout=0.5))) >= 1  # pg_catalog's pg_notify ran
            # an event before its record: noted in changes_unmatched by the events trigger,
            # matched there by the record's (0034), both under the planted search_path
            early = mailroom.enqueue(app, "bob@example.com", subject="s", text="t")
            daemon.execute(EVENT, ["k3", "p-early", "bob@example.com", "Delivery", "", "250"])
            waiting = "SELECT provider_message_id FROM mailroom.changes_unmatched"
            assert conn.execute(waiting).fetchall() == [("p-early",)]
            sent(owner, early, "p-early")
            assert conn.execute(waiting).fetchall() == []
            later = list(mailroom.changes(app, got[-1].id, follow=False))
            assert [(c.message_id, c.state) for c in later] == [(early, "sent"),
                                                                (early, "delivered")]  # fmt: skip
        assert conn.execute("SELECT * FROM public.sightings").fetchall() == []
    finally:  # the login_as fixture drops the role: its objects go first
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(who["attacker"])))
