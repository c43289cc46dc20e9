"""Attacks on the SQL surface, as an application would make them with only mailroom_app.

The attacker's goal: get code of its own to run as the owner of the mailroom schema (with
the usual set-up, a superuser). Its tool: the temporary schema, which PostgreSQL searches
FIRST for relations and types when a function's search_path does not list pg_temp. Every
attacker function records ``current_user`` in a temporary table; a row naming the owner is
a successful escalation.

Each attack is first run against a database migrated only up to 0007 (before the fix), where
it must succeed: that shows the attack is real and the check can fail. Then the same
database is upgraded by ``migrate`` and every attack must fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

import mailroom
from mailroom import migrate

EXPECTED_PATH = ["search_path=pg_catalog, pg_temp"]

# Types the mailroom functions (and the triggers they fire) declare or cast to; shadowing
# any of them with a temporary domain whose CHECK calls the attacker's code is the attack.
# (Catalog names: "bigint", "boolean" and the like are SQL keywords the grammar resolves to
# pg_catalog's int8, bool, ... without a search.)
SHADOWED_TYPES = (
    "text", "jsonb", "json", "bytea", "bool", "int8", "int4", "int2", "timestamptz",
    "float8", "regclass", "regprocedure", "regproc", "name", "uuid", "bit",
)  # fmt: skip
# Relations the functions use unqualified or that an attacker might hope they do.
SHADOWED_RELATIONS = ("outbox", "settings", "attempts", "accounts", "tokens", "pg_roles")


def _apply_up_to(conn: psycopg.Connection[Any], last: int, modules: tuple[str, ...]) -> None:
    """The schema as an installation before the fix has it: migrations <= ``last`` (core)
    and the modules' first versions, recorded as ``migrate`` records them."""
    conn.execute(migrate.query("migrations_bootstrap"))
    for m in migrate.available(modules):
        if m.version <= last or (m.version > 1000 and m.version % 1000 <= 1):
            with conn.transaction():
                conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
                conn.execute(
                    migrate.query("migrations_record"),
                    {"version": m.version, "name": m.name, "checksum": m.checksum},
                )
    conn.execute(migrate.query("revoke_public"))
    conn.execute(migrate.query("grant_roles"))


