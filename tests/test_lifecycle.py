"""The account lifecycle end to end: triggers, a real daemon signing tokens at send time,
SES over HTTP, and the web application's side. Tokens in the emails are checked with an
independent implementation of the seed algorithm (standard library only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conftest import all_final, wait_for
from mailroom import lifecycle, migrate, tokens
from mailroom.tokens import Action
from sesv2_standin import SesStandin

KEY = bytes.fromhex("5e" * 32)
OLD_KEY = bytes.fromhex("a1" * 32)


def seed_verify(token: str, key: bytes, prefix: bytes, code: bytes = b"") -> bytes:
    """What the seed's web app does: decode, split 32|32, recompute, compare."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert len(token) == 86
    assert len(raw) == 64
    secret, mac = raw[:32], raw[32:]
    assert hmac.compare_digest(mac, hmac.new(key, prefix + secret + code, hashlib.sha256).digest())
    return secret


@pytest.fixture
def lc(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    return conn


def _secret(conn: psycopg.Connection[Any], action: str) -> bytes:
    """The raw secret of the newest pending token email of ``action``: only
    mailroom.message_tokens holds it, and only until the email is final (lifecycle 1003)."""
    row = conn.execute(
        "SELECT secret FROM mailroom.message_tokens WHERE action = %s"
        " ORDER BY message_id DESC LIMIT 1",
        [action],
    ).fetchone()
    assert row is not None
    return bytes(row[0])


def _hash(conn: psycopg.Connection[Any], action: str) -> bytes:
    """What mailroom.tokens keeps of the newest token's secret: its SHA-256."""
    row = conn.execute(
        "SELECT secret_hash FROM mailroom.tokens WHERE action = %s ORDER BY id DESC LIMIT 1",
        [action],
    ).fetchone()
    assert row is not None
    return bytes(row[0])


def test_activation_and_recovery_emails_carry_seed_tokens(
    lc: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    daemon = spawn(MAILROOM_SECRET_KEY=KEY.hex())
    lc.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('ann', 'ann@example.com')")
    wait_for(lambda: all_final(lc, 1))
    (mail,) = standin.sent()
    assert mail["template"] == "activationv1"
    assert set(mail["template_data"]) == {"login", "secret"}
    assert mail["template_data"]["login"] == "ann"
    token = mail["template_data"]["secret"]
    activation_secret = seed_verify(token, KEY, b"/activate")
    assert hashlib.sha256(activation_secret).digest() == _hash(lc, "activation")

    # consuming the activation token activates the account; a replay is refused
    consumed = lifecycle.consume_token(lc, token, Action.ACTIVATION, [KEY])
    assert isinstance(consumed, lifecycle.Consumed)
    assert lc.execute("SELECT status::text FROM mailroom.accounts").fetchone() == ("active",)
    assert lifecycle.consume_token(lc, token, Action.ACTIVATION, [KEY]) == lifecycle.Refused(
        "already consumed"
    )

    assert lifecycle.request_password_recovery(lc, "ann@example.com")
    assert not lifecycle.request_password_recovery(lc, "nobody@example.com")
    wait_for(lambda: all_final(lc, 2))
    recovery = next(m for m in standin.sent() if m["template"] == "passwordrecoveryv1")
    data = recovery["template_data"]
    assert set(data) == {"login", "secret", "code"}
    assert len(data["code"]) == 5
    assert data["code"].isdigit()
    secret = seed_verify(data["secret"], KEY, b"/recover", data["code"].encode())
    assert hashlib.sha256(secret).digest() == _hash(lc, "password_recovery")
    wrong = f"{(int(data['code']) + 1) % 100000:05d}"
    refused = lifecycle.consume_token(
        lc, data["secret"], Action.PASSWORD_RECOVERY, [KEY], code=wrong
    )
    assert isinstance(refused, lifecycle.Refused)  # the code is part of the signature
    ok = lifecycle.consume_token(
        lc, data["secret"], Action.PASSWORD_RECOVERY, [KEY], code=data["code"]
    )
    assert isinstance(ok, lifecycle.Consumed)

    # the raw secrets left the database only to be signed: not kept, not logged
    kept = lc.execute(
        "SELECT count(*) FROM mailroom.outbox WHERE template_data ? '$sign'"
    ).fetchone()
    assert kept == (0,)
    log = daemon.log_path.read_text()
    assert lc.execute("SELECT count(*) FROM mailroom.message_tokens").fetchone() == (0,)
    for raw in (activation_secret, secret):
        assert raw.hex() not in log
    assert token not in log
    assert KEY.hex() not in log


def test_tokens_refused_by_the_web_app(lc: psycopg.Connection[Any], db: str) -> None:
    lc.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('bo', 'bo@example.com')")
    secret = _secret(lc, "activation")
    token = tokens.sign(KEY, Action.ACTIVATION, secret)
    forged = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]

    # forged, truncated, wrong action and wrong key are refused before any query: a
    # closed connection proves the database is not asked
    closed = psycopg.connect(db)
    closed.close()
    for bad, action, keys in (
        (forged, Action.ACTIVATION, [KEY]),
        (token[:-1], Action.ACTIVATION, [KEY]),
        (token + "A", Action.ACTIVATION, [KEY]),
        (token, Action.PASSWORD_RECOVERY, [KEY]),
        (token, Action.ACTIVATION, [OLD_KEY]),
        ("", Action.ACTIVATION, [KEY]),
    ):
        assert isinstance(lifecycle.consume_token(closed, bad, action, keys), lifecycle.Refused)

    # a well-signed token for a secret the database does not know
    stranger = tokens.sign(KEY, Action.ACTIVATION, bytes(32))
    assert lifecycle.consume_token(lc, stranger, Action.ACTIVATION, [KEY]) == lifecycle.Refused(
        "unknown token"
    )
    # expired
    lc.execute("UPDATE mailroom.tokens SET expires_at = now() - interval '1 second'")
    assert lifecycle.consume_token(lc, token, Action.ACTIVATION, [KEY]) == lifecycle.Refused(
        "expired"
    )
    assert lc.execute("SELECT status::text FROM mailroom.accounts").fetchone() == ("provisioned",)


def test_key_rotation(lc: psycopg.Connection[Any]) -> None:
    lc.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('cy', 'cy@example.com')")
    old_token = tokens.sign(OLD_KEY, Action.ACTIVATION, _secret(lc, "activation"))
    # the old key is retired: listed second it still verifies, removed it does not
    refused = lifecycle.consume_token(lc, old_token, Action.ACTIVATION, [KEY])
    assert isinstance(refused, lifecycle.Refused)
    consumed = lifecycle.consume_token(lc, old_token, Action.ACTIVATION, [KEY, OLD_KEY])
    assert isinstance(consumed, lifecycle.Consumed)


def test_burst_of_accounts_one_per_transaction_is_delivered_batched(
    lc: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.latency = 0.05  # while one call is in flight, new accounts gather into a batch
    daemon = spawn(MAILROOM_SECRET_KEY=KEY.hex(), MAILROOM_SES_CONCURRENCY="1",
                   MAILROOM_BATCH_LIMIT="10", MAILROOM_BATCH_TIMEOUT="100")  # fmt: skip
    daemon.wait_listening()
    for n in range(42):  # the seed's quick test: one INSERT per transaction
        lc.execute("INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s)",
                   [f"user{n}", f"user{n}@example.com"])  # fmt: skip
    wait_for(lambda: all_final(lc, 42), timeout=60)
    sent = standin.sent()
    assert sorted(m["template_data"]["login"] for m in sent) == sorted(
        f"user{n}" for n in range(42)
    )
    for mail in sent:
        seed_verify(mail["template_data"]["secret"], KEY, b"/activate")
    assert standin.calls()["SendBulkEmail"] < 42  # batched, not one call per account


def test_without_a_secret_key_token_mail_waits_instead_of_dying(
    lc: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    daemon = spawn(MAILROOM_PAUSE_DURATION="60000")
    lc.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('di', 'di@example.com')")
    wait_for(lambda: any(e["event"] == "cannot_sign" for e in daemon.events()))
    # the log line comes before the batch's outcome is written
    query = "SELECT status, attempts, last_error FROM mailroom.outbox"
    wait_for(lambda: lc.execute(query).fetchone()[0] != "sending")  # type: ignore[index]
    status, attempts, error = lc.execute(query).fetchone()  # type: ignore[misc]
    assert (status, attempts) == ("retrying", 0)
    assert error.startswith("NoSecretKey: MAILROOM_SECRET_KEY is not set")
    assert standin.sent() == []
