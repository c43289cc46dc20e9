"""The catalog says what mailroom's objects are bound to.

A CHECK constraint, default, index expression, view, trigger WHEN clause, policy and
SQL-standard function body bind their operators and functions at CREATE time. A fresh
install binds nothing outside pg_catalog and mailroom; an install the old migrate runner
built while plants sat in public (tests/test_planted_public.py) is bound to them, `mailroom
check --schema` says so, and migration 0024 (lifecycle 1005) rebuilds it, data kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import test_planted_public
from mailroom import client, migrate
from mailroom.cli import commands as cli
from mailroom.operator import schema_check
from test_planted_public import Planted, _recovery_codes, _sightings, _unsafe_session

planted = test_planted_public.planted  # the fixture: an empty database with the plants

REBUILD_CORE, REBUILD_LIFECYCLE = 24, 1005  # the rebuild; the old runner applied the rest


def _old_runner(dsn: str) -> None:
    """What migrate did before: every migration up to the rebuild run in the caller's
    session, here with public first; recorded, so that the new migrate carries on."""
    with _unsafe_session(dsn) as conn:
        conn.execute(migrate.query("migrations_bootstrap"))
        for m in migrate.available(("lifecycle",)):
            if m.version < REBUILD_CORE or 1000 < m.version < REBUILD_LIFECYCLE:
                with conn.transaction():
                    conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
                    record = {"version": m.version, "name": m.name, "checksum": m.checksum}
                    conn.execute(migrate.query("migrations_record"), record)


def _check(dsn: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["--dsn", dsn, "check", "--schema", *extra])
    return code, capsys.readouterr().out


def test_a_fresh_install_binds_nothing_outside_pg_catalog(conn: psycopg.Connection[Any]) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    assert schema_check.bindings(conn) == []
    # and the rebuild has nothing to do (its effect on a clean install is none)
    assert conn.execute("SELECT mailroom.rebind_to_catalog()").fetchone() == (0,)


def test_the_old_runner_leaves_bindings_the_query_finds(planted: Planted) -> None:
    """The query can fail: on the old runner's install it names the bound objects."""
    _old_runner(planted.admin)
    with psycopg.connect(planted.admin, autocommit=True) as conn:
        conn.execute(migrate.query("safe_search_path"))
        found = schema_check.bindings(conn)
    assert (
        "constraint rate_buckets_factor_in_0_1 on table mailroom.rate_buckets",
        "operator public.>(double precision,integer)",
    ) in found
    assert ("function mailroom.new_token_code()", "operator public.%(bigint,integer)") in found
    assert (
        "constraint accounts_login_1_to_255_chars on table mailroom.accounts",
        "function public.length(text)",
    ) in found
    assert (
        "default value for column created_at of table mailroom.outbox",
        "function public.now()",
    ) in found


def _data(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]  # static test SQL

    return {
        "messages": rows(
            "SELECT id, to_addresses, status, created_at FROM mailroom.outbox ORDER BY id"
        ),
        "accounts": rows("SELECT id, login, email, created_at FROM mailroom.accounts ORDER BY id"),
        "tokens": rows(
            "SELECT id, account_id, secret_hash, expires_at FROM mailroom.tokens ORDER BY id"
        ),
        "buckets": rows("SELECT name, tokens, factor FROM mailroom.rate_buckets ORDER BY name"),
    }


def _new_recovery_codes(conn: psycopg.Connection[Any], n: int) -> list[str]:
    """Codes of ``n`` recovery tokens for new accounts (after _recovery_codes' ones)."""
    codes = []
    for i in range(n):
        account = conn.execute(
            "INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s) RETURNING id",
            (f"later{i}", f"later{i}@example.com"),
        ).fetchone()
        assert account is not None
        token = conn.execute(
            "INSERT INTO mailroom.tokens (account_id, action)"
            " VALUES (%s, 'password_recovery') RETURNING id",
            account,
        ).fetchone()
        assert token is not None
        row = conn.execute(  # the code is kept beside its email only (0019)
            "SELECT m.code FROM mailroom.message_tokens AS m"
            " JOIN mailroom.outbox AS o ON o.id OPERATOR(pg_catalog.=) m.message_id"
            " WHERE o.idempotency_key OPERATOR(pg_catalog.=) %s",
            (f"mailroom-token:{token[0]}",),
        ).fetchone()
        assert row is not None
        codes.append(str(row[0]))
    return codes


