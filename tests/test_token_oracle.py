"""Attacks on the token emails (issue 18, finding 1): the daemon must not be a signing
oracle. The victim is an end user with a pending password-recovery email; the attackers
are the operator and a second application, each as a real login role, by every route they
have: reading, copying (``mailroom.enqueue``, ``send-test``), crafting a ``"$sign"``
block, re-addressing, ``send-now`` and ``dead retry``. A token "for the victim" is one
that ``tokens.verify_any`` accepts with the daemon's key and whose secret's hash is the
victim's token row. Before migration 0019 / lifecycle 1003 the operator read the secret
and code in ``outbox.template_data`` and the daemon mailed a copy's token to the operator.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

import mailroom
from conftest import all_final, wait_for
from console_harness import AUTH, PASSWORD, USER, Console, _request
from mailroom import lifecycle, migrate, tokens
from mailroom.tokens import Action
from sesv2_standin import SesStandin
from test_admin import mailroom_cli
from test_sql_security import bare_db  # noqa: F401 -- the fixture

KEY = bytes.fromhex("5e" * 32)
VICTIM = "vic@example.com"


@pytest.fixture
def lc(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    return conn


def _victim(conn: psycopg.Connection[Any]) -> int:
    """An active account with a pending password-recovery email; its message id."""
    conn.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('vic', %s)", [VICTIM])
    conn.execute("UPDATE mailroom.accounts SET status = 'active'")
    conn.execute("DELETE FROM mailroom.outbox")  # the activation email: not needed here
    assert lifecycle.request_password_recovery(conn, VICTIM)
    row = conn.execute(
        "SELECT id FROM mailroom.outbox WHERE template = 'passwordrecoveryv1'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _issued(conn: psycopg.Connection[Any], message_id: int) -> tuple[bytes, str]:
    """The raw secret and code (the owner reads them; nobody else can)."""
    row = conn.execute(
        "SELECT secret, code FROM mailroom.message_tokens WHERE message_id = %s", [message_id]
    ).fetchone()
    assert row is not None
    return bytes(row[0]), str(row[1])


def _victims_hash(conn: psycopg.Connection[Any]) -> bytes:
    row = conn.execute(
        "SELECT secret_hash FROM mailroom.tokens WHERE action = 'password_recovery'"
    ).fetchone()
    assert row is not None
    return bytes(row[0])


def _tokens_for_victim(mail: dict[str, Any], victim_hash: bytes) -> list[str]:
    """Every template value of a mailed message that verifies as the victim's token."""
    data = mail.get("template_data") or {}
    text = json.dumps(mail)
    codes = sorted({c for c in (data.get("code"), *_digits(text)) if isinstance(c, str)})
    found = []
    for value in data.values():
        if not isinstance(value, str):
            continue
        for action, code in [(Action.ACTIVATION, None)] + [
            (Action.PASSWORD_RECOVERY, c) for c in codes
        ]:
            result = tokens.verify_any(value, action, [KEY], now=time.time(), code=code)
            if isinstance(result, tokens.Verified) and (
                hashlib.sha256(result.secret).digest() == victim_hash
            ):
                found.append(value)
                break
    return found


def _digits(text: str) -> list[str]:
    return [text[i : i + 5] for i in range(len(text) - 4) if text[i : i + 5].isdigit()]


