"""The console's message page shows a templated message rendered from the local template
files (MAILROOM_TEMPLATES_DIR) with the message's data: the token a token email carries
shown hidden, secret-looking values hidden, addresses masked, hostile data escaped in the
page and confined to the sandboxed preview. HTTP level, against `mailroom web`."""

from __future__ import annotations

import html
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import mailroom
from console_harness import AUTH, PASSWORD, USER, Console, _request
from mailroom import migrate
from test_smtp_transport import SEED


@pytest.fixture
def console(login_as: Callable[..., str], tmp_path: Path) -> Iterator[Console]:
    server = Console(
        login_as("mailroom_operator"),
        tmp_path,
        MAILROOM_WEB_USER=USER,
        MAILROOM_WEB_PASSWORD=PASSWORD,
        MAILROOM_TEMPLATES_DIR=str(SEED),
    )
    yield server
    server.stop()


def _get(url: str) -> tuple[int, str]:
    return _request(url, headers={"Authorization": AUTH})


def test_the_message_page_renders_templated_messages_with_secrets_hidden(
    console: Console, conn: psycopg.Connection[Any]
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    conn.execute("INSERT INTO mailroom.accounts (login, email) VALUES ('ann', 'ann@example.com')")
    (token_mail,) = conn.execute("SELECT id FROM mailroom.outbox").fetchone() or ()
    (secret,) = (
        conn.execute("SELECT encode(secret, 'hex') FROM mailroom.message_tokens").fetchone() or ()
    )

    status, page = _get(f"{console.url}/messages/{token_mail}")
    assert status == 200
    assert "Rendered from the template files" in page
    assert '<span id="rendered-subject">Activate your account, ann</span>' in page
    assert "activate?token=[token hidden]" in page
    assert secret not in page
    status, preview = _get(f"{console.url}/messages/{token_mail}/preview")
    assert status == 200
    assert 'activate?token=[token hidden]">Activate my account' in preview
    assert secret not in preview

    hostile = mailroom.enqueue(
        conn,
        "bob@example.com",
        template="passwordrecoveryv1",
        data={
            "login": "<script>parent.pwned=1</script> carol@example.com",
            "secret": "https://evil.example/steal?t=" + "A" * 40,
            "code": "99999",
        },
    )
    status, page = _get(f"{console.url}/messages/{hostile}")
    assert status == 200
    assert "<script>parent.pwned" not in page  # escaped in the page itself
    assert html.escape("<script>parent.pwned=1</script> c***@example.com") in page
    assert "carol@" not in page
    assert "99999" not in page
    assert "evil.example" not in page
    url = f"{console.url}/messages/{hostile}/preview"
    request = urllib.request.Request(url, headers={"Authorization": AUTH})  # noqa: S310 -- http
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- http URL
        policy = response.headers["Content-Security-Policy"]
        body = response.read().decode()
    assert policy.startswith("sandbox; default-src 'none'")  # no script runs in it
    assert "<p>Hello <script>parent.pwned=1</script> c***@example.com,</p>" in body  # SES: raw
    assert "99999" not in body
    assert "[hidden]" in body

    unknown = mailroom.enqueue(conn, "d@example.com", template="nosuch", data={"a": 1})
    status, page = _get(f"{console.url}/messages/{unknown}")
    assert status == 200
    assert "rendered-error" in page
    assert f"not in {SEED}" in page
    assert _get(f"{console.url}/messages/{unknown}/preview")[0] == 404
    broken = mailroom.enqueue(conn, "e@example.com", template="activationv1", data={"x": 1})
    status, page = _get(f"{console.url}/messages/{broken}")
    assert "Attribute &#39;login&#39; is not present in the rendering data." in page
