"""One application cannot touch another's lifecycle accounts and tokens (issue 18, item 2).

Two applications are two login roles in the one `mailroom_app` group. Application A
provisions an account for its user Ann; application B, with every privilege the group
gives, tries to read Ann's token, take over her account (activate it, change its email and
ask for her recovery mail), mint a token of its own choosing for her, and consume the
token Ann received. Each attack succeeded before lifecycle 1004; each must now fail or do
nothing, with no email enqueued for it. A still does all of it for its own account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from mailroom import lifecycle, migrate, tokens
from mailroom.tokens import Action

KEY = bytes.fromhex("5e" * 32)
ANN = "ann@example.com"


@dataclass
class Apps:
    owner: psycopg.Connection[Any]  # the schema owner (a superuser here): sees every row
    a: psycopg.Connection[Any]
    b: psycopg.Connection[Any]
    ann: int  # A's account


def _mail_to(conn: psycopg.Connection[Any], address: str) -> list[str]:
    """Templates of the messages enqueued to ``address``, oldest first."""
    rows = conn.execute(
        "SELECT template FROM mailroom.outbox WHERE %s = ANY (to_addresses) ORDER BY id",
        [address],
    ).fetchall()
    return [str(template) for (template,) in rows]


def _issued(conn: psycopg.Connection[Any], account: int, action: str) -> tuple[bytes, str | None]:
    """The raw secret and code of the account's newest token, as only the daemon (and the
    superuser running the test) can read them: in message_tokens (0019), beside the
    email the token's trigger enqueued."""
    row = conn.execute(
        "SELECT m.secret, m.code FROM mailroom.tokens AS t"
        " JOIN mailroom.outbox AS o ON o.idempotency_key = 'mailroom-token:' || t.id"
        " JOIN mailroom.message_tokens AS m ON m.message_id = o.id"
        " WHERE t.account_id = %s AND t.action OPERATOR(pg_catalog.=) %s::mailroom.token_action"
        " ORDER BY t.id DESC LIMIT 1",  # qualified: a test below plants an enum "=" in public
        [account, action],
    ).fetchone()
    assert row is not None
    return bytes(row[0]), row[1]


def _secret(conn: psycopg.Connection[Any], account: int, action: str) -> bytes:
    return _issued(conn, account, action)[0]


