"""mailroom.enqueue / status / cancel through every connection type an application holds,
against the real PostgreSQL, logged in as an application role (a member of mailroom_app):
commit -> the row exists; rollback -> nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg2
import pytest
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.orm import Session

import mailroom

RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: raw\r\n\r\nbody\r\n"


def count(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone()
    assert row is not None
    return int(row[0])


def sqlalchemy_url(dsn: str, driver: str) -> sqlalchemy.URL:
    params = conninfo_to_dict(dsn)
    return sqlalchemy.URL.create(
        f"postgresql+{driver}",
        username=str(params.get("user")),
        host=str(params.get("host")),
        port=int(params.get("port", 5432)),
        database=str(params.get("dbname")),
    )


def welcome() -> dict[str, Any]:
    """A templated message with every option and display names (not_before differs on
    every call: an option, not content, so a repeat is still the same message)."""
    return {
        "to": [("Ann Smith", "ann@bücher.de"), "Bob <bob@example.com>"],
        "template": "welcome",
        "data": {"login": "ann", "n": [1, 2], "text": "Grüße"},
        "from_address": '"Shop" <shop@example.com>',
        "cc": "cc@example.com",
        "bcc": ["bcc@example.com"],
        "reply_to": "Help <help@example.com>",
        "priority": 5,
        "not_before": datetime.now(UTC) + timedelta(hours=1),
        "idempotency_key": "welcome:ann",
        "max_attempts": 3,
    }


def _everything(conn: Any) -> list[int]:
    """One message of each kind, with every option and display names; returns their ids."""
    return [
        mailroom.enqueue(conn, **welcome()),
        mailroom.enqueue(conn, "ann@example.com", subject="Hi", text="t", html="<p>h</p>"),
        mailroom.enqueue(conn, "ann@example.com", raw=RAW),
    ]


def check_stored(db: str, ids: list[int]) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT to_addresses, template_data, raw_mime, priority, from_address,"
            " reply_to_addresses FROM mailroom.outbox WHERE id = ANY(%s) ORDER BY id",
            (ids,),
        ).fetchall()
    template, _simple, raw = rows
    assert template[0] == ['"Ann Smith" <ann@xn--bcher-kva.de>', '"Bob" <bob@example.com>']
    assert template[1] == {"login": "ann", "n": [1, 2], "text": "Grüße"}
    assert template[3:] == (5, '"Shop" <shop@example.com>', ['"Help" <help@example.com>'])
    assert raw[2] == RAW


# Each connection type: (open a connection in a transaction, commit, rollback, close)
class Sync:
    def __init__(self, dsn: str, kind: str) -> None:
        self.kind = kind
        if kind == "psycopg":
            self.conn: Any = psycopg.connect(dsn)
            self.handle: Any = self.conn
        elif kind == "psycopg2":
            self.conn = psycopg2.connect(dsn)
            self.handle = self.conn
        elif kind.startswith("sqlalchemy"):
            driver = "psycopg2" if kind.endswith("psycopg2") else "psycopg"
            self.engine = sqlalchemy.create_engine(sqlalchemy_url(dsn, driver))
            if "session" in kind:
                self.handle = Session(self.engine)
                self.conn = self.handle
            else:
                self.conn = self.engine.connect()
                self.handle = self.conn

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()
        if self.kind.startswith("sqlalchemy"):
            self.engine.dispose()


KINDS = [
    "psycopg",
    "psycopg2",
    "sqlalchemy-connection-psycopg2",
    "sqlalchemy-connection-psycopg",
    "sqlalchemy-session-psycopg2",
]


@pytest.fixture(params=KINDS)
def app(request: pytest.FixtureRequest, login_as: Callable[..., str]) -> Iterator[Sync]:
    client = Sync(login_as("mailroom_app"), request.param)
    yield client
    client.close()


def test_commit_stores_every_kind_of_message(app: Sync, db: str) -> None:
    ids = _everything(app.handle)
    assert count(db) == 0  # not committed yet: the caller's transaction
    app.commit()
    assert count(db) == 3
    check_stored(db, ids)
    # an idempotent repeat of the same message returns its id, in a new transaction
    again = mailroom.enqueue(app.handle, **welcome())
    app.commit()
    assert again == ids[0]
    # the same key for another message is refused, whichever part differs
    for other in ({"to": "x@example.com"}, {"data": {"login": "bob"}}, {"from_address": None},
                  {"template": None, "data": None, "subject": "Hi", "text": "t"}):  # fmt: skip
        with pytest.raises(mailroom.IdempotencyConflict) as caught:
            mailroom.enqueue(app.handle, **{**welcome(), **other})
        assert caught.value.key == "welcome:ann"
        assert f'idempotency key "welcome:ann" already names message {ids[0]}' in str(caught.value)
        app.rollback()
    assert count(db) == 3


def test_rollback_leaves_nothing(app: Sync, db: str) -> None:
    _everything(app.handle)
    app.rollback()
    assert count(db) == 0


def test_status_and_cancel_of_own_messages_only(
    app: Sync, db: str, login_as: Callable[..., str]
) -> None:
    mine = mailroom.enqueue(app.handle, "ann@example.com", subject="s", text="b")
    app.commit()
    state = mailroom.status(app.handle, mine)
    assert state is not None
    assert state["status"] == "pending"
    assert state["attempts"] == 0
    assert state["created_at"] is not None

    # a cancel rolled back never happened
    assert mailroom.cancel(app.handle, mine) is True
    app.rollback()
    assert (mailroom.status(app.handle, mine) or {})["status"] == "pending"

    # another application can neither see nor cancel it
    other = Sync(login_as("mailroom_app"), "psycopg")
    try:
        assert mailroom.status(other.handle, mine) is None
        assert mailroom.cancel(other.handle, mine) is False
        other.commit()
    finally:
        other.close()

    assert mailroom.cancel(app.handle, mine) is True
    app.commit()
    assert (mailroom.status(app.handle, mine) or {})["status"] == "cancelled"
    assert mailroom.cancel(app.handle, mine) is False  # already final
    assert mailroom.status(app.handle, 10**12) is None
    app.commit()


def test_a_message_being_sent_cannot_be_cancelled(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    app = Sync(login_as("mailroom_app"), "psycopg2")
    try:
        ids = [mailroom.enqueue(app.handle, "a@example.com", subject="s", text="b")
               for _ in range(3)]  # fmt: skip
        app.commit()
        conn.execute(
            "UPDATE mailroom.outbox SET status = 'sending', locked_by = 'w',"
            " locked_until = now() + interval '1 min' WHERE id = %s",
            (ids[0],),
        )
        conn.execute("UPDATE mailroom.outbox SET status = 'sent' WHERE id = %s", (ids[1],))
        conn.execute("UPDATE mailroom.outbox SET status = 'retrying' WHERE id = %s", (ids[2],))
        assert [mailroom.cancel(app.handle, i) for i in ids] == [False, False, True]
        app.commit()
    finally:
        app.close()


def test_the_app_role_cannot_update_the_outbox_itself(login_as: Callable[..., str]) -> None:
    with (
        psycopg.connect(login_as("mailroom_app")) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        app.execute("UPDATE mailroom.outbox SET status = 'cancelled'")


def test_a_key_conflict_in_sql_is_a_named_unique_violation(login_as: Callable[..., str]) -> None:
    with psycopg.connect(login_as("mailroom_app")) as conn:
        statement = (
            "SELECT mailroom.enqueue(ARRAY[%s], subject => 'Hi', body_text => 'b',"
            " idempotency_key => 'order:7')"
        )
        first = conn.execute(statement, ("Ann <ann@example.com>",)).fetchone()
        # the same message, its address written another way: stored alike, so the same
        assert conn.execute(statement, ('"Ann" <ann@example.com>',)).fetchone() == first
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            conn.execute(statement, ("bob@example.com",))
        assert caught.value.diag.constraint_name == "outbox_idempotency_key_reused"
        assert caught.value.sqlstate == "23505"


def test_psycopg_async(db: str, login_as: Callable[..., str]) -> None:
    dsn = login_as("mailroom_app")

    async def run() -> tuple[int, dict[str, Any] | None, bool]:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            rolled = await mailroom.enqueue_async(aconn, "Ann <ann@bücher.de>", raw=RAW)
            await aconn.rollback()
            assert count(db) == 0
            mid = await mailroom.enqueue_async(aconn, "Ann <ann@bücher.de>", raw=RAW,
                                               idempotency_key="raw:1")  # fmt: skip
            await aconn.commit()
            with pytest.raises(mailroom.IdempotencyConflict):
                await mailroom.enqueue_async(aconn, "Bob <b@example.com>", raw=RAW,
                                             idempotency_key="raw:1")  # fmt: skip
            await aconn.rollback()
            state = await mailroom.status_async(aconn, mid)
            cancelled = await mailroom.cancel_async(aconn, mid)
            await aconn.commit()
            assert rolled != mid
            return mid, state, cancelled

    mid, state, cancelled = asyncio.run(run())
    assert state is not None
    assert state["status"] == "pending"
    assert cancelled
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT to_addresses, status FROM mailroom.outbox WHERE id = %s",
                           (mid,)).fetchone()  # fmt: skip
    assert row == (['"Ann" <ann@xn--bcher-kva.de>'], "cancelled")


def test_wrong_connection_types_are_named() -> None:
    with pytest.raises(TypeError, match=r"cannot use a builtins\.object"):
        mailroom.enqueue(object(), "a@example.com", subject="s", text="b")
    with pytest.raises(TypeError, match="raw must be bytes"):
        mailroom.enqueue(object(), "a@example.com", raw="text")
    with pytest.raises(TypeError, match="an address must be a str or a"):
        mailroom.enqueue(object(), ["a@example.com", 5], subject="s", text="b")


def test_bad_input_names_the_rule_through_psycopg2(login_as: Callable[..., str]) -> None:
    conn = psycopg2.connect(login_as("mailroom_app"))
    try:
        with pytest.raises(psycopg2.errors.CheckViolation) as caught:
            mailroom.enqueue(conn, "Evil\r\nBcc: x@example.org <a@example.com>", raw=RAW)
        assert caught.value.diag.constraint_name == "outbox_addresses_must_be_ascii_user_at_domain"
        conn.rollback()
    finally:
        conn.close()