@pytest.fixture
def bare_db(pg_admin_dsn: str) -> Iterator[str]:
    """An empty database (not copied from the migrated template)."""
    import uuid  # noqa: PLC0415

    from conftest import _drop, _with_db  # noqa: PLC0415

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_db(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(_drop(name))


def _arm(app: psycopg.Connection[Any]) -> None:
    """Plant the attacker's objects in its own temporary schema."""
    # A notice reaches the client even when the statement fails afterwards (a row in a
    # table would be rolled back with it).
    app.execute(
        """
        CREATE FUNCTION pg_temp.evil(via text) RETURNS boolean
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE NOTICE 'pwned|%|%', current_user, via;
            RETURN true;
        END $$
        """
    )
    for name in SHADOWED_TYPES:
        app.execute(
            sql.SQL("CREATE DOMAIN pg_temp.{} AS pg_catalog.{} CHECK (pg_temp.evil({}))").format(
                sql.Identifier(name), sql.Identifier(name), sql.Literal(f"domain {name}")
            )
        )
    for name in SHADOWED_RELATIONS:
        # a table that fires the attacker's code on every read path it can: a view over
        # a function call
        app.execute(
            sql.SQL(
                "CREATE TEMP VIEW {} AS SELECT pg_temp.evil({}) AS evil, NULL::pg_catalog.text"
                " AS channel, NULL::pg_catalog.text AS queue"
            ).format(sql.Identifier(name), sql.Literal(f"relation {name}"))
        )
    # operators and functions are never looked up in pg_temp; plant them anyway, so that a
    # future change that qualifies them with pg_temp by mistake is caught.
    app.execute(
        """
        CREATE FUNCTION pg_temp.evil_eq(a pg_catalog.text, b pg_catalog.text)
        RETURNS pg_catalog.bool LANGUAGE sql AS $$ SELECT pg_temp.evil('operator =') $$
        """
    )
    app.execute(
        "CREATE OPERATOR pg_temp.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text,"
        " FUNCTION = pg_temp.evil_eq)"
    )
    for name in ("now", "coalesce_", "pg_notify", "session_user_"):
        app.execute(
            sql.SQL(
                "CREATE FUNCTION pg_temp.{}() RETURNS pg_catalog.text LANGUAGE sql"
                " AS $$ SELECT pg_temp.evil({})::pg_catalog.text $$"
            ).format(sql.Identifier(name), sql.Literal(f"function {name}"))
        )


# One call per SECURITY DEFINER function, and through them every trigger they fire.
# A new definer function must get a line here: test_every_definer_function_is_attacked.
DEFINER_CALLS: dict[str, tuple[str, ...]] = {
    "enqueue": (
        "SELECT mailroom.enqueue(ARRAY['ann@example.com'], template => 'activationv1',"
        ' template_data => \'{"login": "ann"}\')',
        "SELECT mailroom.enqueue(ARRAY['ann@example.com'], subject => 's', body_text => 'b',"
        " body_html => '<p>b</p>', cc_addresses => ARRAY['c@example.com'],"
        " reply_to_addresses => ARRAY['r@example.com'], from_address => 'f@example.com',"
        " idempotency_key => 'k1', priority => 5::smallint, not_before => now(),"
        " queue => 'other')",
        "SELECT mailroom.enqueue(ARRAY['ann@example.com'], subject => 's', body_text => 'b',"
        " idempotency_key => 'k1', queue => 'other')",
        "SELECT mailroom.enqueue(ARRAY['ann@example.com'], raw_mime => '\\x4142'::bytea)",
    ),
    "message_status": ("SELECT * FROM mailroom.message_status(1)",),
    "is_suppressed": (
        "SELECT mailroom.is_suppressed('Ann <ann@example.com>')",
        "SELECT mailroom.is_suppressed(NULL)",
    ),
    "prune_events": (
        "SELECT mailroom.prune_events(86400, 10)",
        "SELECT mailroom.prune_events(0, 10)",  # refused, after its checks ran
    ),
    "cancel": (
        "SELECT mailroom.cancel(1)",
        # one of the caller's own, so that the UPDATE and the triggers it could fire run
        "SELECT mailroom.cancel(mailroom.enqueue(ARRAY['Ann <ann@bücher.de>'],"
        " subject => 's', body_text => 'b'))",
    ),
    # the lifecycle's token trigger (1003) runs as the owner: fired by a token insert
    "token_created": (
        "INSERT INTO mailroom.accounts (login, email) VALUES ('cy', 'cy@example.com')",
        "INSERT INTO mailroom.tokens (account_id, action)"
        " SELECT id, 'password_recovery' FROM mailroom.accounts WHERE login = 'cy'",
    ),
    # drops a message's token with its final state (0019): fired by cancelling a message
    "outbox_forget_token": (
        "SELECT mailroom.cancel(mailroom.enqueue(ARRAY['ann@example.com'],"
        " subject => 's', body_text => 'b'))",
    ),
    # 0020: the operator's actions (run as a member of mailroom_operator below; refused to
    # the application). Each call passes the checks and changes rows, so that every path
    # of the function body runs.
    "operator_cancel": (
        "SELECT * FROM mailroom.operator_cancel(ARRAY[mailroom.enqueue(ARRAY['ann@example.com'],"
        " subject => 's', body_text => 'b')], 'why', 'mallory', 'cli', gen_random_uuid())",
    ),
    "operator_send_now": (
        "SELECT * FROM mailroom.operator_send_now(ARRAY[mailroom.enqueue("
        "ARRAY['ann@example.com'], subject => 's', body_text => 'b',"
        " not_before => now() + interval '1 hour')], NULL, 'mallory', 'web', gen_random_uuid())",
    ),
    "operator_dead_retry": (
        "SELECT * FROM mailroom.operator_dead_retry('infinity', '-infinity', 0, 10, NULL,"
        " 'user_action_queue', NULL, 'rejected', NULL, NULL, 'mallory', 'cli',"
        " gen_random_uuid(), 'n')",
        "SELECT * FROM mailroom.operator_dead_retry('infinity', '-infinity', 0, 10,"
        " ARRAY[1, 2], NULL, NULL, NULL, NULL, NULL, 'mallory', 'cli', gen_random_uuid(), 'n')",
    ),
    "operator_dead_purge": (
        "SELECT * FROM mailroom.operator_dead_purge('infinity', '-infinity', 0, 10, NULL,"
        " 'bulk', NULL, NULL, now() - interval '1 day', NULL, 'mallory', 'cli',"
        " gen_random_uuid(), 'n')",
    ),
    "operator_suppress": (
        "SELECT * FROM mailroom.operator_suppress(ARRAY['Ann <ann@bücher.de>'], 'manual',"
        " ARRAY['asked'], 'mallory', 'cli', gen_random_uuid())",
    ),
    "operator_unsuppress": (
        "SELECT * FROM mailroom.operator_unsuppress(ARRAY['Ann <ann@bücher.de>'], 'mallory',"
        " 'cli', gen_random_uuid())",
        # 0027: the same with a note
        "SELECT * FROM mailroom.operator_unsuppress(ARRAY['Ann <ann@bücher.de>'], 'mallory',"
        " 'web', gen_random_uuid(), 'why')",
    ),
    # 0029: the recipient search's triggers, fired by every insert and delete of messages;
    # an enqueue with a display name, an IDN and cc/bcc runs every branch of the insert
    "outbox_recipients_add": (
        "SELECT mailroom.enqueue(ARRAY['\"Ann\" <Ann@bücher.de>'], subject => 's',"
        " body_text => 'b', cc_addresses => ARRAY['c@example.com'],"
        " bcc_addresses => ARRAY['B <b@example.com>'])",
    ),
    # fired by operator_dead_purge's call above, which deletes two messages as the
    # operator (the application cannot delete a message)
    "outbox_recipients_remove": (),
    # no role but the owner may change a message's recipients or truncate the outbox: the
    # attempts are refused before the trigger could run (tests/test_search.py checks both)
    "outbox_recipients_change": (
        "UPDATE mailroom.outbox SET to_addresses = ARRAY['x@example.com']",
    ),
    "outbox_recipients_truncate": ("TRUNCATE mailroom.outbox",),
    # 0030: the changes feed. The application reads and acknowledges its own; the daemon
    # prunes; the triggers run as the owner, fired by cancel() (the application), by the
    # daemon's record of an outcome and by its insert of an event (rows of the daemon's
    # test: a message sent as 'pm-attack')
    "changes_since": ("SELECT * FROM mailroom.changes_since(0, 100)",),
    "changes_cursor": ("SELECT mailroom.changes_cursor('django')",),
    "changes_ack": (
        "SELECT mailroom.changes_ack('django', 0)",
        "SELECT mailroom.changes_ack('django', (SELECT max(id) FROM"
        " mailroom.changes_since(0, 100)))",
        "SELECT mailroom.changes_ack('django', 1000000)",  # refused, after its checks ran
    ),
    "prune_changes": (
        "SELECT mailroom.prune_changes(604800, 10)",
        "SELECT mailroom.prune_changes(0, 10)",  # refused, after its checks ran
    ),
    "changes_from_outbox": (
        "SELECT mailroom.cancel(mailroom.enqueue(ARRAY['ann@example.com'],"
        " subject => 's', body_text => 'b'))",
        "UPDATE mailroom.outbox SET status = 'dead', last_error = 'x'"
        " WHERE provider_message_id = 'pm-attack-dead'",
    ),
    "changes_from_events": (
        "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
        " subtype, detail, occurred_at) VALUES ('attack-1', 'pm-attack', 'a@example.com',"
        " 'Bounce', 'Permanent/General', 'smtp; 550', now()), ('attack-2', 'pm-attack',"
        " 'a@example.com', 'Complaint', 'abuse', NULL, now())",
        # an event whose message is not found: the second look, under the lock
        "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
        " subtype, detail, occurred_at) VALUES ('attack-3', 'pm-unknown', 'a@example.com',"
        " 'Delivery', '', '250', now())",
    ),
    # 0027: pausing and resuming a queue (twice each: the insert, then the conflict path)
    "operator_pause_queue": (
        "SELECT mailroom.operator_pause_queue('bulk', 'why', 'mallory', 'cli', gen_random_uuid())",
        "SELECT mailroom.operator_pause_queue('bulk', NULL, 'mallory', 'web', gen_random_uuid())",
    ),
    "operator_resume_queue": (
        "SELECT mailroom.operator_resume_queue('bulk', 'ok', 'mallory', 'cli', gen_random_uuid())",
        "SELECT mailroom.operator_resume_queue('bulk', NULL, 'mallory', 'web', gen_random_uuid())",
    ),
}

# What the application may do directly that fires lifecycle triggers (they run as the
# caller, then reach the definer enqueue()).
LIFECYCLE_CALLS = (
    "INSERT INTO mailroom.accounts (login, email) VALUES ('bob', 'bob@example.com')",
    "INSERT INTO mailroom.tokens (account_id, action)"
    " SELECT id, 'password_recovery' FROM mailroom.accounts WHERE login = 'bob'",
    "UPDATE mailroom.tokens SET consumed_at = now() WHERE action = 'activation'",
    "UPDATE mailroom.accounts SET status = 'suspended' WHERE login = 'bob'",
)


def _attack(app_dsn: str) -> list[tuple[str, str]]:
    """Run every call as the application with the traps armed; returns who ran them."""
    ran: list[tuple[str, str]] = []

    def heard(notice: psycopg.errors.Diagnostic) -> None:
        text = notice.message_primary or ""
        if text.startswith("pwned|"):
            _, who, via = text.split("|", 2)
            ran.append((who, via))

    with psycopg.connect(app_dsn, autocommit=True) as app:
        _arm(app)
        app.add_notice_handler(heard)
        for calls in (*DEFINER_CALLS.values(), LIFECYCLE_CALLS):
            for call in calls:
                # an error after the attacker's code ran would still be a compromise
                with contextlib.suppress(psycopg.Error):
                    app.execute(call)
    return ran


@pytest.fixture
def owner(pg_admin_dsn: str) -> str:
    with psycopg.connect(pg_admin_dsn) as admin:
        row = admin.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_temp_schema_shadowing_escalated_before_the_fix_and_no_longer_does(
    bare_db: str, login_as: Callable[..., str], owner: str
) -> None:
    with psycopg.connect(bare_db, autocommit=True) as conn:
        _apply_up_to(conn, 7, ("lifecycle",))
    app_dsn = login_as("mailroom_app", db=bare_db)

    before = _attack(app_dsn)
    assert (owner, "domain text") in before, f"the attack must work before 0008: {before}"

    with psycopg.connect(bare_db, autocommit=True) as conn:
        applied = [m.version for m in migrate.migrate(conn, channel="token_insert")]
    assert 8 in applied
    assert 1002 in applied

    after = _attack(app_dsn)
    assert [row for row in after if row[0] == owner] == []
    # the attacker's code did run, as itself, where it is its own session's business
    assert all(who != owner for who, _ in after)


def test_a_fresh_install_with_every_module_gives_the_owner_nothing(
    conn: psycopg.Connection[Any], login_as: Callable[..., str], owner: str
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    rows = _attack(login_as("mailroom_app"))
    assert [row for row in rows if row[0] == owner] == []
    # and the calls themselves worked for the application despite the traps
    counts = conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone()
    assert counts is not None
    assert counts[0] >= 4


def test_the_operator_role_gets_nothing_from_the_owner_either(
    conn: psycopg.Connection[Any], login_as: Callable[..., str], owner: str
) -> None:
    # the operator_* functions (0020) are definer functions the operator calls: the same
    # traps, armed by a member of mailroom_operator, over dead letters for them to act on
    from conftest import wait_for  # noqa: PLC0415

    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status, last_error,"
        " queue) SELECT ARRAY['d' || i || '@example.com'], 's', 't', 'dead', 'rejected', q"
        " FROM generate_series(1, 2) AS i, unnest(ARRAY['user_action_queue', 'bulk']) AS q"
    )
    operator_dsn = login_as("mailroom_operator")
    rows = _attack(operator_dsn)
    assert [row for row in rows if row[0] == owner] == []
    actions = conn.execute("SELECT action, sum(messages) FROM mailroom.audit GROUP BY 1")
    # every action ran for real despite the traps
    assert dict(actions.fetchall()) == {"cancel": 1, "send_now": 1, "dead_retry": 2,
                                        "dead_purge": 2, "suppress": 0,
                                        "unsuppress": 0, "pause": 0, "resume": 0}  # fmt: skip
    user = psycopg.conninfo.conninfo_to_dict(operator_dsn)["user"]
    gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s"
    wait_for(lambda: conn.execute(gone, [user]).fetchone() == (True,), timeout=10)


def test_the_daemon_role_gets_nothing_from_the_owner_either(
    conn: psycopg.Connection[Any], login_as: Callable[..., str], owner: str
) -> None:
    # mailroom.prune_events (0013) is the daemon's definer function: the same traps,
    # armed by a member of mailroom_daemon, which may call it
    from conftest import wait_for  # noqa: PLC0415

    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    # messages of an application for the feed's triggers to record (0030)
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status,"
        " provider_message_id, sent_at, enqueued_by) VALUES"
        " (ARRAY['a@example.com'], 's', 't', 'sent', 'pm-attack', now(), 'shop'),"
        " (ARRAY['a@example.com'], 's', 't', 'pending', 'pm-attack-dead', NULL, 'shop')"
    )
    daemon_dsn = login_as("mailroom_daemon")
    rows = _attack(daemon_dsn)
    assert [row for row in rows if row[0] == owner] == []
    # the triggers did run for real despite the traps
    # (the outbox's in one batch per statement, the events' as rows: sql/0035)
    states = conn.execute(
        "SELECT s FROM (SELECT id, 1 AS k, state AS s FROM mailroom.changes UNION ALL"
        " SELECT b.id, e.k, e.s FROM mailroom.change_batches AS b,"
        " unnest(b.states) WITH ORDINALITY AS e(s, k)) AS x ORDER BY id, k"
    ).fetchall()
    assert states == [("dead",), ("bounced",), ("complained",)]
    # its session's temporary objects go when its backend exits: wait for that, or dropping
    # the login role at teardown can race with it
    user = psycopg.conninfo.conninfo_to_dict(daemon_dsn)["user"]
    gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s"
    wait_for(lambda: conn.execute(gone, [user]).fetchone() == (True,), timeout=10)


