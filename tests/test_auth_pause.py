"""Refusals of the daemon's credentials, permissions, proxy or CA bundle pause sending: they
say nothing about a message, so no attempt is burned and nothing is dead-lettered. Checked
against moto with its IAM signature checking turned on, over real HTTP."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

import mailroom
from conftest import wait_for
from mailroom.embedded import free_port
from mailroom.transports import Defaults
from mailroom.transports.classify import Verdict, classify_error, pause_cause, reason_class
from mailroom.transports.ses import SesTransport, error_of
from test_operations import _get, _samples
from test_ses_transport import message

XML = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
    b"<Code>%s</Code><Message>%s</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
)


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (403, XML % (b"SignatureDoesNotMatch", b"calculated &amp; provided differ"),
         "SignatureDoesNotMatch", "calculated & provided differ"),
        (403, b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>",
         "InvalidClientTokenId", ""),
        (400, b"<AccessDeniedException><Message>no</Message></AccessDeniedException>", "400",
         "no"),
        (403, b"<html><body>Forbidden</body></html>", "403", "<html><body>Forbidden</body></html>"),
    ],
)  # fmt: skip
def test_xml_error_answers_are_read(status: int, body: bytes, code: str, message: str) -> None:
    assert error_of(status, {}, body) == (code, message)


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("SignatureDoesNotMatch", "credentials"),
        ("InvalidSignatureException", "credentials"),
        ("UnrecognizedClientException", "credentials"),
        ("InvalidClientTokenId", "credentials"),
        ("ExpiredToken", "credentials"),
        ("ExpiredTokenException", "credentials"),
        ("NoCredentials", "credentials"),
        ("AccessDenied", "permissions"),
        ("AccessDeniedException", "permissions"),
        ("AccessDeniedForDependencyException", "permissions"),
        ("403", "permissions"),
        ("401", "credentials"),
        ("407", "proxy"),
        ("ProxyAuthenticationRequired", "proxy"),
        ("TLSVerificationFailed", "tls"),
        ("SendingPausedException", "account"),
    ],
)
def test_refusals_of_the_daemon_pause(code: str, cause: str) -> None:
    assert classify_error(code, "whatever") is Verdict.PAUSE
    assert pause_cause(code) == cause
    assert reason_class(code) != "other"


def test_message_faults_and_transient_errors_do_not_pause() -> None:
    for code in ("MessageRejected", "BadRequestException", "400", "404", "500", "NetworkError"):
        assert classify_error(code) is not Verdict.PAUSE


@pytest.fixture(scope="module")
def moto_auth() -> Iterator[tuple[str, dict[str, str]]]:
    """moto checking signatures and IAM policies, with one user that has no policy."""
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"

    def reset_auth(count: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 -- a local test server
            f"{url}/moto-api/reset-auth", data=count, headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request).read()  # noqa: S310 -- a local test server

    reset_auth(b"2")  # the two IAM calls below go unchecked, everything after is checked
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="setup", aws_secret_access_key="setup")  # fmt: skip
    iam.create_user(UserName="mailroom")
    key = iam.create_access_key(UserName="mailroom")["AccessKey"]
    try:
        yield url, {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        reset_auth(b"inf")  # moto's settings are process-wide: other tests expect no checks
        server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        ("AKIAUNKNOWNUNKNOWN00", "x", "InvalidClientTokenId"),
        (None, "wrong", "SignatureDoesNotMatch"),
        (None, None, "AccessDenied"),  # the right key, no policy allowing ses:SendEmail
    ],
)
async def test_moto_refusals_pause_the_transport(
    moto_auth: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    key_id: str | None,
    secret: str | None,
    code: str,
) -> None:
    url, key = moto_auth
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id or key["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret or key["secret"])
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    defaults = Defaults(source="noreply@example.com", config_set=None)
    ours = SesTransport(defaults, concurrency=1, connect_timeout=2, read_timeout=5)
    try:
        result = await ours.send_one(message())
    finally:
        await ours.aclose()
    assert (result.code, result.verdict, result.whole_call) == (code, Verdict.PAUSE, True)
    assert result.detail  # moto's message, for last_error and /readyz


def test_a_bad_secret_pauses_the_daemon_without_burning_the_attempt(
    conn: psycopg.Connection[Any], moto_auth: tuple[str, dict[str, str]], spawn: Any
) -> None:
    url, key = moto_auth
    # max_attempts=1: a burned attempt would dead-letter it at once
    outbox_id = mailroom.enqueue(conn, "a@example.com", subject="S", text="x", max_attempts=1)
    port = free_port()
    daemon = spawn(
        AWS_ENDPOINT_URL_SESV2=url, AWS_ACCESS_KEY_ID=key["id"], AWS_SECRET_ACCESS_KEY="wrong",
        MAILROOM_PAUSE_DURATION="60000", MAILROOM_HTTP_PORT=str(port),
    )  # fmt: skip
    recorded = "SELECT 1 FROM mailroom.attempts WHERE message_id = %s"
    wait_for(lambda: conn.execute(recorded, [outbox_id]).fetchone())  # recorded, not only logged
    row = conn.execute(
        "SELECT status, attempts, last_error FROM mailroom.outbox WHERE id = %s", [outbox_id]
    ).fetchone()
    assert row is not None
    status, attempts, error = row
    assert (status, attempts) == ("retrying", 0)  # refunded, waiting out the pause
    assert error.startswith("SignatureDoesNotMatch: The request signature")
    outcomes = conn.execute(
        "SELECT outcome FROM mailroom.attempts WHERE message_id = %s", [outbox_id]
    ).fetchall()
    assert outcomes == [("paused",)]

    status_code, body = _get(port, "/readyz")
    assert status_code == 200  # a pause is not a reason to restart or unroute the daemon
    sending = json.loads(body)["checks"]["sending"]["detail"]
    assert sending.startswith("paused: ")
    assert "SignatureDoesNotMatch (credentials)" in sending
    _, text = _get(port, "/metrics")
    samples = _samples(text)
    assert samples[("mailroom_sending_paused", ())] == 1
    labels = (("cause", "credentials"), ("code", "SignatureDoesNotMatch"))
    assert samples[("mailroom_sending_pause_reason", labels)] == 1
    [event] = [e for e in daemon.events() if e["event"] == "sending_paused"]
    assert (event["code"], event["cause"]) == ("SignatureDoesNotMatch", "credentials")
