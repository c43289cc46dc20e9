"""Attacks through schema public: overloads planted there by a login that can only CREATE
in public, aimed at the operators and functions mailroom's schema binds when it is created.

PostgreSQL binds a CHECK constraint's, a column default's and a SQL-standard function
body's operators and functions at CREATE time, with the creating session's search_path; an
exact-type match in a schema searched before pg_catalog wins over pg_catalog's (which may
need an implicit cast). Run as the superuser with ``search_path = public, pg_catalog`` (the
worst case an operator's session may have), the old runner bound mailroom's schema to the
attacker's code for good: every later insert ran it, as whoever inserted, and every
recovery code became 00000. Each planted function records ``current_user`` in a table the
attacker owns (INSERT granted to PUBLIC); a row there is a successful attack.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from conftest import all_final, wait_for
from mailroom import client, migrate, outbox
from mailroom.cli import commands as cli
from mailroom.cli import common

UNSAFE_PATH = "public, pg_catalog"
OLD_CORE, OLD_LIFECYCLE = 13, 1002  # the migrations the unsafe runner applied

# Exact-type overloads of what the schema uses: `factor > 0 AND factor <= 1` (0011, float8
# against int4 literals), `bigint % 100000` in new_token_code (lifecycle 1001), length(text)
# in many CHECKs, octet_length(bytea) on token secrets, now() in column defaults.
PLANTS = """
CREATE TABLE public.sightings (who text NOT NULL, via text NOT NULL);
GRANT INSERT ON public.sightings TO PUBLIC;

CREATE FUNCTION public.planted_gt(a float8, b int4) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'float8 > int4');
    RETURN a > b::float8;
END $$;
CREATE OPERATOR public.> (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.planted_gt);

CREATE FUNCTION public.planted_le(a float8, b int4) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'float8 <= int4');
    RETURN a <= b::float8;
END $$;
CREATE OPERATOR public.<= (LEFTARG = float8, RIGHTARG = int4, FUNCTION = public.planted_le);

CREATE FUNCTION public.planted_mod(a int8, b int4) RETURNS int8
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'int8 % int4');
    RETURN 0;
END $$;
CREATE OPERATOR public.% (LEFTARG = int8, RIGHTARG = int4, FUNCTION = public.planted_mod);

CREATE FUNCTION public.length(t text) RETURNS int4
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'length(text)');
    RETURN pg_catalog.length(t);
END $$;

CREATE FUNCTION public.octet_length(b bytea) RETURNS int4
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'octet_length(bytea)');
    RETURN pg_catalog.octet_length(b);
END $$;

CREATE FUNCTION public.now() RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'now()');
    RETURN pg_catalog.now();
END $$;
"""

# mailroom objects (constraints, defaults, function bodies, indexes, views) that depend on
# a function or operator in public; the attacker's operators depending on its own
# functions are not a binding.
BOUND_TO_PUBLIC = """
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
    || ' -> ' || pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
FROM pg_catalog.pg_depend d
LEFT JOIN pg_catalog.pg_proc p
    ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid
LEFT JOIN pg_catalog.pg_operator o
    ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND o.oid = d.refobjid
WHERE 'public'::pg_catalog.regnamespace IN (p.pronamespace, o.oprnamespace)
  AND d.classid <> 'pg_catalog.pg_operator'::pg_catalog.regclass