def test_every_function_in_the_mailroom_schema_has_a_fixed_search_path(
    conn: psycopg.Connection[Any],
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    rows = conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.proconfig
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname LIKE 'mailroom%'
        """
    ).fetchall()
    assert len(rows) > 10
    wrong = {name: config for name, config in rows if config != EXPECTED_PATH}
    assert wrong == {}, "every mailroom function needs SET search_path = pg_catalog, pg_temp"


def test_every_definer_function_is_attacked(conn: psycopg.Connection[Any]) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    rows = conn.execute(
        "SELECT DISTINCT proname FROM pg_proc"
        " WHERE pronamespace = 'mailroom'::regnamespace AND prosecdef"
    ).fetchall()
    assert {name for (name,) in rows} == set(DEFINER_CALLS)


def test_nothing_in_the_mailroom_schema_is_granted_to_public(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    granted = conn.execute(
        """
        SELECT p.oid::regprocedure::text FROM pg_proc AS p
        WHERE p.pronamespace = 'mailroom'::regnamespace
          AND has_function_privilege('public', p.oid, 'EXECUTE')
        UNION ALL
        SELECT c.oid::regclass::text FROM pg_class AS c
        WHERE c.relnamespace = 'mailroom'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
          AND (has_table_privilege('public', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
               OR (c.relkind = 'S' AND has_sequence_privilege('public', c.oid, 'USAGE')))
        UNION ALL
        SELECT 'schema' WHERE has_schema_privilege('public', 'mailroom', 'USAGE')
        """
    ).fetchall()
    assert granted == []
    with psycopg.connect(login_as(None), autocommit=True) as stranger:
        for statement in (
            "SELECT mailroom.enqueue(ARRAY['a@example.com'], subject => 's', body_text => 'b')",
            "SELECT * FROM mailroom.message_status(1)",
            "SELECT mailroom.grant_roles()",
            "SELECT mailroom.grants_0008()",
            "SELECT count(*) FROM mailroom.accounts",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                stranger.execute(statement)


# -- idempotency keys belong to one application ------------------------------------------


def test_one_application_cannot_take_or_probe_another_applications_key(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    shop, billing = login_as("mailroom_app"), login_as("mailroom_app")
    with psycopg.connect(shop, autocommit=True) as a, psycopg.connect(billing) as b:
        # billing pre-takes the key shop is going to use
        squatted = mailroom.enqueue(b, "x@example.com", subject="S", text="t", idempotency_key="k")
        b.commit()
        mine = mailroom.enqueue(a, "ann@example.com", subject="S", text="t", idempotency_key="k")
        assert mine != squatted
        # shop's repeat still returns its own message; billing's returns billing's
        again = {"subject": "S", "text": "t", "idempotency_key": "k"}
        assert mailroom.enqueue(a, "ann@example.com", **again) == mine
        assert mailroom.enqueue(b, "x@example.com", **again) == squatted
        b.commit()
        # the same key on another queue is another message
        other_queue = mailroom.enqueue(
            a, "ann@example.com", subject="S", text="t", idempotency_key="k", queue="bulk"
        )
        assert other_queue not in (mine, squatted)
        # status: an application reads its own messages only
        assert a.execute("SELECT status FROM mailroom.message_status(%s)", [mine]).fetchone()
        assert a.execute("SELECT * FROM mailroom.message_status(%s)", [squatted]).fetchone() is None
    rows = conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone()
    assert rows == (3,)


def test_keys_of_messages_enqueued_before_the_upgrade_match_no_one(
    bare_db: str, login_as: Callable[..., str]
) -> None:
    with psycopg.connect(bare_db, autocommit=True) as conn:
        _apply_up_to(conn, 7, ())
        old = mailroom.enqueue(conn, "a@example.com", subject="S", text="t", idempotency_key="k")
        migrate.migrate(conn, channel="token_insert")
        row = conn.execute("SELECT enqueued_by FROM mailroom.outbox WHERE id = %s", [old])
        assert row.fetchone() == (None,)
    with psycopg.connect(login_as("mailroom_app", db=bare_db), autocommit=True) as app:
        new = mailroom.enqueue(app, "a@example.com", subject="S", text="t", idempotency_key="k")
        assert new != old


# -- a message in "sending" always has a lease ------------------------------------------


def test_a_row_in_sending_without_a_lease_is_refused(conn: psycopg.Connection[Any]) -> None:
    i = mailroom.enqueue(conn, "a@example.com", subject="S", text="t")
    with pytest.raises(errors.CheckViolation, match="outbox_sending_has_lease"):
        conn.execute("UPDATE mailroom.outbox SET status = 'sending' WHERE id = %s", [i])
    with pytest.raises(errors.CheckViolation, match="outbox_sending_has_lease"):
        conn.execute(
            "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status)"
            " VALUES ('{a@example.com}', 's', 'b', 'sending')"
        )


def test_lease_less_sending_rows_of_an_old_install_are_reclaimed(bare_db: str) -> None:
    with psycopg.connect(bare_db, autocommit=True) as conn:
        _apply_up_to(conn, 7, ())
        i = mailroom.enqueue(conn, "a@example.com", subject="S", text="t")
        conn.execute("UPDATE mailroom.outbox SET status = 'sending' WHERE id = %s", [i])
        migrate.migrate(conn, channel="token_insert")
        outbox = conn.execute(
            "SELECT status, locked_until <= now() FROM mailroom.outbox WHERE id = %s", [i]
        ).fetchone()
        assert outbox == ("sending", True)  # an expired lease: the next reaper takes it
        conn.execute(migrate.query("reap_expired"), {"queue": "user_action_queue", "owner": "test"})
        row = conn.execute("SELECT status FROM mailroom.outbox WHERE id = %s", [i]).fetchone()
        assert row == ("retrying",)
