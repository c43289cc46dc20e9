"""The upgrade from the release the trust-boundary review attacked (de3673d: core migrations
up to 0013, lifecycle up to 1002) keeps every message, attempt, event, suppression, account
and token, and the token emails still pending then are sent afterwards with a token that
the application consumes (issue 18, "Done when")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

import mailroom
from conftest import all_final, wait_for
from mailroom import lifecycle, migrate, tokens
from mailroom.tokens import Action
from sesv2_standin import SesStandin
from test_sql_security import bare_db  # noqa: F401 -- the fixture

KEY = bytes.fromhex("7a" * 32)
OLD_CORE, OLD_LIFECYCLE = 13, 1002  # what de3673d shipped


def _install_de3673d(conn: psycopg.Connection[Any]) -> None:
    """The schema as de3673d's `mailroom migrate --with lifecycle` left it, recorded as
    migrate records it (the files of those versions are unchanged since: forward-only)."""
    conn.execute(migrate.query("migrations_bootstrap"))
    for m in migrate.available(("lifecycle",)):
        if m.version <= OLD_CORE or 1000 < m.version <= OLD_LIFECYCLE:
            with conn.transaction():
                conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
                conn.execute(
                    migrate.query("migrations_record"),
                    {"version": m.version, "name": m.name, "checksum": m.checksum},
                )
    conn.execute(migrate.query("revoke_public"))
    conn.execute(migrate.query("grant_roles"))


def _snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]  # static test SQL

    return {
        "messages": rows("SELECT id, to_addresses, status, template, enqueued_by, attempts,"
                         " last_error FROM mailroom.outbox ORDER BY id"),
        "attempts": rows("SELECT message_id, attempt, outcome FROM mailroom.attempts ORDER BY id"),
        "events": rows("SELECT event_key, recipient, event_type FROM mailroom.events ORDER BY id"),
        "suppressions": rows("SELECT address, reason FROM mailroom.suppressions ORDER BY 1"),
        "accounts": rows("SELECT id, login, email, status::text FROM mailroom.accounts"
                         " ORDER BY id"),
        "tokens": rows("SELECT id, account_id, action::text, consumed_at IS NOT NULL"
                       " FROM mailroom.tokens ORDER BY id"),
    }  # fmt: skip


def test_the_upgrade_from_de3673d_keeps_every_message_and_token_working(
    bare_db: str,  # noqa: F811 -- the fixture imported above
    login_as: Callable[..., str],
    standin: SesStandin,
    spawn: Any,
) -> None:
    with psycopg.connect(bare_db, autocommit=True) as owner:
        _install_de3673d(owner)
    shop = login_as("mailroom_app", db=bare_db)
    with psycopg.connect(shop, autocommit=True) as app:
        # as the application did on de3673d: provisioning enqueues the activation email,
        # its raw secret in the template data ("$sign")
        for login in ("ann", "bob", "cy"):
            app.execute("INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s)",
                        [login, f"{login}@example.com"])  # fmt: skip
        app.execute(  # cy activated before the upgrade
            "UPDATE mailroom.tokens SET consumed_at = now() WHERE account_id ="
            " (SELECT id FROM mailroom.accounts WHERE login = 'cy')"
        )
        sent = mailroom.enqueue(app, "dan@example.com", subject="Hi", text="sent before")
        dead = mailroom.enqueue(app, "eve@example.com", subject="Hi", text="dead before")
    with psycopg.connect(bare_db, autocommit=True) as owner:
        # what a daemon of that release had done with them
        cy_mail = owner.execute(
            "SELECT id FROM mailroom.outbox WHERE to_addresses = ARRAY['cy@example.com']"
        ).fetchone()
        assert cy_mail is not None
        for message, status, error in ((sent, "sent", None), (dead, "dead", "MessageRejected: x"),
                                       (cy_mail[0], "sent", None)):  # fmt: skip
            owner.execute("UPDATE mailroom.outbox SET status = %s, attempts = 1, last_error = %s,"
                          " provider_message_id = %s WHERE id = %s",
                          [status, error, f"ses-{message}", message])  # fmt: skip
            owner.execute("INSERT INTO mailroom.attempts (message_id, attempt, outcome, worker)"
                          " VALUES (%s, 1, %s, 'old-daemon')", [message, status])  # fmt: skip
        owner.execute(
            "INSERT INTO mailroom.events (event_key, provider_message_id, recipient,"
            " event_type, subtype, detail, occurred_at) VALUES ('old-key', %s,"
            " 'dan@example.com', 'Delivery', '', NULL, now())",
            [f"ses-{sent}"],
        )
        owner.execute("INSERT INTO mailroom.suppressions (address, reason, detail)"
                      " VALUES ('gone@example.com', 'bounce', 'Permanent General')")  # fmt: skip
        before = _snapshot(owner)
        pending = [row for row in before["messages"] if row[2] == "pending"]
        assert len(pending) == 2  # ann's and bob's activation emails, with their secrets

        applied = [m.version for m in migrate.migrate(owner, channel="token_insert",
                                                      modules=("lifecycle",))]  # fmt: skip
        assert min(applied) == 16  # 0014 and 0015 were never used
        assert max(applied) > OLD_LIFECYCLE
        after = _snapshot(owner)
        # nothing lost, nothing changed: the token emails only lost their "$sign" block
        assert after == before
        assert owner.execute(
            "SELECT count(*) FROM mailroom.outbox WHERE template_data ? '$sign'"
        ).fetchone() == (0,)

    spawn(MAILROOM_DATABASE_URL=bare_db, MAILROOM_SECRET_KEY=KEY.hex())
    with psycopg.connect(bare_db, autocommit=True) as owner:
        wait_for(lambda: all_final(owner, len(before["messages"])))
    mails = {mail["to"][0]: mail for mail in standin.sent()}
    assert set(mails) == {"ann@example.com", "bob@example.com"}
    with psycopg.connect(shop, autocommit=True) as app:
        # the application still owns its accounts (1004 derived the owner) and consumes
        # the tokens the daemon signed after the upgrade
        assert app.execute("SELECT count(*) FROM mailroom.accounts").fetchone() == (3,)
        for login in ("ann", "bob"):
            token = mails[f"{login}@example.com"]["template_data"]["secret"]
            assert isinstance(
                tokens.verify_any(token, Action.ACTIVATION, [KEY], now=time.time()),
                tokens.Verified,
            )
            result = lifecycle.consume_token(app, token, Action.ACTIVATION, [KEY])
            assert isinstance(result, lifecycle.Consumed), result
        statuses = dict(app.execute("SELECT login, status::text FROM mailroom.accounts"))
        assert statuses == {"ann": "active", "bob": "active", "cy": "active"}