ORDER BY 1
"""


@dataclass(frozen=True)
class Planted:
    admin: str  # superuser DSN of a fresh, empty database with the plants in public
    attacker: str  # the login that planted them


@pytest.fixture
def planted(pg_admin_dsn: str) -> Iterator[Planted]:
    """An empty database (not the migrated template) and a login that can only CREATE in
    its schema public, whose plants are in place."""
    from conftest import _drop, _with_db  # noqa: PLC0415

    name = f"t_{uuid.uuid4().hex[:12]}"
    role = f"u_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    dsn = _with_db(pg_admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role))
            )
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as attacker:
            attacker.execute(PLANTS)
        yield Planted(admin=dsn, attacker=role)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(_drop(name))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _unsafe_session(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(sql.SQL("SET search_path = {}").format(sql.SQL(UNSAFE_PATH)))
    return conn


def _sightings(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT DISTINCT who, via FROM public.sightings ORDER BY 1, 2")
    return [(str(who), str(via)) for who, via in rows.fetchall()]


def _recovery_codes(conn: psycopg.Connection[Any], n: int) -> list[str]:
    """Codes of ``n`` new tokens: each provisioned account gets an activation token, then
    a password recovery token is asked for it."""
    for i in range(n):
        conn.execute(
            "INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s)",
            (f"user{i}", f"user{i}@example.com"),
        )
    conn.execute(
        "INSERT INTO mailroom.tokens (account_id, action)"
        " SELECT id, 'password_recovery' FROM mailroom.accounts"
    )
    # where the codes are kept: mailroom.tokens before lifecycle 1003, message_tokens since
    since_1003 = conn.execute("SELECT to_regclass('mailroom.message_tokens')").fetchone()
    rows = conn.execute(
        "SELECT code FROM mailroom.message_tokens WHERE action = 'password_recovery'"
        if since_1003 and since_1003[0] is not None
        else "SELECT code FROM mailroom.tokens WHERE action = 'password_recovery'"
    )
    return [str(code) for (code,) in rows.fetchall()]


def test_the_old_runner_binds_the_schema_to_the_plants(planted: Planted) -> None:
    """What migrate did before: each migration's text run in the caller's session, here
    with public first. The attack must work, or the next test proves nothing."""
    with _unsafe_session(planted.admin) as conn:
        conn.execute(migrate.query("migrations_bootstrap"))
        for m in migrate.available(("lifecycle",)):
            if m.version <= OLD_CORE or 1000 < m.version <= OLD_LIFECYCLE:
                with conn.transaction():
                    conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
        bound = [str(b) for (b,) in conn.execute(BOUND_TO_PUBLIC).fetchall()]
        codes = _recovery_codes(conn, 5)
        seen = _sightings(conn)
        superuser = conn.info.user
    assert any("rate_buckets_factor_in_0_1" in b for b in bound), bound
    assert any("new_token_code" in b for b in bound), bound
    assert codes == ["00000"] * 5
    assert (superuser, "int8 % int4") in seen
    assert (superuser, "now()") in seen


def test_migrate_binds_only_pg_catalog_whatever_the_callers_path(planted: Planted) -> None:
    with _unsafe_session(planted.admin) as conn:
        applied = migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",))
        assert applied, "a fresh database gets every migration"
        # the caller's session is given back as it was
        assert conn.execute("SHOW search_path").fetchone() == (UNSAFE_PATH,)
        bound = [str(b) for (b,) in conn.execute(BOUND_TO_PUBLIC).fetchall()]
        codes = _recovery_codes(conn, 5)
        # the constraints run on every write: exercise the rate buckets' too
        conn.execute(
            "INSERT INTO mailroom.rate_buckets (name, tokens, factor)"
            " VALUES ('b', 1::pg_catalog.float8, 0.5::pg_catalog.float8)"
        )
        seen = _sightings(conn)
        # a second migrate (nothing pending: only the bookkeeping and the grants) is safe too
        assert migrate.migrate(conn, channel="mailroom_outbox", modules=("lifecycle",)) == []
        seen += _sightings(conn)
    assert bound == []
    assert seen == []
    assert len(set(codes)) > 1, codes


def test_connections_mailroom_opens_get_the_safe_path(planted: Planted) -> None:
    """A login whose default path puts public first (ALTER ROLE ... SET) still gets only
    pg_catalog and pg_temp on the connections mailroom opens itself."""
    with psycopg.connect(planted.admin, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(planted.attacker)
            )
        )
    dsn = make_conninfo(planted.admin, user=planted.attacker)
    with psycopg.connect(dsn, autocommit=True) as plain:
        assert plain.execute("SHOW search_path").fetchone() == (UNSAFE_PATH,)
    with outbox.connect(dsn) as conn:
        assert conn.execute("SHOW search_path").fetchone() == (migrate.SAFE_PATH,)
        # the unqualified now() a query might use is pg_catalog's, not the plant
        conn.execute("SELECT now()")
        assert _sightings(conn) == []


def test_the_cli_connection_gets_the_safe_path(
    planted: Planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILROOM_DATABASE_URL", planted.admin)
    with psycopg.connect(planted.admin, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(admin.info.dbname)
            )
        )
    with common.connect(common.load()) as conn:
        assert conn.execute("SHOW search_path").fetchone() == (migrate.SAFE_PATH,)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_configure_callback_sets_the_safe_path(planted: Planted) -> None:
    dsn = make_conninfo(planted.admin, user=planted.attacker)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path = {}").format(sql.SQL(UNSAFE_PATH)))
        await outbox.secure_session_async(conn)
        cur = await conn.execute("SHOW search_path")
        assert await cur.fetchone() == (migrate.SAFE_PATH,)


def test_the_daemon_never_runs_a_plant(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any, login_as: Any
) -> None:
    """The daemon's queries call now() unqualified; with public first on its login's path
    (an administrator's ALTER ROLE) a planted public.now() would run as the daemon on every
    claim, unless the daemon's own connections (pool and LISTEN) set the safe path."""
    attacker = login_as(None)
    role = psycopg.conninfo.conninfo_to_dict(attacker)["user"]
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    with psycopg.connect(attacker, autocommit=True) as planting:
        planting.execute(PLANTS)
    try:
        _daemon_sends(conn, spawn, login_as)
    finally:  # the login_as fixture drops the role: its objects go first
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))


