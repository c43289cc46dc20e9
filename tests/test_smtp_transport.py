"""The smtp transport against a real SMTP server (aiosmtpd, started here on a free port):
the rendered email arrives with both parts; 5xx replies are permanent (dead), 4xx replies
and connection failures transient (retry); a template that is not in the files, or data
that do not fit it, dead as SES would dead-letter them."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.controller import Controller

from mailroom.outbox import Message
from mailroom.transports import Defaults
from mailroom.transports.classify import Verdict
from mailroom.transports.smtp import SmtpTransport

SEED = Path(__file__).resolve().parent.parent / "templates"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Catcher:
    """Keeps every message; answers RCPT for addresses naming a reply code with it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        local = address.split("@", maxsplit=1)[0]
        if local.startswith("reply"):  # reply550@..., reply451@...
            return f"{local[5:]} refused for the test"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


@pytest.fixture(scope="module")
def catcher() -> Iterator[tuple[Catcher, int]]:
    handler = Catcher()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def message(**fields: Any) -> Message:
    base: dict[str, Any] = dict(
        id=7,
        attempts=0,
        max_attempts=5,
        from_address=None,
        to=["ann@example.com"],
        cc=[],
        bcc=[],
        reply_to=[],
        config_set=None,
        template=None,
        template_data=None,
        subject=None,
        body_text=None,
        body_html=None,
        raw_mime=None,
        created_at=0.0,
    )
    base.update(fields)
    return Message(**base)


def transport(port: int, templates: Path | None = SEED) -> SmtpTransport:
    return SmtpTransport(
        Defaults("noreply@example.com", None),
        f"smtp://127.0.0.1:{port}",
        templates,
        concurrency=4,
        timeout=5.0,
    )


def test_templated_messages_arrive_rendered(catcher: tuple[Catcher, int]) -> None:
    handler, port = catcher
    handler.received.clear()
    data = {"login": "zoë", "secret": "SIGNED-TOKEN", "code": "04242"}
    messages = [
        message(
            id=1,
            template="passwordrecoveryv1",
            template_data=json.dumps(data),
            bcc=["audit@example.com"],
        ),
        message(id=2, template="activationv1", template_data=json.dumps(data)),
    ]
    results = anyio.run(transport(port).send_bulk, messages)
    assert [r.verdict for r in results] == [Verdict.SENT, Verdict.SENT]
    assert all(r.provider_id and r.provider_id.startswith("<") for r in results)
    by_subject = {}
    for mail_from, rcpts, raw in handler.received:
        mail = BytesParser(policy=policy.default).parsebytes(raw)
        by_subject[str(mail["Subject"])] = (mail_from, rcpts, mail)
    mail_from, rcpts, mail = by_subject["Your password recovery code: 04242"]
    assert mail_from == "noreply@example.com"
    assert rcpts == ["ann@example.com", "audit@example.com"]  # Bcc in the envelope only
    assert "Bcc" not in mail
    assert mail["To"] == "ann@example.com"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Hello zoë," in text
    assert "recover?token=SIGNED-TOKEN" in text
    assert "<strong>04242</strong>" in html
    assert "Activate your account, zoë" in by_subject


def test_simple_and_raw_messages(catcher: tuple[Catcher, int]) -> None:
    handler, port = catcher
    handler.received.clear()
    simple = message(subject="Hi", body_text="plain", body_html="<p>html</p>")
    raw = message(
        raw_mime=b"From: a@example.com\r\nTo: ann@example.com\r\nSubject: raw\r\n\r\nbody\r\n"
    )
    t = transport(port)
    assert anyio.run(t.send_one, simple).verdict is Verdict.SENT
    assert anyio.run(t.send_one, raw).verdict is Verdict.SENT
    first = BytesParser(policy=policy.default).parsebytes(handler.received[0][2])
    assert first.get_body(("html",)).get_content().strip() == "<p>html</p>"
    assert b"Subject: raw" in handler.received[1][2]