def _provision(app: psycopg.Connection[Any], login: str, email: str) -> int:
    row = app.execute(
        "INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s) RETURNING id", [login, email]
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def apps(conn: psycopg.Connection[Any], login_as: Callable[..., str]) -> Iterator[Apps]:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    with (
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as a,
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as b,
    ):
        ann = _provision(a, "ann", ANN)
        assert _mail_to(conn, ANN) == ["activationv1"]
        yield Apps(conn, a, b, ann)


# -- the attacks -------------------------------------------------------------------------


def test_b_reads_none_of_as_accounts_or_tokens(apps: Apps) -> None:
    for table in ("accounts", "tokens"):
        query = sql.SQL("SELECT count(*) FROM mailroom.{}").format(sql.Identifier(table))
        assert apps.b.execute(query).fetchone() == (0,), f"B reads A's {table}"
    # not even through a join or by the secret it might have learnt elsewhere
    secret = _secret(apps.owner, apps.ann, "activation")
    found = apps.b.execute("SELECT count(*) FROM mailroom.tokens WHERE secret_hash = sha256(%s)",
                           [secret])  # fmt: skip
    assert found.fetchone() == (0,)


def test_b_cannot_change_as_account(apps: Apps) -> None:
    for change in ("email = 'mallory@evil.example'", "status = 'active'", "login = 'mallory'"):
        cur = apps.b.execute(
            sql.SQL("UPDATE mailroom.accounts SET {} WHERE id = %s").format(sql.SQL(change)),
            [apps.ann],
        )
        assert cur.rowcount == 0, f"B changed A's account: {change}"
    row = apps.owner.execute(
        "SELECT login, email, status::text FROM mailroom.accounts WHERE id = %s", [apps.ann]
    ).fetchone()
    assert row == ("ann", ANN, "provisioned")
    # the takeover's second step: B asks for the recovery mail of the address it wrote
    assert not lifecycle.request_password_recovery(apps.b, "mallory@evil.example")
    assert _mail_to(apps.owner, "mallory@evil.example") == []


def test_b_cannot_mint_a_token_for_as_account(apps: Apps) -> None:
    mine = bytes(range(32))
    with pytest.raises(psycopg.Error):
        apps.b.execute(
            "INSERT INTO mailroom.tokens (account_id, action, secret_hash, expires_at)"
            " VALUES (%s, 'password_recovery', sha256(%s), now() + interval '10 years')",
            [apps.ann, mine],
        )
    # nor one with mailroom's own secret, whose email would go to Ann with B's code path
    with pytest.raises(psycopg.Error):
        apps.b.execute(
            "INSERT INTO mailroom.tokens (account_id, action) VALUES (%s, 'password_recovery')",
            [apps.ann],
        )
    count = apps.owner.execute("SELECT count(*) FROM mailroom.tokens WHERE account_id = %s",
                               [apps.ann])  # fmt: skip
    assert count.fetchone() == (1,)
    assert _mail_to(apps.owner, ANN) == ["activationv1"]


def test_b_cannot_consume_the_token_as_user_received(apps: Apps) -> None:
    token = tokens.sign(KEY, Action.ACTIVATION, _secret(apps.owner, apps.ann, "activation"))
    refused = lifecycle.consume_token(apps.b, token, Action.ACTIVATION, [KEY])
    assert refused == lifecycle.Refused("unknown token")
    row = apps.owner.execute(
        "SELECT a.status::text, t.consumed_at FROM mailroom.accounts AS a"
        " JOIN mailroom.tokens AS t ON t.account_id = a.id WHERE a.id = %s",
        [apps.ann],
    ).fetchone()
    assert row == ("provisioned", None)
    # and the token still works for the application it belongs to
    assert isinstance(lifecycle.consume_token(apps.a, token, Action.ACTIVATION, [KEY]),
                      lifecycle.Consumed)  # fmt: skip


def test_b_cannot_request_as_users_recovery_mail(apps: Apps) -> None:
    apps.owner.execute("UPDATE mailroom.accounts SET status = 'active' WHERE id = %s", [apps.ann])
    for who in ("ann", ANN):
        assert not lifecycle.request_password_recovery(apps.b, who)
    assert _mail_to(apps.owner, ANN) == ["activationv1"]


def test_b_cannot_hand_its_account_to_a_or_take_one(apps: Apps) -> None:
    a_user = str(apps.a.execute("SELECT session_user").fetchone()[0])  # type: ignore[index]
    # an account in A's name, planted by B, would be mail A's users did not ask for
    with pytest.raises(errors.InsufficientPrivilege):
        apps.b.execute(
            "INSERT INTO mailroom.accounts (login, email, owner) VALUES ('eve', %s, %s)",
            ["eve@example.com", a_user],
        )
    assert _mail_to(apps.owner, "eve@example.com") == []
    bob = _provision(apps.b, "bob", "bob@example.com")
    with pytest.raises(errors.InsufficientPrivilege):
        apps.b.execute("UPDATE mailroom.accounts SET owner = %s WHERE id = %s", [a_user, bob])
    # the owner of an account is fixed, for the schema owner too (as outbox.enqueued_by)
    with pytest.raises(errors.InsufficientPrivilege):
        apps.owner.execute("UPDATE mailroom.accounts SET owner = %s WHERE id = %s", [a_user, bob])
    assert apps.a.execute(
        "SELECT count(*) FROM mailroom.accounts WHERE id = %s", [bob]
    ).fetchone() == (0,)


def test_b_learns_nothing_from_as_logins_and_addresses(apps: Apps) -> None:
    # B provisions its own user with Ann's login and address: no error tells it that A
    # has one, and A's user keeps hers
    bob_ann = _provision(apps.b, "ann", ANN)
    assert bob_ann != apps.ann
    assert apps.b.execute("SELECT id FROM mailroom.accounts").fetchall() == [(bob_ann,)]
    assert apps.a.execute("SELECT id FROM mailroom.accounts").fetchall() == [(apps.ann,)]
    # within one application a login and an address stay unique
    with pytest.raises(errors.UniqueViolation):
        _provision(apps.b, "ann", "other@example.com")
    with pytest.raises(errors.UniqueViolation):
        _provision(apps.b, "other", ANN)


def test_b_cannot_tell_as_account_ids_from_missing_ones(apps: Apps) -> None:
    answers = []
    for account in (apps.ann, 999_999):
        with pytest.raises(psycopg.Error) as refused:
            apps.b.execute(
                "INSERT INTO mailroom.tokens (account_id, action) VALUES (%s, 'activation')",
                [account],
            )
        error = refused.value
        primary = str(error.diag.message_primary)
        answers.append((error.sqlstate, primary.replace(f" {account} ", " N ")))
    assert answers[0] == answers[1]
    assert answers[0][0] == "23503"  # foreign_key_violation, "no account N of yours"


def test_the_triggers_act_only_on_the_callers_rows(apps: Apps) -> None:
    # B's own account and token, then everything its grants let it write, table-wide:
    # consuming fires token_consumed (activates the token's account), an account update
    # fires account_status_changed, a token insert fires token_created (enqueues mail)
    bob = _provision(apps.b, "bob", "bob@example.com")
    assert apps.b.execute("UPDATE mailroom.tokens SET consumed_at = now()").rowcount == 1
    assert apps.b.execute("UPDATE mailroom.accounts SET status = 'active'").rowcount == 1
    inserted = apps.b.execute(
        "INSERT INTO mailroom.tokens (account_id, action)"
        " SELECT id, 'password_recovery' FROM mailroom.accounts"
    )
    assert inserted.rowcount == 1
    rows = apps.owner.execute(
        "SELECT id, status::text FROM mailroom.accounts ORDER BY id"
    ).fetchall()
    assert rows == [(apps.ann, "provisioned"), (bob, "active")]
    consumed = apps.owner.execute(
        "SELECT account_id FROM mailroom.tokens WHERE consumed_at IS NOT NULL"
    ).fetchall()
    assert consumed == [(bob,)]
    assert _mail_to(apps.owner, ANN) == ["activationv1"]
    assert _mail_to(apps.owner, "bob@example.com") == ["activationv1", "passwordrecoveryv1"]


def test_recovery_by_a_role_that_bypasses_the_policies_touches_only_its_own(
    apps: Apps,
) -> None:
    # A and B each have a user "ann"; the schema owner (not subject to row-level security)
    # asking for "ann" must not mail both, nor either: neither account is its own
    bob_ann = _provision(apps.b, "ann", ANN)
    activate = "UPDATE mailroom.accounts SET status = 'active' WHERE id = ANY (%s)"
    apps.owner.execute(activate, [[apps.ann, bob_ann]])
    assert not lifecycle.request_password_recovery(apps.owner, "ann")
    assert not lifecycle.request_password_recovery(apps.owner, ANN)
    assert _mail_to(apps.owner, ANN) == ["activationv1", "activationv1"]
    assert lifecycle.request_password_recovery(apps.b, "ann")
    assert _mail_to(apps.owner, ANN) == ["activationv1", "activationv1", "passwordrecoveryv1"]


def test_the_async_helpers_are_confined_the_same_way(apps: Apps) -> None:
    token = tokens.sign(KEY, Action.ACTIVATION, _secret(apps.owner, apps.ann, "activation"))
    apps.owner.execute("UPDATE mailroom.accounts SET status = 'active' WHERE id = %s", [apps.ann])
    b_dsn = psycopg.conninfo.make_conninfo(apps.b.info.dsn)

    async def as_b() -> tuple[Any, bool]:
        async with await psycopg.AsyncConnection.connect(b_dsn, autocommit=True) as b:
            refused = await lifecycle.consume_token_async(b, token, Action.ACTIVATION, [KEY])
            return refused, await lifecycle.request_password_recovery_async(b, "ann")

    assert asyncio.run(as_b()) == (lifecycle.Refused("unknown token"), False)
    assert _mail_to(apps.owner, ANN) == ["activationv1"]


# -- what the owning application still does -----------------------------------------------


def test_a_does_all_of_it_for_its_own_account(apps: Apps) -> None:
    a = apps.a
    assert a.execute("SELECT id, login FROM mailroom.accounts").fetchall() == [(apps.ann, "ann")]
    assert a.execute("SELECT count(*) FROM mailroom.tokens").fetchone() == (1,)
    token = tokens.sign(KEY, Action.ACTIVATION, _secret(apps.owner, apps.ann, "activation"))
    assert lifecycle.consume_token(a, token, Action.ACTIVATION, [KEY]) == lifecycle.Consumed(
        apps.ann
    )
    assert a.execute("SELECT status::text FROM mailroom.accounts").fetchone() == ("active",)
    # it owns its accounts: it may change their email, and the recovery goes there
    a.execute("UPDATE mailroom.accounts SET email = 'ann@new.example' WHERE id = %s", [apps.ann])
    assert lifecycle.request_password_recovery(a, "ann@new.example")
    assert _mail_to(apps.owner, "ann@new.example") == ["passwordrecoveryv1"]
    recovery, issued_code = _issued(apps.owner, apps.ann, "password_recovery")
    assert issued_code is not None
    code = (issued_code,)
    signed = tokens.sign(KEY, Action.PASSWORD_RECOVERY, recovery, code=code[0])
    consumed = lifecycle.consume_token(a, signed, Action.PASSWORD_RECOVERY, [KEY], code=code[0])
    assert consumed == lifecycle.Consumed(apps.ann)
    # a used link stays used: the token cannot be made unconsumed again
    with pytest.raises(errors.InsufficientPrivilege):
        a.execute("UPDATE mailroom.tokens SET consumed_at = NULL")
    assert lifecycle.consume_token(
        a, signed, Action.PASSWORD_RECOVERY, [KEY], code=code[0]
    ) == lifecycle.Refused("already consumed")
    # and it may suspend its user
    a.execute("UPDATE mailroom.accounts SET status = 'suspended' WHERE id = %s", [apps.ann])


def test_a_cannot_choose_its_own_tokens_secret_or_lifetime_either(apps: Apps) -> None:
    for column, value in (
        ("secret_hash", "sha256('\\x" + "00" * 32 + "'::bytea)"),
        ("created_at", "now() + interval '10 years'"),
        ("expires_at", "now() + interval '10 years'"),
        ("consumed_at", "NULL"),
    ):
        statement = sql.SQL(
            "INSERT INTO mailroom.tokens (account_id, action, {}) VALUES (%s, 'activation', {})"
        ).format(sql.Identifier(column), sql.SQL(value))
        with pytest.raises(errors.InsufficientPrivilege):
            apps.a.execute(statement, [apps.ann])
    # nor stretch one afterwards: consuming is the one change an application makes
    for column in ("expires_at", "secret_hash", "account_id", "created_at"):
        statement = sql.SQL("UPDATE mailroom.tokens SET {} = {}").format(
            sql.Identifier(column), sql.Identifier(column)
        )
        with pytest.raises(errors.InsufficientPrivilege):
            apps.a.execute(statement)
    assert _mail_to(apps.owner, ANN) == ["activationv1"]


# -- the upgrade of an installation from before 1004 --------------------------------------


def _lifecycle_before_1004(conn: psycopg.Connection[Any]) -> None:
    """The lifecycle module at its head before this change, applied as migrate does."""
    for m in migrate.available(("lifecycle",)):
        if 1000 < m.version < 1004:
            with conn.transaction():
                conn.execute(migrate.query("search_path_set"),
                             {"path": migrate.SAFE_PATH, "local": True})  # fmt: skip
                conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
                record = {"version": m.version, "name": m.name, "checksum": m.checksum}
                conn.execute(migrate.query("migrations_record"), record)
    conn.execute(migrate.query("grant_roles"))


def _token(conn: psycopg.Connection[Any], account: int) -> str:
    return tokens.sign(KEY, Action.ACTIVATION, _secret(conn, account, "activation"))


def test_upgrade_gives_each_application_exactly_its_own(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    _lifecycle_before_1004(conn)
    a_dsn, b_dsn = login_as("mailroom_app"), login_as("mailroom_app")
    with psycopg.connect(a_dsn, autocommit=True) as a, psycopg.connect(b_dsn, autocommit=True) as b:
        ann, cy = _provision(a, "ann", ANN), _provision(a, "cy", "cy@example.com")
        bob = _provision(b, "bob", "bob@example.com")
        # provisioned by B, but its activation message is gone (pruned, say): its token
        # waits for the schema owner's assignment with it
        fay = _provision(b, "fay", "fay@example.com")
        # created active: no activation token, so nothing to derive its owner from
        dee = a.execute(
            "INSERT INTO mailroom.accounts (login, email, status)"
            " VALUES ('dee', 'dee@example.com', 'active') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        # before 1004 B could do this: a recovery token on A's account (it stays A's) and
        # a forged copy of the message of A's activation token, under its idempotency key,
        # hoping the upgrade takes it for the provisioning one and gives Ann to B
        b.execute("INSERT INTO mailroom.tokens (account_id, action) VALUES (%s, 'activation')",
                  [cy])  # fmt: skip
        ann_token = conn.execute(
            "SELECT min(id) FROM mailroom.tokens WHERE account_id = %s", [ann]
        ).fetchone()[0]  # type: ignore[index]
        b.execute(
            "SELECT mailroom.enqueue(ARRAY[%s], subject => 's', body_text => 'b',"
            " idempotency_key => %s)",
            [ANN, f"mailroom-token:{ann_token}"],
        )

    fay_token = _token(conn, fay)  # read before its message (and so its secret) goes
    conn.execute("DELETE FROM mailroom.outbox WHERE %s = ANY (to_addresses)", ["fay@example.com"])
    applied = [m.version for m in migrate.migrate(conn, channel="token_insert")]
    assert 1004 in applied

    with psycopg.connect(a_dsn, autocommit=True) as a, psycopg.connect(b_dsn, autocommit=True) as b:
        seen_a = a.execute("SELECT id FROM mailroom.accounts ORDER BY id").fetchall()
        assert seen_a == [(ann,), (cy,)]
        assert b.execute("SELECT id FROM mailroom.accounts").fetchall() == [(bob,)]
        tokens_a = a.execute("SELECT DISTINCT account_id FROM mailroom.tokens ORDER BY 1")
        assert tokens_a.fetchall() == [(ann,), (cy,)]
        assert b.execute("SELECT account_id FROM mailroom.tokens").fetchall() == [(bob,)]
        # each consumes its own, and not the other's
        assert lifecycle.consume_token(b, _token(conn, ann), Action.ACTIVATION, [KEY]) == (
            lifecycle.Refused("unknown token")
        )
        for app, account in ((a, ann), (b, bob)):
            consumed = lifecycle.consume_token(app, _token(conn, account), Action.ACTIVATION, [KEY])
            assert consumed == lifecycle.Consumed(account)
        # B's token on cy is cy's, so A's
        b_on_cy = conn.execute(
            "SELECT DISTINCT owner FROM mailroom.tokens WHERE account_id = %s", [cy]
        ).fetchall()
        assert b_on_cy == [(a.info.user,)]

        # the account whose owner could not be derived is nobody's until assigned
        assert conn.execute("SELECT owner FROM mailroom.accounts WHERE id = %s",
                            [dee]).fetchone() == (None,)  # fmt: skip
        assert not lifecycle.request_password_recovery(a, "dee")
        assert not lifecycle.request_password_recovery(b, "dee")
        assert _mail_to(conn, "dee@example.com") == []
        assign = "SELECT mailroom.assign_account_owner(%s, %s)"
        for app in (a, b):  # an application cannot assign one (to itself or anyone)
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(assign, [[dee], app.info.user])
        with pytest.raises(errors.InvalidParameterValue, match="not a login role"):
            conn.execute(assign, [[dee], "mailroom_app"])
        assert conn.execute(assign, [[dee, ann], a.info.user]).fetchone() == (1,)
        assert conn.execute(assign, [[dee], b.info.user]).fetchone() == (0,)  # assigned: fixed
        assert lifecycle.request_password_recovery(a, "dee")
        assert _mail_to(conn, "dee@example.com") == ["passwordrecoveryv1"]
        assert a.execute("SELECT count(*) FROM mailroom.tokens WHERE account_id = %s",
                         [dee]).fetchone() == (1,)  # fmt: skip
        # an assigned account's tokens follow it: B then consumes fay's
        assert b.execute("SELECT count(*) FROM mailroom.tokens WHERE account_id = %s",
                         [fay]).fetchone() == (0,)  # fmt: skip
        refused = lifecycle.consume_token(b, fay_token, Action.ACTIVATION, [KEY])
        assert refused == lifecycle.Refused("unknown token")
        assert conn.execute(assign, [[fay], b.info.user]).fetchone() == (1,)
        consumed = lifecycle.consume_token(b, fay_token, Action.ACTIVATION, [KEY])
        assert consumed == lifecycle.Consumed(fay)
        assert a.execute("SELECT count(*) FROM mailroom.accounts WHERE id = %s",
                         [fay]).fetchone() == (0,)  # fmt: skip


def test_migrate_says_how_many_accounts_wait_for_an_owner(
    conn: psycopg.Connection[Any], db: str
) -> None:
    from test_cli import mailroom  # noqa: PLC0415 -- the CLI as an operator runs it

    _lifecycle_before_1004(conn)
    conn.execute(
        "INSERT INTO mailroom.accounts (login, email, status)"
        " VALUES ('dee', 'dee@example.com', 'active'), ('eli', 'eli@example.com', 'active')"
    )
    env = {"MAILROOM_DATABASE_URL": db}
    upgraded = mailroom("migrate", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied 1004_accounts_per_application" in upgraded.stdout
    assert "warning: 2 lifecycle account(s) have no owner" in upgraded.stderr
    assert "mailroom.assign_account_owner" in upgraded.stderr
    owner = conn.info.user
    conn.execute(
        "SELECT mailroom.assign_account_owner("
        " ARRAY(SELECT id FROM mailroom.accounts WHERE owner IS NULL), %s)",
        [owner],
    )
    again = mailroom("migrate", env=env)
    assert (again.returncode, again.stdout, again.stderr) == (0, "schema up to date\n", "")


def test_the_policies_are_on_and_bind_nothing_outside_pg_catalog(
    conn: psycopg.Connection[Any],
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    secured = conn.execute(
        "SELECT relname, relrowsecurity FROM pg_class"
        " WHERE relnamespace = 'mailroom'::regnamespace AND relname IN ('accounts', 'tokens')"
        " ORDER BY relname"
    ).fetchall()
    assert secured == [("accounts", True), ("tokens", True)]
    policies = conn.execute(
        "SELECT polrelid::regclass::text, polcmd, polroles = '{0}', polpermissive"
        " FROM pg_policy ORDER BY 1"
    ).fetchall()
    # one permissive policy for every command, TO PUBLIC, per table
    assert policies == [
        ("mailroom.accounts", "*", True, True),
        ("mailroom.tokens", "*", True, True),
    ]
    # every operator and function the policy expressions use is pg_catalog's (pinned
    # objects have no pg_depend rows; anything else a policy binds to has one)
    assert conn.execute(POLICY_DEPENDENCIES_OUTSIDE_PG_CATALOG).fetchall() == []
    # the check sees a policy that binds to a planted operator
    conn.execute(
        "CREATE FUNCTION public.planted_eq(name, name) RETURNS boolean"
        " LANGUAGE sql AS 'SELECT $1 OPERATOR(pg_catalog.=) $2'"
    )
    conn.execute(
        "CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.planted_eq)"
    )
    conn.execute("CREATE TABLE public.probe (owner name)")
    conn.execute(
        "CREATE POLICY probe ON public.probe USING (owner OPERATOR(public.=) session_user)"
    )
    found = conn.execute(POLICY_DEPENDENCIES_OUTSIDE_PG_CATALOG).fetchall()
    assert found == [("probe", "public.=(name,name)")]


POLICY_DEPENDENCIES_OUTSIDE_PG_CATALOG = """
    SELECT pol.polname, d.refobjid::regprocedure::text
    FROM pg_catalog.pg_policy AS pol
    JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
    JOIN pg_catalog.pg_proc AS p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid
    WHERE p.pronamespace <> 'pg_catalog'::regnamespace
    UNION ALL
    SELECT pol.polname, d.refobjid::regoperator::text
    FROM pg_catalog.pg_policy AS pol
    JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_policy'::regclass AND d.objid = pol.oid
    JOIN pg_catalog.pg_operator AS o
      ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
    WHERE o.oprnamespace <> 'pg_catalog'::regnamespace
"""


PLANTS = """
CREATE TABLE public.sightings (who text, what text);
GRANT INSERT ON public.sightings TO PUBLIC;
CREATE FUNCTION public.spy_status(a mailroom.account_status, b mailroom.account_status)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'account_status =');
    RETURN a::text = b::text;
END $$;
CREATE OPERATOR public.= (LEFTARG = mailroom.account_status,
                          RIGHTARG = mailroom.account_status, FUNCTION = public.spy_status);
CREATE FUNCTION public.spy_action(a mailroom.token_action, b mailroom.token_action)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.sightings VALUES (current_user, 'token_action =');
    RETURN a::text = b::text;
END $$;
CREATE OPERATOR public.= (LEFTARG = mailroom.token_action,
                          RIGHTARG = mailroom.token_action, FUNCTION = public.spy_action);
"""


def test_b_plants_nothing_into_the_helpers_a_runs_on_its_own_connection(apps: Apps) -> None:
    """The helpers run on the application's connection, with its search_path ("$user",
    public): mailroom does not change it. B, which may create in public (as a Django
    application owning its tables there may), plants an exact-type "=" for the lifecycle's
    enums, which beats pg_catalog's anyenum one. Unqualified, A's own query runs B's code as
    A; the helpers' queries are qualified and run none of it."""
    apps.owner.execute(
        sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(apps.b.info.user))
    )
    apps.b.execute(PLANTS)
    try:
        _plants_do_not_bind(apps)
    finally:  # B's objects go before its role does
        apps.owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(apps.b.info.user)))


def _plants_do_not_bind(apps: Apps) -> None:
    a = apps.a
    a.execute("UPDATE mailroom.accounts SET status = 'active' WHERE id = %s", [apps.ann])
    # the control: an unqualified comparison in A's session binds to B's operator
    a.execute("SELECT count(*) FROM mailroom.accounts WHERE status = 'active'")
    seen = apps.owner.execute("SELECT who, what FROM public.sightings").fetchall()
    assert (a.info.user, "account_status =") in seen, "the plant does not bind: no attack"
    apps.owner.execute("TRUNCATE public.sightings")

    assert lifecycle.request_password_recovery(a, ANN)
    recovery, code = _issued(apps.owner, apps.ann, "password_recovery")
    signed = tokens.sign(KEY, Action.PASSWORD_RECOVERY, recovery, code=code)
    consumed = lifecycle.consume_token(a, signed, Action.PASSWORD_RECOVERY, [KEY], code=code)
    assert consumed == lifecycle.Consumed(apps.ann)
    assert apps.owner.execute("SELECT who, what FROM public.sightings").fetchall() == []
