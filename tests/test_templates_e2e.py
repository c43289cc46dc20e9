"""The seed's templates end to end through a real daemon (a child process): a lifecycle
activation and a password recovery sent with MAILROOM_TRANSPORT=smtp reach a real SMTP
server (aiosmtpd) rendered from templates/, the signed token in their links; the web
application's side accepts the token read from the delivered email."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from conftest import all_final, wait_for
from mailroom import lifecycle, migrate
from mailroom.tokens import Action
from test_lifecycle import KEY, seed_verify
from test_smtp_transport import SEED, Catcher, free_port


@pytest.fixture
def catcher() -> Iterator[tuple[Catcher, int]]:
    handler, port = Catcher(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _mails(handler: Catcher) -> list[EmailMessage]:
    return [BytesParser(policy=policy.default).parsebytes(raw) for _, _, raw in handler.received]


def test_lifecycle_mail_through_smtp_carries_the_signed_token(
    conn: psycopg.Connection[Any], catcher: tuple[Catcher, int], spawn: Any
) -> None:
    handler, port = catcher
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    spawn(
        MAILROOM_SECRET_KEY=KEY.hex(),
        MAILROOM_TRANSPORT="smtp",
        MAILROOM_SMTP_URL=f"smtp://127.0.0.1:{port}",
        MAILROOM_TEMPLATES_DIR=str(SEED),
    )
    conn.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('ann', 'ann@example.com')")
    wait_for(lambda: all_final(conn, 1))
    assert conn.execute("SELECT status::text FROM mailroom.outbox").fetchall() == [("sent",)]
    (mail,) = _mails(handler)
    assert mail["Subject"] == "Activate your account, ann"
    assert mail["To"] == "ann@example.com"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    (token,) = re.findall(r"activate\?token=([A-Za-z0-9_-]+)", text)
    assert re.findall(r'activate\?token=([A-Za-z0-9_-]+)"', html) == [token]
    seed_verify(token, KEY, b"/activate")
    assert isinstance(
        lifecycle.consume_token(conn, token, Action.ACTIVATION, [KEY]), lifecycle.Consumed
    )
    assert conn.execute("SELECT status::text FROM mailroom.accounts").fetchone() == ("active",)

    assert lifecycle.request_password_recovery(conn, "ann@example.com")
    wait_for(lambda: all_final(conn, 2))
    recovery = _mails(handler)[1]
    (code,) = re.findall(r"code: (\d{5})$", str(recovery["Subject"]))
    text = recovery.get_body(("plain",)).get_content()
    assert f"Enter the code {code}" in text
    (token,) = re.findall(r"recover\?token=([A-Za-z0-9_-]+)", text)
    seed_verify(token, KEY, b"/recover", code.encode())
    consumed = lifecycle.consume_token(conn, token, Action.PASSWORD_RECOVERY, [KEY], code=code)
    assert isinstance(consumed, lifecycle.Consumed)
