"""The outbox's changes are written one batch per statement and application (sql/0035)
and become rows at the application's first read: in write order with the events' rows,
at most 10,000 changes a read, never another application's, pruned like rows, and an
upgrade numbers the rows written before among the batches. Real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

import mailroom
from mailroom import migrate
from test_changes import EVENT, apps, sent  # noqa: F401 -- apps: a fixture

BATCH = (
    "INSERT INTO mailroom.change_batches (application, message_ids, states, reasons)"
    " VALUES (%s, %s, %s, %s)"
)
ROW = "INSERT INTO mailroom.changes (application, message_id, state) VALUES (%s, %s, 'sent')"


def role(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["user"])


def batches(owner: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    cur = owner.execute(
        "SELECT application, message_ids, states, reasons FROM mailroom.change_batches ORDER BY id"
    )
    return cur.fetchall()


def read(app: psycopg.Connection[Any]) -> list[tuple[int, int, str]]:
    return [(c.id, c.message_id, c.state) for c in mailroom.changes(app, follow=False)]


def test_one_statement_writes_one_batch_per_application_in_message_order(
    conn: psycopg.Connection[Any],
    apps: tuple[psycopg.Connection[Any], ...],  # noqa: F811
) -> None:
    a, b = apps
    a_ids = [mailroom.enqueue(a, f"a{i}@example.com", subject="s", text="t") for i in range(3)]
    b_id = mailroom.enqueue(b, "b@example.com", subject="s", text="t")
    every = [*a_ids, b_id]
    conn.execute(  # the claim: nothing to write
        "UPDATE mailroom.outbox SET status = 'sending', locked_by = 'w',"
        " locked_until = now() + interval '1 minute' WHERE id = ANY(%s)",
        [every],
    )
    assert batches(conn) == []
    # one record of four messages, two applications, one of them dead
    conn.execute(
        "UPDATE mailroom.outbox SET status = CASE WHEN id = %s THEN 'dead' ELSE 'sent' END,"
        " last_error = CASE WHEN id = %s THEN 'MessageRejected: no' END,"
        " sent_at = now(), locked_by = NULL, locked_until = NULL WHERE id = ANY(%s)",
        [a_ids[1], a_ids[1], every],
    )
    got = sorted(batches(conn), key=lambda r: r[1][0])
    a_role, b_role = a.info.user, b.info.user
    assert got == [
        (a_role, a_ids, ["sent", "dead", "sent"], [None, "MessageRejected: no", None]),
        (b_role, [b_id], ["sent"], [None]),
    ]
    assert conn.execute("SELECT count(*) FROM mailroom.changes").fetchone() == (0,)
    assert read(a) == [(1, a_ids[0], "sent"), (2, a_ids[1], "dead"), (3, a_ids[2], "sent")]
    # A's read turned A's batch into rows and left B's alone
    assert [r[0] for r in batches(conn)] == [b_role]
    assert read(b) == [(1, b_id, "sent")]
    assert batches(conn) == []
    reasons = conn.execute(
        "SELECT reason FROM mailroom.changes WHERE message_id = %s", [a_ids[1]]
    ).fetchall()
    assert reasons == [("MessageRejected: no",)]


def test_rows_and_batches_are_numbered_in_the_order_they_were_written(
    conn: psycopg.Connection[Any],
    apps: tuple[psycopg.Connection[Any], ...],  # noqa: F811
) -> None:
    a, _ = apps
    mid = mailroom.enqueue(a, "u@example.com", subject="s", text="t")
    sent(conn, mid, "p-1")  # a batch: the send
    conn.execute(EVENT, ["k1", "p-1", "u@example.com", "Delivery", "", "250 ok"])  # a row
    sent_again = mailroom.enqueue(a, "v@example.com", subject="s", text="t")
    sent(conn, sent_again, "p-2")  # a batch after the row
    assert [c.state for c in mailroom.changes(a, follow=False)] == ["sent", "delivered", "sent"]
    changes = conn.execute(
        "SELECT seq, message_id, state, at IS NOT NULL FROM mailroom.changes ORDER BY seq"
    ).fetchall()
    assert changes == [(1, mid, "sent", True), (2, mid, "delivered", True),
                       (3, sent_again, "sent", True)]  # fmt: skip


def test_a_read_numbers_at_most_10000_changes_and_a_big_batch_whole(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    dsn = login_as("mailroom_app")
    app_role = role(dsn)
    # written in this order: a batch of 9,998, a row, a batch of 5, a row
    conn.execute(BATCH, [app_role, list(range(1, 9999)), ["sent"] * 9998, [None] * 9998])
    conn.execute(ROW, [app_role, 9999])
    conn.execute(BATCH, [app_role, list(range(10000, 10005)), ["sent"] * 5, [None] * 5])
    conn.execute(ROW, [app_role, 10005])
    with psycopg.connect(dsn, autocommit=True) as app:
        app.execute("SELECT count(*) FROM mailroom.changes_since(0, 1)")
        # the first three entries (10,004 changes: the last one started below 10,000)
        head = conn.execute(
            "SELECT last FROM mailroom.change_heads WHERE application = %s", [app_role]
        ).fetchone()
        assert head == (10004,)
        unnumbered = conn.execute(
            "SELECT message_id FROM mailroom.changes WHERE seq IS NULL"
        ).fetchall()
        assert unnumbered == [(10005,)]
        assert batches(conn) == []
        got = [(c.id, c.message_id) for c in mailroom.changes(app, follow=False, batch=4000)]
    assert got == [(i, i) for i in range(1, 10006)]

    # one batch bigger than a read's 10,000 is taken whole (a statement's own size)
    conn.execute(BATCH, [app_role, list(range(1, 10011)), ["dead"] * 10010, ["x"] * 10010])
    with psycopg.connect(dsn, autocommit=True) as app:
        rows = app.execute("SELECT id, state FROM mailroom.changes_since(10005, 10000)")
        assert len(rows.fetchall()) == 10000
        rest = [c.id for c in mailroom.changes(app, 20005, follow=False)]
        assert rest == list(range(20006, 20016))


def test_no_one_but_the_definer_functions_writes_batches_and_only_staff_read_them(
    conn: psycopg.Connection[Any], apps: tuple[psycopg.Connection[Any], ...],  # noqa: F811
    login_as: Callable[..., str],
) -> None:  # fmt: skip
    a, b = apps
    mid = mailroom.enqueue(a, "u@example.com", subject="s", text="t")
    assert mailroom.cancel(a, mid)  # a batch of A's
    writes = (
        "SELECT * FROM mailroom.change_batches",
        "INSERT INTO mailroom.change_batches (application, message_ids, states, reasons)"
        " VALUES (session_user, '{1}', '{sent}', '{NULL}')",
        "UPDATE mailroom.change_batches SET application = session_user",
        "DELETE FROM mailroom.change_batches",
        "TRUNCATE mailroom.change_batches",
    )
    for who in (b, a):
        for statement in writes:
            with pytest.raises(errors.InsufficientPrivilege):
                who.execute(statement)  # type: ignore[arg-type]  # static text
    for login in ("mailroom_daemon", "mailroom_operator", "mailroom_viewer", None):
        with psycopg.connect(login_as(login), autocommit=True) as other:
            for statement in writes[1:]:
                with pytest.raises(errors.InsufficientPrivilege):
                    other.execute(statement)  # type: ignore[arg-type]  # static text
            if login in ("mailroom_operator", "mailroom_viewer"):
                assert other.execute(writes[0]).fetchall() != []  # what A has not read yet
            else:
                with pytest.raises(errors.InsufficientPrivilege):
                    other.execute(writes[0])  # type: ignore[arg-type]  # static text
    # B's read neither shows nor takes A's batch
    assert read(b) == []
    assert len(batches(conn)) == 1
    assert read(a) == [(1, mid, "cancelled")]


def test_the_retention_prunes_old_batches_and_counts_their_changes(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    app_role = role(login_as("mailroom_app"))
    for age in ("8 days", "6 days"):
        conn.execute(BATCH, [app_role, [1, 2, 3], ["sent"] * 3, [None] * 3])
        conn.execute(
            "UPDATE mailroom.change_batches SET at = now() - %s::interval"
            " WHERE id = (SELECT max(id) FROM mailroom.change_batches)",
            [age],
        )
    conn.execute(ROW, [app_role, 4])
    conn.execute("UPDATE mailroom.changes SET at = now() - interval '9 days'")
    pruned = conn.execute("SELECT mailroom.prune_changes(604800, 10)").fetchone()
    assert pruned == (4,)  # the old row and the old batch's three
    left = conn.execute("SELECT now() - at > interval '7 days' FROM mailroom.change_batches")
    assert left.fetchall() == [(False,)]
    assert conn.execute("SELECT count(*) FROM mailroom.changes").fetchone() == (0,)
    with pytest.raises(errors.InvalidParameterValue):  # the floor, as before
        conn.execute("SELECT mailroom.prune_changes(86400, 10)")


def test_rows_written_before_the_upgrade_are_numbered_first(
    migrated_to: Callable[[int], str], login_as: Callable[..., str]
) -> None:
    at_0034 = migrated_to(34)
    with (
        psycopg.connect(at_0034, autocommit=True) as owner,
        psycopg.connect(login_as("mailroom_app", db=at_0034), autocommit=True) as app,
    ):
        before = mailroom.enqueue(app, "u1@example.com", subject="s", text="t")
        sent(owner, before, "p-1")  # a row, as 0030 wrote it
        assert owner.execute("SELECT count(*) FROM mailroom.changes").fetchone() == (1,)
        migrate.migrate(owner, channel="token_insert")
        after = mailroom.enqueue(app, "u2@example.com", subject="s", text="t")
        sent(owner, after, "p-2")  # a batch
        assert len(batches(owner)) == 1
        assert read(app) == [(1, before, "sent"), (2, after, "sent")]