def test_upgrade_rebuilds_a_poisoned_install_and_keeps_its_data(
    planted: Planted, capsys: pytest.CaptureFixture[str], login_as: Callable[..., str]
) -> None:
    _old_runner(planted.admin)
    with _unsafe_session(planted.admin) as conn:
        old_codes = _recovery_codes(conn, 3)
        client.enqueue(conn, "someone@example.com", subject="kept", text="x")
        conn.execute(
            "INSERT INTO mailroom.rate_buckets (name, tokens, factor)"
            " VALUES ('kept', 1::pg_catalog.float8, 0.5::pg_catalog.float8)"
        )
        assert old_codes == ["00000"] * 3  # the attack worked on the old install
        before = _data(conn)
    operator = login_as("mailroom_operator", db=planted.admin)

    code, out = _check(operator, capsys)  # the operator may read what check reads
    assert code == 1, out
    assert (
        "mailroom function mailroom.new_token_code() depends on operator public.%(bigint,integer)"
        in out
    )
    assert "mailroom migrate" in out
    code, out = _check(planted.admin, capsys, "--json")
    document = json.loads(out)
    assert code == 1
    assert document["ok"] is False
    assert document["fix"]
    assert {  # (tokens' octet_length CHECK went with its column in lifecycle 1003)
        "object": "constraint accounts_login_1_to_255_chars on table mailroom.accounts",
        "depends_on": "function public.length(text)",
    } in document["bindings"]

    with _unsafe_session(planted.admin) as conn:  # the new migrate, from the same bad session
        conn.execute("TRUNCATE public.sightings")
        applied = migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        versions = [m.version for m in applied]  # the rebuilds, and any later core migration
        assert versions[0] == REBUILD_CORE
        assert REBUILD_LIFECYCLE in versions
        assert all(v > REBUILD_CORE for v in versions[1:])
        # deparsing the bound objects and re-validating every row ran no plant as superuser
        assert _sightings(conn) == []
        assert _data(conn) == before  # messages, accounts, tokens, buckets kept as they were
        new_codes = _new_recovery_codes(conn, 5)
        client.enqueue(conn, "other@example.com", subject="after", text="x")
        conn.execute(
            "INSERT INTO mailroom.rate_buckets (name, tokens, factor)"
            " VALUES ('after', 1::pg_catalog.float8, 1::pg_catalog.float8)"
        )
        # the rebuilt constraints still refuse what they refused
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO mailroom.rate_buckets (name, tokens, factor)"
                " VALUES ('bad', 1::pg_catalog.float8, 2::pg_catalog.float8)"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO mailroom.accounts (login, email) VALUES ('', 'e@example.com')"
            )
        # a token issued before the upgrade still works: consuming it activates its account
        conn.execute(
            "UPDATE mailroom.tokens SET consumed_at = pg_catalog.now()"
            " WHERE action = 'activation' AND account_id = %s",
            (before["accounts"][0][0],),
        )
        assert conn.execute(
            "SELECT status::text FROM mailroom.accounts WHERE id = %s", (before["accounts"][0][0],)
        ).fetchone() == ("active",)
        assert _sightings(conn) == []  # no write called a plant
    assert len(set(new_codes)) > 1, new_codes
    assert _check(operator, capsys) == (
        0,
        "schema: nothing in mailroom depends on an object outside pg_catalog and mailroom\n",
    )
    code, out = _check(operator, capsys, "--json", "--dsn", operator)  # --dsn after, too
    assert code == 0
    assert json.loads(out) == {"ok": True, "bindings": [], "fix": None}


