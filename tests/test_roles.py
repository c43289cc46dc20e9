"""Least privilege, shown by connecting as each role: what is allowed, what is refused."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

import mailroom
from conftest import all_final, wait_for
from mailroom import lifecycle, migrate, tokens
from sesv2_standin import SesStandin


def test_application_role_may_only_enqueue_and_read_status(
    conn: psycopg.Connection[Any], login_as: Any
) -> None:
    other = mailroom.enqueue(conn, "secret-recipient@example.com", subject="S", text="private body")
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as app:
        mine = mailroom.enqueue(app, "ann@example.com", template="activationv1", data={"x": 1})
        assert (
            mailroom.enqueue(app, "ann@example.com", subject="S", text="x", idempotency_key="k") > 0
        )
        row = app.execute(
            "SELECT status, attempts FROM mailroom.message_status(%s)", [mine]
        ).fetchone()
        assert row == ("pending", 0)
        # another application's (here the owner's) message is not this one's to read
        status = app.execute("SELECT * FROM mailroom.message_status(%s)", [other]).fetchone()
        assert status is None
        for statement in (
            "SELECT body_text FROM mailroom.outbox",
            "SELECT to_addresses FROM mailroom.outbox WHERE id = 1",
            "UPDATE mailroom.outbox SET status = 'sent'",
            "DELETE FROM mailroom.outbox",
            "INSERT INTO mailroom.outbox (to_addresses, subject, body_text)"
            " VALUES ('{a@b.co}', 's', 'b')",
            "SELECT * FROM mailroom.attempts",
            "UPDATE mailroom.settings SET channel = 'x'",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)


def test_public_gets_nothing(conn: psycopg.Connection[Any], login_as: Any) -> None:
    with psycopg.connect(login_as(None), autocommit=True) as stranger:
        for statement in (
            "SELECT mailroom.enqueue(ARRAY['a@example.com'], subject => 's', body_text => 'b')",
            "SELECT * FROM mailroom.message_status(1)",
            "SELECT mailroom.cancel(1)",
            "SELECT mailroom.prune_events(86400, 10)",
            "SELECT * FROM mailroom.changes_since(0, 10)",
            "SELECT mailroom.changes_ack('x', 0)",
            "SELECT mailroom.prune_changes(604800, 10)",
            "SELECT count(*) FROM mailroom.changes",
            "SELECT count(*) FROM mailroom.outbox",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                stranger.execute(statement)
    public = conn.execute(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'mailroom'::regnamespace"
        " AND has_function_privilege('public', oid, 'EXECUTE')"
    ).fetchone()
    assert public == (0,)
    definers = conn.execute(
        "SELECT proname, proconfig FROM pg_proc"
        " WHERE pronamespace = 'mailroom'::regnamespace AND prosecdef"
    ).fetchall()
    assert {name for name, _ in definers} == {
        "enqueue",
        "message_status",
        "is_suppressed",
        "cancel",
        "prune_events",  # 0013: the daemon prunes old events without DELETE on them
        "outbox_forget_token",  # 0019: a token goes with its message's final state
        # 0020: the operator's actions, each with its audit row, without DML on the tables
        "operator_cancel",
        "operator_send_now",
        "operator_dead_retry",
        "operator_dead_purge",
        "operator_suppress",
        "operator_unsuppress",
        # 0027: pausing and resuming a queue, audited the same way
        "operator_pause_queue",
        "operator_resume_queue",
        # 0029: the recipient search's triggers: nobody else writes outbox_recipients
        "outbox_recipients_add",
        "outbox_recipients_remove",
        "outbox_recipients_change",
        "outbox_recipients_truncate",
        # 0030: the changes feed, each application's own (session_user), and the triggers
        # that write it for the roles that may not
        "changes_since",
        "changes_cursor",
        "changes_ack",
        "prune_changes",
        "changes_from_outbox",
        "changes_from_events",
    }
    for _, config in definers:
        assert "search_path=pg_catalog, pg_temp" in config


def test_daemon_role_runs_the_daemon_but_cannot_alter_the_schema(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any, login_as: Any
) -> None:
    daemon_dsn = login_as("mailroom_daemon")
    standin.fail_address("bad@", "message_rejected")
    for to in ("a@example.com", "bad@example.com"):
        mailroom.enqueue(conn, to, subject="S", text="x")
    spawn(MAILROOM_DATABASE_URL=daemon_dsn)
    wait_for(lambda: all_final(conn, 2))
    counts = conn.execute("SELECT status, count(*) FROM mailroom.outbox GROUP BY 1").fetchall()
    assert dict(counts) == {"sent": 1, "dead": 1}
    with psycopg.connect(daemon_dsn, autocommit=True) as daemon:
        for statement in (
            "ALTER TABLE mailroom.outbox ADD COLUMN x int",
            "CREATE TABLE mailroom.x (id int)",
            "DROP INDEX mailroom.outbox_dead",
            "UPDATE mailroom.settings SET channel = 'x'",
            "SELECT mailroom.enqueue(ARRAY['a@example.com'], subject => 's', body_text => 'b')",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                daemon.execute(statement)


def test_roles_created_later_get_their_grants_on_the_next_migrate(
    conn: psycopg.Connection[Any], login_as: Any
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    public = conn.execute(  # functions created after 0004 (lifecycle) are not PUBLIC's either
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'mailroom'::regnamespace"
        " AND has_function_privilege('public', oid, 'EXECUTE')"
    ).fetchone()
    assert public == (0,)
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as app:
        # the web application's lifecycle side works with the application role
        app.execute(
            "INSERT INTO mailroom.accounts (login, email) VALUES ('ann', 'ann@example.com')"
        )
        key = bytes.fromhex("11" * 32)
        secret = conn.execute("SELECT secret FROM mailroom.message_tokens").fetchone()
        assert secret is not None
        token = tokens.sign(key, tokens.Action.ACTIVATION, bytes(secret[0]))
        result = lifecycle.consume_token(app, token, tokens.Action.ACTIVATION, [key])
        assert isinstance(result, lifecycle.Consumed)
