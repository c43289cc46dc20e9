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
    # the trigger refuses the owner; the daemon has no UPDATE on the column at all since
    # 0017 (it writes outcomes only), the operator no UPDATE on the outbox since 0020 (its
    # actions are audited functions)
    refusals = ((operator, "permission denied for table outbox"),
                (bare_db, "enqueued_by is fixed"),
                (daemon, "permission denied for table outbox"))  # fmt: skip
    for attacker, says in refusals:
        with (
            psycopg.connect(attacker, autocommit=True) as conn,
            pytest.raises(errors.InsufficientPrivilege, match=says),
        ):
            conn.execute(REWRITE, [_role(billing), victim])
    assert _seen_and_cancelled_by(billing, victim) == (False, False)
    # shop still owns it; other columns of the row can still be written as before
    with psycopg.connect(bare_db, autocommit=True) as conn:
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


# -- the daemon writes outcomes, not messages (sql/0017) ----------------------------------

DAEMON_REWRITES = (
    "UPDATE mailroom.outbox SET bcc_addresses = ARRAY['spy@example.com'] WHERE id = %s",
    "UPDATE mailroom.outbox SET to_addresses = ARRAY['spy@example.com'] WHERE id = %s",
    "UPDATE mailroom.outbox SET template_data = NULL WHERE id = %s",
    "UPDATE mailroom.outbox SET subject = 'phish', body_text = 'click' WHERE id = %s",
    "UPDATE mailroom.outbox SET from_address = 'ceo@example.com' WHERE id = %s",
    "DELETE FROM mailroom.attempts WHERE message_id = %s",
)


def test_the_daemon_role_cannot_change_what_a_message_says_or_erase_a_try(
    bare_db: str,  # noqa: F811 -- the fixture imported above
    login_as: Callable[..., str],
) -> None:
    with psycopg.connect(bare_db, autocommit=True) as owner:
        _apply_up_to(owner, 16, ())
        victim = mailroom.enqueue(owner, "ann@example.com", subject="S", text="t")
        owner.execute(
            "INSERT INTO mailroom.attempts (message_id, attempt, outcome, worker)"
            " VALUES (%s, 1, 'retry', 'w')",
            [victim],
        )
    daemon = login_as("mailroom_daemon", db=bare_db)
    # before the fix, every one of these goes through
    with psycopg.connect(daemon) as conn:
        for statement in DAEMON_REWRITES:
            assert conn.execute(statement, [victim]).rowcount == 1, statement
        conn.rollback()

    with psycopg.connect(bare_db, autocommit=True) as owner:
        assert 17 in [m.version for m in migrate.migrate(owner, channel="token_insert")]
    with psycopg.connect(daemon, autocommit=True) as conn:
        for statement in DAEMON_REWRITES:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement, [victim])
        # what it records is still its to write
        done = conn.execute(
            "UPDATE mailroom.outbox SET status = 'retrying', last_error = 'x',"
            " next_attempt_at = now(), updated_at = now() WHERE id = %s",
            [victim],
        )
        assert done.rowcount == 1
    with psycopg.connect(bare_db) as owner:
        row = owner.execute(
            "SELECT bcc_addresses, subject FROM mailroom.outbox WHERE id = %s", [victim]
        ).fetchone()
        assert row == ([], "S")
        assert owner.execute(
            "SELECT count(*) FROM mailroom.attempts WHERE message_id = %s", [victim]
        ).fetchone() == (1,)


def test_a_token_secret_goes_with_the_final_state_whoever_writes_it(
    conn: psycopg.Connection[Any],
) -> None:
    ids = [
        mailroom.enqueue(conn, "ann@example.com", template="activationv1", data={"a": 1})
        for _ in range(4)
    ]
    for message in ids:  # the tokens of 0019, as the lifecycle's trigger stores them
        conn.execute(
            "INSERT INTO mailroom.message_tokens (message_id, recipient, template, action, secret)"
            " VALUES (%s, 'ann@example.com', 'activationv1', 'activation', %s)",
            [message, bytes(32)],
        )
    for message, status in zip(ids, ("sent", "dead", "cancelled", "retrying"), strict=True):
        conn.execute("UPDATE mailroom.outbox SET status = %s WHERE id = %s", [status, message])
    rows = conn.execute(
        "SELECT o.id IN (SELECT message_id FROM mailroom.message_tokens), template_data->>'a'"
        " FROM mailroom.outbox AS o WHERE id = ANY(%s) ORDER BY id",
        [ids],
    ).fetchall()
    assert rows == [(False, "1"), (False, "1"), (False, "1"), (True, "1")]