def test_the_operator_and_a_second_application_read_no_secret_and_no_code(
    lc: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    message = _victim(lc)
    secret, code = _issued(lc, message)
    assert lc.execute("SELECT template_data FROM mailroom.outbox WHERE id = %s",
                      [message]).fetchone() == ({"login": "vic"},)  # fmt: skip
    with psycopg.connect(login_as("mailroom_operator"), autocommit=True) as op:
        readable = json.dumps(
            op.execute("SELECT to_jsonb(o) FROM mailroom.outbox AS o").fetchall()
        ) + json.dumps(op.execute("SELECT * FROM mailroom.message_token_actions").fetchall())
        assert secret.hex() not in readable
        assert code not in readable
        assert op.execute("SELECT * FROM mailroom.message_token_actions").fetchall() == [
            (message, "password_recovery")
        ]
        for table in ("mailroom.message_tokens", "mailroom.tokens"):
            with pytest.raises(errors.InsufficientPrivilege):
                op.execute(f"SELECT * FROM {table}")  # noqa: S608 -- test literals
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as app:
        for table in ("mailroom.message_tokens", "mailroom.message_token_actions",
                      "mailroom.outbox"):  # fmt: skip
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(f"SELECT * FROM {table}")  # noqa: S608 -- test literals
        # another application's tokens are not its rows at all (lifecycle 1004)
        assert app.execute("SELECT to_jsonb(t) FROM mailroom.tokens AS t").fetchall() == []
    # and the lifecycle table holds the secret's hash only, and no code, for anyone
    rows = json.dumps(lc.execute("SELECT to_jsonb(t) FROM mailroom.tokens AS t").fetchall())
    assert secret.hex() not in rows
    assert code not in rows
    assert hashlib.sha256(secret).hexdigest() in rows


def test_a_sign_block_is_refused_for_every_role(
    lc: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    message = _victim(lc)
    secret, code = _issued(lc, message)  # as if leaked: the block is refused anyway
    crafted = {"login": "vic", "$sign": {"field": "secret", "action": "password_recovery",
                                         "secret": secret.hex(), "code": code}}  # fmt: skip
    enqueue = (
        "SELECT mailroom.enqueue(to_addresses => ARRAY['evil@example.com'],"
        " template => 'passwordrecoveryv1', template_data => %s)"
    )
    for dsn in (login_as("mailroom_operator"), login_as("mailroom_app"), None):
        with (
            psycopg.connect(dsn, autocommit=True) if dsn else contextlib.nullcontext(lc) as who,
            pytest.raises(errors.CheckViolation, match=r'may not carry a "\$sign" block'),
        ):
            who.execute(enqueue, [Jsonb(crafted)])
    # nor can the owner (or the operator, while it has UPDATE) add one to a message
    with pytest.raises(errors.CheckViolation) as refused:
        lc.execute(
            "UPDATE mailroom.outbox SET template_data = %s WHERE id = %s", [Jsonb(crafted), message]
        )
    assert refused.value.diag.constraint_name == "outbox_template_data_has_no_sign_block"
    result = mailroom_cli("send-test", "--to", "op@example.com", "--template",
                          "passwordrecoveryv1", "--data", json.dumps(crafted),
                          db=login_as("mailroom_operator"))  # fmt: skip
    assert result.returncode != 0
    assert "refused: outbox_template_data_has_no_sign_block" in result.stderr
    assert "Traceback" not in result.stderr


def test_copies_of_a_token_email_carry_no_token_for_the_victim(
    lc: psycopg.Connection[Any], login_as: Callable[..., str], standin: SesStandin, spawn: Any
) -> None:
    message = _victim(lc)
    victim_hash = _victims_hash(lc)
    template, data = lc.execute(
        "SELECT template, template_data FROM mailroom.outbox WHERE id = %s", [message]
    ).fetchone() or (None, None)
    copy = (
        "SELECT mailroom.enqueue(to_addresses => ARRAY[%s], template => %s, template_data => %s,"
        " idempotency_key => %s)"
    )
    operator, second_app = login_as("mailroom_operator"), login_as("mailroom_app")
    with psycopg.connect(operator, autocommit=True) as op:
        op.execute(copy, ["op@example.com", template, Jsonb(data), f"mailroom-token:{message}"])
        op.execute(copy, [VICTIM.upper().replace("@", "+x@"), template, Jsonb(data), None])
    with psycopg.connect(second_app, autocommit=True) as app:
        app.execute(copy, ["app2@example.com", template, Jsonb(data), "mailroom-token:1"])
    sent = mailroom_cli("send-test", "--to", "op2@example.com", "--template", str(template),
                        "--data", json.dumps(data), db=operator)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    spawn(MAILROOM_SECRET_KEY=KEY.hex())
    wait_for(lambda: all_final(lc, 5))
    mails = standin.sent()
    assert len(mails) == 5
    for mail in mails:
        found = _tokens_for_victim(mail, victim_hash)
        if mail["to"] == [VICTIM]:
            assert len(found) == 1, mail  # the victim's own email works
        else:
            assert found == [], mail["to"]
            assert "secret" not in mail["template_data"]
            assert "code" not in mail["template_data"]


def test_a_re_addressed_token_email_is_not_signed(
    lc: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    message = _victim(lc)
    secret, code = _issued(lc, message)
    widened = lc.execute("SELECT template, template_data FROM mailroom.outbox WHERE id = %s",
                         [message]).fetchone()  # fmt: skip
    assert widened is not None
    # the owner re-addresses one token email and adds a Bcc to another
    lc.execute("UPDATE mailroom.outbox SET to_addresses = ARRAY['evil@example.com'] WHERE id = %s",
               [message])  # fmt: skip
    assert lifecycle.request_password_recovery(lc, VICTIM)
    second = lc.execute("SELECT max(id) FROM mailroom.outbox").fetchone()
    assert second is not None
    lc.execute("UPDATE mailroom.outbox SET bcc_addresses = ARRAY['evil@example.com'] WHERE id = %s",
               [second[0]])  # fmt: skip
    # and switches a third to another template (one that could put the token in its link)
    assert lifecycle.request_password_recovery(lc, VICTIM)
    lc.execute("UPDATE mailroom.outbox SET template = 'phishv1' WHERE id = (SELECT max(id)"
               " FROM mailroom.outbox)")  # fmt: skip
    daemon = spawn(MAILROOM_SECRET_KEY=KEY.hex())
    wait_for(lambda: all_final(lc, 3))
    assert standin.sent() == []
    rows = lc.execute("SELECT status, last_error FROM mailroom.outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["dead", "dead", "dead"]
    for (_, error), why in zip(rows, ("recipients", "recipients", "template"), strict=True):
        assert error.startswith(
            f"TokenNotIssued: this message's token was not issued for its {why}"
        )
        assert secret.hex() not in error
        assert code not in error
    # the token rows went with the final state
    assert lc.execute("SELECT count(*) FROM mailroom.message_tokens").fetchone() == (0,)
    log = daemon.log_path.read_text()
    assert secret.hex() not in log
    assert "TokenNotIssued" in log
    # the log names the token's kind, never the token
    dead = [e for e in daemon.events() if e.get("event") == "cannot_sign"]
    assert [e["token"] for e in dead] == ["password_recovery"] * 3


def test_send_now_and_dead_retry_reach_only_the_victim(
    lc: psycopg.Connection[Any], login_as: Callable[..., str], standin: SesStandin, spawn: Any
) -> None:
    message = _victim(lc)
    victim_hash = _victims_hash(lc)
    lc.execute("UPDATE mailroom.outbox SET next_attempt_at = now() + interval '1 hour'")
    operator = login_as("mailroom_operator")
    shown = mailroom_cli("show", str(message), "--json", db=operator)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["token"] == "password_recovery"
    found = mailroom_cli("find", "--json", db=operator)
    assert json.loads(found.stdout)["messages"][0]["token"] == "password_recovery"
    spawn(MAILROOM_SECRET_KEY=KEY.hex()).wait_listening()
    now = mailroom_cli("send-now", str(message), "--reason", "user waiting", db=operator)
    assert now.returncode == 0, now.stdout + now.stderr
    wait_for(lambda: all_final(lc, 1))
    (mail,) = standin.sent()
    assert mail["to"] == [VICTIM]
    assert len(_tokens_for_victim(mail, victim_hash)) == 1
    code = mail["template_data"]["code"]
    consumed = lifecycle.consume_token(
        lc, mail["template_data"]["secret"], Action.PASSWORD_RECOVERY, [KEY], code=code
    )
    assert isinstance(consumed, lifecycle.Consumed)

    # a token email that died is not retried: its token went with it
    standin.fail_address(VICTIM, "message_rejected")
    assert lifecycle.request_password_recovery(lc, VICTIM)
    wait_for(lambda: all_final(lc, 2))
    dead = lc.execute("SELECT id FROM mailroom.outbox WHERE status = 'dead'").fetchone()
    assert dead is not None
    retried = mailroom_cli("dead", "retry", str(dead[0]), "--note", "again", db=operator)
    assert retried.returncode == 1
    assert "token email" in retried.stdout + retried.stderr
    assert lc.execute("SELECT count(*) FROM mailroom.message_tokens").fetchone() == (0,)
    assert len(standin.sent()) == 1


def _apply_up_to_main(conn: psycopg.Connection[Any]) -> None:
    """The schema of an installation before 0019 / lifecycle 1003: core up to 0018 and
    lifecycle up to 1002, recorded as ``migrate`` records them."""
    conn.execute(migrate.query("migrations_bootstrap"))
    for m in migrate.available(("lifecycle",)):
        if m.version <= 18 or 1000 < m.version <= 1002:
            with conn.transaction():
                conn.execute(sql.SQL(m.text))  # type: ignore[arg-type]  # our own static file
                conn.execute(
                    migrate.query("migrations_record"),
                    {"version": m.version, "name": m.name, "checksum": m.checksum},
                )
    conn.execute(migrate.query("revoke_public"))
    conn.execute(migrate.query("grant_roles"))


def test_the_upgrade_keeps_a_pending_token_email_working_and_closes_the_oracle(
    bare_db: str,  # noqa: F811 -- the fixture imported above
    login_as: Callable[..., str],
    standin: SesStandin,
    spawn: Any,
) -> None:
    with psycopg.connect(bare_db, autocommit=True) as owner:
        _apply_up_to_main(owner)
        owner.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('vic', %s)", [VICTIM])
        owner.execute("UPDATE mailroom.accounts SET status = 'active'")
        owner.execute("DELETE FROM mailroom.outbox")
        # as the 0018/1002 schema's own helper did (today's also checks the 1004 owner)
        owner.execute("INSERT INTO mailroom.tokens (account_id, action)"
                      " SELECT id, 'password_recovery' FROM mailroom.accounts")  # fmt: skip
        (message,) = owner.execute("SELECT id FROM mailroom.outbox").fetchone() or (0,)
        # an application's own blocks, as 0018 allowed them: one never signable, one for
        # two recipients (which no token can be bound to)
        block = {"field": "secret", "action": "activation", "secret": "ab" * 32}
        broken = mailroom.enqueue(owner, "x@example.com", template="activationv1",
                                  data={"$sign": {**block, "secret": "zz"}})  # fmt: skip
        widened = mailroom.enqueue(owner, ["y@example.com", "z@example.com"],
                                   template="activationv1", data={"$sign": block})  # fmt: skip
    operator = login_as("mailroom_operator", db=bare_db)
    # before: the operator reads the raw secret and code, and may enqueue a copy of the
    # signing request to itself (the daemon then mailed it the victim's token)
    with psycopg.connect(operator) as op:
        (data,) = op.execute("SELECT template_data FROM mailroom.outbox").fetchone() or ({},)
        assert len(data["$sign"]["secret"]) == 64
        assert data["$sign"]["code"] == data["code"]
        op.execute(
            "SELECT mailroom.enqueue(to_addresses => ARRAY['op@example.com'],"
            " template => 'passwordrecoveryv1', template_data => %s)",
            [Jsonb(data)],
        )
        op.rollback()

    with psycopg.connect(bare_db, autocommit=True) as owner:
        applied = [m.version for m in migrate.migrate(owner, channel="token_insert")]
        assert 19 in applied
        assert 1003 in applied
        kept = owner.execute(
            "SELECT template_data, status FROM mailroom.outbox WHERE id = %s", [message]
        ).fetchone()
        assert kept == ({"login": "vic"}, "pending")  # neither the block nor the code
        dead = owner.execute(
            "SELECT status, last_error, template_data FROM mailroom.outbox WHERE id = %s",
            [broken],
        ).fetchone()
        assert dead is not None
        assert dead[0] == "dead"
        assert dead[1].startswith("InvalidSignBlock:")
        assert dead[2] == {}
        token = owner.execute(
            "SELECT recipient, template, action, field, secret, code"
            " FROM mailroom.message_tokens WHERE message_id = %s",
            [message],
        ).fetchall()
        assert token == [(VICTIM, "passwordrecoveryv1", "password_recovery", "secret",
                          bytes.fromhex(data["$sign"]["secret"]), data["code"])]  # fmt: skip
    with (
        psycopg.connect(operator) as op,
        pytest.raises(errors.CheckViolation, match=r"\$sign"),
    ):
        op.execute(
            "SELECT mailroom.enqueue(to_addresses => ARRAY['op@example.com'],"
            " template => 'passwordrecoveryv1', template_data => %s)",
            [Jsonb(data)],
        )

    spawn(MAILROOM_DATABASE_URL=bare_db, MAILROOM_SECRET_KEY=KEY.hex())
    with psycopg.connect(bare_db, autocommit=True) as owner:
        wait_for(lambda: all_final(owner, 3))
        (mail,) = standin.sent()  # the two-recipient block is not signed, nor sent
        refused = owner.execute(
            "SELECT status, last_error FROM mailroom.outbox WHERE id = %s", [widened]
        ).fetchone()
        assert refused is not None
        assert refused[0] == "dead"
        assert refused[1].startswith("TokenNotIssued:")
        assert mail["to"] == [VICTIM]
        sent = mail["template_data"]
        assert sent["code"] == data["code"]
        verified = tokens.verify_any(
            sent["secret"], Action.PASSWORD_RECOVERY, [KEY], now=time.time(), code=sent["code"]
        )
        assert isinstance(verified, tokens.Verified)
        assert verified.secret.hex() == data["$sign"]["secret"]
        consumed = lifecycle.consume_token(
            owner, sent["secret"], Action.PASSWORD_RECOVERY, [KEY], code=sent["code"]
        )
        assert isinstance(consumed, lifecycle.Consumed)
        assert owner.execute("SELECT count(*) FROM mailroom.message_tokens").fetchone() == (0,)


def test_the_console_and_the_logs_name_the_token_never_its_secret(
    lc: psycopg.Connection[Any], login_as: Callable[..., str], tmp_path: Path
) -> None:
    message = _victim(lc)
    secret, code = _issued(lc, message)
    server = Console(login_as("mailroom_operator"), tmp_path, MAILROOM_WEB_USER=USER,
                     MAILROOM_WEB_PASSWORD=PASSWORD)  # fmt: skip
    try:
        pages = [
            _request(f"{server.url}/messages/{message}?reveal=1", headers={"Authorization": AUTH}),
            _request(f"{server.url}/messages", headers={"Authorization": AUTH}),
        ]
    finally:
        server.stop()
    for status, page in pages:
        assert status == 200
        assert "password_recovery" in page
        assert secret.hex() not in page
        assert code not in page
    shown = mailroom_cli("show", str(message), db=login_as("mailroom_operator"))
    assert "token            password_recovery" in shown.stdout
    assert secret.hex() not in shown.stdout + server.log.read_text()


def test_an_application_cannot_choose_a_tokens_secret(
    lc: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    chosen = hashlib.sha256(bytes(32)).digest()
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as app:
        app.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('vic', %s)", [VICTIM])
        with pytest.raises(errors.InsufficientPrivilege):  # not a column it may write (1004)
            app.execute(
                "INSERT INTO mailroom.tokens (account_id, action, secret_hash)"
                " SELECT id, 'password_recovery', %s FROM mailroom.accounts",
                [chosen],
            )
        # the owner may write the column: the trigger still draws its own secret
        lc.execute(
            "INSERT INTO mailroom.tokens (account_id, action, secret_hash)"
            " SELECT id, 'password_recovery', %s FROM mailroom.accounts",
            [chosen],
        )
        stored = app.execute(
            "SELECT secret_hash FROM mailroom.tokens WHERE action = 'password_recovery'"
        ).fetchone()
        assert stored is not None
        assert bytes(stored[0]) != chosen  # the trigger drew its own
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("UPDATE mailroom.tokens SET secret_hash = %s", [chosen])
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="cannot be changed"):
        lc.execute("UPDATE mailroom.tokens SET secret_hash = %s", [chosen])