@pytest.mark.parametrize(
    ("address", "verdict", "code"),
    [
        ("reply550@example.com", Verdict.DEAD, "SMTPPermanentError"),
        ("reply553@example.com", Verdict.DEAD, "SMTPPermanentError"),
        ("reply451@example.com", Verdict.RETRY, "SMTPTransientError"),
        ("reply421@example.com", Verdict.RETRY, "SMTPTransientError"),
    ],
)
def test_refusals_are_classified(
    catcher: tuple[Catcher, int], address: str, verdict: Verdict, code: str
) -> None:
    handler, port = catcher
    handler.received.clear()
    result = anyio.run(transport(port).send_one, message(to=[address], subject="s", body_text="t"))
    assert (result.verdict, result.code) == (verdict, code)
    assert result.detail.startswith(address[5:8] + " refused for the test")
    assert handler.received == []


def test_no_server_is_transient() -> None:
    result = anyio.run(transport(free_port()).send_one, message(subject="s", body_text="t"))
    assert (result.verdict, result.code) == (Verdict.RETRY, "NetworkError")
    assert "ConnectionRefusedError" in result.detail


def test_what_ses_would_refuse_is_dead(catcher: tuple[Catcher, int], tmp_path: Path) -> None:
    handler, port = catcher
    handler.received.clear()
    t = transport(port)
    cases = [
        (message(template="nosuch", template_data="{}"), "TemplateDoesNotExist"),
        (message(template="activationv1", template_data='{"login": "x"}'), "RenderingFailure"),
        (message(template="../x", template_data="{}"), "TemplateDoesNotExist"),
    ]
    for m, code in cases:
        result = anyio.run(t.send_one, m)
        assert (result.verdict, result.code) == (Verdict.DEAD, code)
    assert "Attribute 'secret' is not present" in anyio.run(t.send_one, cases[1][0]).detail
    no_dir = anyio.run(transport(port, None).send_one, cases[1][0])
    assert (no_dir.verdict, no_dir.code) == (Verdict.DEAD, "TemplateDoesNotExist")
    assert handler.received == []


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        (
            {"MAILROOM_TRANSPORT": "smtp"},
            [
                "MAILROOM_SMTP_URL: required with MAILROOM_TRANSPORT=smtp",
                "MAILROOM_TEMPLATES_DIR: required with MAILROOM_TRANSPORT=smtp "
                "(templated messages are rendered from it)",
            ],
        ),
        (
            {"MAILROOM_SMTP_URL": "smtp://me:hunter2@host:25"},
            ["MAILROOM_SMTP_URL: must be smtp://host:port (no credentials, path or query)"],
        ),
        ({"MAILROOM_SMTP_URL": "smtps://host"}, ["MAILROOM_SMTP_URL: must be smtp://host:port"]),
        (
            {"MAILROOM_SMTP_URL": "smtp://host:70000"},
            ["MAILROOM_SMTP_URL: must be smtp://host:port with a port 1-65535"],
        ),
        (
            {"MAILROOM_TRANSPORT": "sendmail"},
            ["MAILROOM_TRANSPORT: must be one of ses, smtp (got 'sendmail')"],
        ),
        (
            {"MAILROOM_TEMPLATES_DIR": "/no/such/dir"},
            ["MAILROOM_TEMPLATES_DIR: must be an existing directory (got '/no/such/dir')"],
        ),
    ],
)
def test_bad_settings_one_line_each_exit_2(
    env: dict[str, str],
    problems: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mailroom.cli.commands import main  # noqa: PLC0415

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"mailroom: {p}" for p in problems]
    assert "hunter2" not in err


def test_a_daemon_on_the_smtp_transport_shows_as_sending_nothing_to_ses(tmp_path: Path) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from mailroom.config.settings import load  # noqa: PLC0415
    from mailroom.daemon import presence  # noqa: PLC0415

    cfg = load(
        {
            "MAILROOM_DATABASE_URL": "postgresql://x@h/db",
            "MAILROOM_TRANSPORT": "smtp",
            "MAILROOM_SMTP_URL": "smtp://catcher:1025",
            "MAILROOM_TEMPLATES_DIR": str(tmp_path),
        }
    )
    assert not cfg.sends_to_ses
    me = presence.Identity.of(cfg, endpoint="", version="1", started_at=datetime.now(UTC))
    assert (me.mode, me.transport) == ("debug", "smtp://catcher:1025")  # 0013 knows ses|debug