def _daemon_sends(conn: psycopg.Connection[Any], spawn: Any, login_as: Any) -> None:
    daemon_dsn = login_as("mailroom_daemon")
    daemon_role = psycopg.conninfo.conninfo_to_dict(daemon_dsn)["user"]
    conn.execute(
        sql.SQL("ALTER ROLE {} SET search_path = public, pg_catalog").format(
            sql.Identifier(daemon_role)
        )
    )
    for to in ("a@example.com", "b@example.com"):
        client.enqueue(conn, to, subject="S", text="x")
    daemon = spawn(MAILROOM_DATABASE_URL=daemon_dsn)
    daemon.wait_listening()
    wait_for(lambda: all_final(conn, 2))
    assert _sightings(conn) == []


def test_the_operator_commands_and_the_console_run_no_plant(
    planted: Planted, login_as: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The on-call's own session is the worst case: the database's default path puts public
    first, and every read-only command and console page runs against a migrated schema
    while the attacker's overloads wait in public. The CLI's and the console's connections
    set the safe path, so none of them runs."""
    from console_harness import AUTH, PASSWORD, USER, Console, _request  # noqa: PLC0415

    with psycopg.connect(planted.admin, autocommit=True) as admin:
        migrate.migrate(admin, channel="token_insert", modules=("lifecycle",))
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(admin.info.dbname)
            )
        )
        sent = client.enqueue(admin, "ann@example.com", subject="s", text="t")
        admin.execute("UPDATE mailroom.outbox SET status = 'dead', last_error = 'x: y'")
        admin.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('ann', 'a@ex.com')")
        admin.execute("TRUNCATE public.sightings")  # the writes above are not the point
    operator = login_as("mailroom_operator", db=planted.admin)
    commands = [
        ["status"], ["status", "--json"], ["queues"], ["stats"], ["dead", "list"],
        ["find", "--to", "ann@example.com"], ["find", "--status", "dead", "--json"],
        ["show", str(sent)], ["suppression", "list"], ["check", "--schema"],
    ]  # fmt: skip
    for command in commands:
        assert cli.main(["--dsn", operator, *command]) == 0, command
    out = capsys.readouterr().out
    assert "example.com" in out  # find and show found the message (masked)
    assert "no messages match" not in out
    server = Console(operator, tmp_path, MAILROOM_WEB_USER=USER, MAILROOM_WEB_PASSWORD=PASSWORD)
    try:
        for page in ("/", "/messages?q=ann%40example.com", f"/messages/{sent}"):
            status, body = _request(server.url + page, headers={"Authorization": AUTH})
            assert status == 200, (page, body[:300])
    finally:
        server.stop()
    with psycopg.connect(planted.admin, autocommit=True) as admin:
        assert _sightings(admin) == []
        # the control: the same session path does bind an unqualified call to the plant
        admin.execute("SELECT now()")
        assert _sightings(admin) != []