def test_the_rebuild_deparses_no_plant_back_in(planted: Planted) -> None:
    """The rebuild reads each definition back from the catalog: what it re-creates must
    bind pg_catalog's operators, not print the plant qualified and bind it again."""
    _old_runner(planted.admin)
    with psycopg.connect(planted.admin, autocommit=True) as conn:
        migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        conn.execute(migrate.query("safe_search_path"))
        definition = conn.execute(
            "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint"
            " WHERE conname = 'rate_buckets_factor_in_0_1'"
        ).fetchone()
        body = conn.execute(
            "SELECT pg_catalog.pg_get_functiondef("
            "'mailroom.new_token_code()'::pg_catalog.regprocedure)"
        ).fetchone()
    assert definition is not None
    assert body is not None
    assert "public" not in definition[0]
    assert "double precision" in definition[0]
    assert "public" not in body[0]
    assert "% (100000)::bigint" in body[0]


def test_check_schema_without_a_database_url_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILROOM_DATABASE_URL", raising=False)
    monkeypatch.delenv("MAILROOM_DATABASE_URL_FILE", raising=False)
    assert cli.main(["check", "--schema"]) == 2
    err = capsys.readouterr().err
    assert "MAILROOM_DATABASE_URL" in err
    assert "Traceback" not in err


def test_check_schema_on_an_empty_database_reports_nothing(
    pg_admin_dsn: str, planted: Planted, capsys: pytest.CaptureFixture[str]
) -> None:
    """No mailroom schema yet (plants only): nothing of mailroom's is bound, no traceback."""
    del pg_admin_dsn
    code, out = _check(make_conninfo(planted.admin), capsys)
    assert code == 0, out


# Objects of every kind the rebuild handles, created in the mailroom schema by the old
# runner's kind of session (public first): what 0019-0023, or an administrator, might have
# added. Each calls the planted length(text) (the index an IMMUTABLE plant: an index must);
# the trigger is disabled, the view has options.
IMMUTABLE_PLANT = """
CREATE FUNCTION public.upper(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    RETURN pg_catalog.upper(t);  -- (an immutable function may not write the sightings)
END $$;
"""
EVERY_KIND = """
CREATE DOMAIN mailroom.t_login AS text CONSTRAINT t_login_not_empty CHECK (length(VALUE) > 0);
CREATE TABLE mailroom.t_extra (
    login mailroom.t_login,
    n int4 NOT NULL DEFAULT length('four'),
    CONSTRAINT t_extra_short CHECK (length(login) < 100)
);
CREATE INDEX t_extra_by_length ON mailroom.t_extra (upper(login)) WHERE upper(login) > '';
CREATE VIEW mailroom.t_extra_view WITH (security_barrier = true) AS
    SELECT login, length(login) AS size FROM mailroom.t_extra;
CREATE FUNCTION mailroom.t_size(t text) RETURNS int4 LANGUAGE sql
    SET search_path = pg_catalog, pg_temp RETURN length(t);
CREATE FUNCTION mailroom.t_noop() RETURNS trigger LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER t_extra_noop BEFORE INSERT ON mailroom.t_extra
    FOR EACH ROW WHEN (length(NEW.login) > 2) EXECUTE FUNCTION mailroom.t_noop();
ALTER TABLE mailroom.t_extra DISABLE TRIGGER t_extra_noop;
CREATE POLICY t_extra_policy ON mailroom.t_extra
    USING (length(login) > 0) WITH CHECK (length(login) > 1);
INSERT INTO mailroom.t_extra (login) VALUES ('kept');
"""


