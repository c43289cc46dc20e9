"""Who enqueued a message cannot be rewritten (sql/0016): the attack, as the operator and
the daemon, succeeds on a 0013 schema and fails after the upgrade.

``enqueued_by`` is what scopes message_status(), cancel() and idempotency keys to one
application: rewriting it hands one application's message to another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

import mailroom
from mailroom import migrate
from test_sql_security import _apply_up_to, bare_db  # noqa: F401 -- the fixture

REWRITE = "UPDATE mailroom.outbox SET enqueued_by = %s WHERE id = %s"


def _role(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["user"])


def _seen_and_cancelled_by(dsn: str, message_id: int) -> tuple[bool, bool]:
    with psycopg.connect(dsn, autocommit=True) as app:
        seen = app.execute("SELECT * FROM mailroom.message_status(%s)", [message_id]).fetchone()
        cancelled = app.execute("SELECT mailroom.cancel(%s)", [message_id]).fetchone()
    return seen is not None, bool(cancelled and cancelled[0])


def test_the_operator_and_the_daemon_cannot_hand_a_message_to_another_application(
    bare_db: str,  # noqa: F811 -- the fixture imported above
    login_as: Callable[..., str],
) -> None:
    shop = login_as("mailroom_app", db=bare_db)
    with psycopg.connect(bare_db, autocommit=True) as owner:
        _apply_up_to(owner, 13, ())
    billing = login_as("mailroom_app", db=bare_db)
    operator = login_as("mailroom_operator", db=bare_db)
    daemon = login_as("mailroom_daemon", db=bare_db)

    def enqueue() -> int:
        with psycopg.connect(shop, autocommit=True) as app:
            return mailroom.enqueue(app, "ann@example.com", subject="S", text="t")

    # before the fix: each of them rewrites it, and billing then reads and cancels shop's mail
    for attacker in (operator, daemon):
        victim = enqueue()
        with psycopg.connect(attacker, autocommit=True) as conn:
            assert conn.execute(REWRITE, [_role(billing), victim]).rowcount == 1
        assert _seen_and_cancelled_by(billing, victim) == (True, True)

    with psycopg.connect(bare_db, autocommit=True) as owner:
        applied = [m.version for m in migrate.migrate(owner, channel="token_insert")]
    assert 16 in applied

    victim = enqueue()
    for attacker in (operator, daemon, bare_db):  # the schema owner too
        with (
            psycopg.connect(attacker, autocommit=True) as conn,
            pytest.raises(errors.InsufficientPrivilege, match="enqueued_by is fixed"),
        ):
            conn.execute(REWRITE, [_role(billing), victim])
    assert _seen_and_cancelled_by(billing, victim) == (False, False)
    # shop still owns it; other columns of the row can still be written as before
    with psycopg.connect(operator, autocommit=True) as conn:
        done = conn.execute(
            "UPDATE mailroom.outbox SET priority = 5 WHERE id = %s", [victim]
        ).rowcount
    assert done == 1
    assert _seen_and_cancelled_by(shop, victim) == (True, True)


def test_a_row_update_that_keeps_enqueued_by_passes(conn: psycopg.Connection[Any]) -> None:
    message = mailroom.enqueue(conn, "ann@example.com", subject="S", text="t")
    row = conn.execute(
        "UPDATE mailroom.outbox SET enqueued_by = enqueued_by WHERE id = %s", [message]
    )
    assert row.rowcount == 1