def test_the_rebuild_handles_every_kind_of_bound_object(planted: Planted) -> None:
    _old_runner(planted.admin)
    with psycopg.connect(make_conninfo(planted.admin, user=planted.attacker)) as attacker:
        attacker.execute(IMMUTABLE_PLANT)
    with _unsafe_session(planted.admin) as conn:
        conn.execute(EVERY_KIND)
    with psycopg.connect(planted.admin, autocommit=True) as conn:
        conn.execute(migrate.query("safe_search_path"))
        before = {
            obj
            for obj, _ in schema_check.bindings(conn)
            if any(name in obj for name in ("t_extra", "t_login", "t_size"))
        }
        migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        after = schema_check.bindings(conn)
        conn.execute("TRUNCATE public.sightings")
        assert conn.execute("SELECT login, size FROM mailroom.t_extra_view").fetchall() == [
            ("kept", 4)
        ]
        conn.execute("INSERT INTO mailroom.t_extra (login) VALUES ('more')")
        assert conn.execute("SELECT mailroom.t_size('abc')").fetchone() == (3,)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO mailroom.t_extra (login) VALUES ('')")  # the domain's
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO mailroom.t_extra (login) VALUES (repeat('x', 200))")
        kept = conn.execute(
            "SELECT (SELECT reloptions FROM pg_catalog.pg_class"
            "        WHERE oid = 'mailroom.t_extra_view'::pg_catalog.regclass),"
            "       (SELECT tgenabled FROM pg_catalog.pg_trigger WHERE tgname = 't_extra_noop'),"
            "       (SELECT n FROM mailroom.t_extra WHERE login = 'more')"
        ).fetchone()
        seen = _sightings(conn)
    assert before == {
        "constraint t_login_not_empty",  # the domain's
        "constraint t_extra_short on table mailroom.t_extra",
        "default value for column n of table mailroom.t_extra",
        "index mailroom.t_extra_by_length",
        "rule _RETURN on view mailroom.t_extra_view",
        "function mailroom.t_size(text)",
        "trigger t_extra_noop on table mailroom.t_extra",
        "policy t_extra_policy on table mailroom.t_extra",
    }
    assert after == []
    assert seen == []
    assert kept == (["security_barrier=true"], "D", 4)


def test_what_the_rebuild_cannot_fix_stays_reported(
    planted: Planted, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column whose type is the attacker's cannot be re-created without rewriting the
    table: the migration leaves it, and check --schema keeps failing until it is fixed."""
    with psycopg.connect(make_conninfo(planted.admin, user=planted.attacker)) as attacker:
        attacker.execute("CREATE DOMAIN public.t_text AS pg_catalog.text")
    with psycopg.connect(planted.admin, autocommit=True) as conn:
        migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        conn.execute("CREATE TABLE mailroom.t_column (x public.t_text)")
        migrate.migrate(conn, channel="mailroom_outbox")
        assert conn.execute("SELECT mailroom.rebind_to_catalog()").fetchone() == (0,)
    code, out = _check(planted.admin, capsys)
    assert code == 1
    assert "column x of table mailroom.t_column depends on type public.t_text" in out


EQUALS_PLANT = """
CREATE FUNCTION public.planted_eq(a text, b text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
BEGIN
    RETURN a OPERATOR(pg_catalog.=) b;  -- (immutable, to get into the index predicates)
END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.planted_eq);
"""


def test_a_planted_text_equality_in_the_real_schema_is_rebuilt(planted: Planted) -> None:
    """`status IN (...)` in the outbox's CHECKs and partial indexes binds text = text: the
    real schema's indexes rebuilt (0017 already qualified outbox_forget_token's WHEN)."""
    with psycopg.connect(make_conninfo(planted.admin, user=planted.attacker)) as attacker:
        attacker.execute(EQUALS_PLANT)
    _old_runner(planted.admin)
    with psycopg.connect(planted.admin, autocommit=True) as conn:
        conn.execute(migrate.query("safe_search_path"))
        before = {obj for obj, dep in schema_check.bindings(conn) if "public.=" in dep}
        conn.execute("TRUNCATE public.sightings")
        migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        after = schema_check.bindings(conn)
        message = client.enqueue(conn, "a@example.com", subject="s", text="x")
        conn.execute("UPDATE mailroom.outbox SET status = 'dead' WHERE id = %s", (message,))
        due = conn.execute("SELECT count(*) FROM mailroom.outbox WHERE status = 'dead'").fetchone()
    assert {
        "index mailroom.outbox_dead",
        "index mailroom.outbox_due_by_time",
        "constraint outbox_status_known on table mailroom.outbox",
    } <= before, sorted(before)
    assert after == []
    assert due == (1,)
