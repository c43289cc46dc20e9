"""The daemon's AWS credentials come from botocore's provider chain run in child processes
(mailroom.transports.credentials): asked again as botocore would refresh them, never by a
botocore session in the daemon. Tested against a real container-credentials endpoint (the
chain's HTTP provider) and the SES stand-in checking every signature."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import botocore.session
import pytest

from mailroom.transports import Defaults, awsconfig
from mailroom.transports.classify import Verdict
from mailroom.transports.credentials import (
    ADVISORY,
    MANDATORY,
    CredentialError,
    Found,
    FromChild,
    due,
    of_botocore,
    reason,
)
from mailroom.transports.ses import SesTransport
from mailroom.transports.sigv4 import Credentials
from sesv2_standin import SesStandin
from test_ses_transport import message

DEFAULTS = Defaults(source="noreply@example.com", config_set=None)
KEYS = Credentials("AKIDSTATIC", "static-secret")


def test_due_follows_botocores_windows() -> None:
    now = 1_000_000.0
    assert due(Found(None), now) == "mandatory"
    assert due(Found(KEYS), now) == ""  # static: never asked again
    assert due(Found(KEYS, now + ADVISORY + 1), now) == ""
    assert due(Found(KEYS, now + ADVISORY - 1), now) == "advisory"
    assert due(Found(KEYS, now + MANDATORY + 1), now) == "advisory"
    assert due(Found(KEYS, now + MANDATORY), now) == "mandatory"
    assert due(Found(KEYS, now - 5), now) == "mandatory"


def test_a_reason_never_carries_what_an_endpoint_answered() -> None:
    exc = ValueError('Received non 200 response (500) from container metadata: {"Secret": "x"}')
    assert reason(exc) == "ValueError: Received non 200 response (500) from container metadata"
    assert reason(ValueError("{}")) == "ValueError"


def test_the_json_a_child_prints_round_trips() -> None:
    for found in (Found(None), Found(KEYS), Found(Credentials("a", "b", "tok"), 123.5)):
        assert Found.of_json(json.loads(json.dumps(found.as_json()))) == found
    with pytest.raises(CredentialError):
        Found.of_json(["not", "an", "object"])


class Endpoint:
    """A container-credentials endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI): hands out
    key N on its Nth request, expiring ``lifetime`` from now; ``status`` != 200 refuses."""

    def __init__(self) -> None:
        self.requests = 0
        self.lifetime = timedelta(hours=6)
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.requests += 1
                n = endpoint.requests
                body = json.dumps({
                    "AccessKeyId": f"AKID{n}", "SecretAccessKey": f"secret{n}",
                    "Token": f"token{n}",
                    "Expiration": (datetime.now(UTC) + endpoint.lifetime).isoformat(),
                }).encode()  # fmt: skip
                self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/creds"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def secrets(self, up_to: int = 50) -> dict[str, str]:
        return {f"AKID{n}": f"secret{n}" for n in range(1, up_to)}


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    served = Endpoint()
    for name, value in {
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": served.url,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    yield served
    served.server.shutdown()
    served.server.server_close()


def _transport(url: str, source: FromChild, monkeypatch: pytest.MonkeyPatch) -> SesTransport:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", url)
    resolved = awsconfig.resolve(botocore.session.get_session())
    # a long budget: a child (an interpreter, botocore, the chain) is slow on a busy machine
    return SesTransport(DEFAULTS, concurrency=2, connect_timeout=10, read_timeout=10,
                        resolved=resolved, credentials=source)  # fmt: skip


def test_refreshable_credentials_carry_their_expiry(endpoint: Endpoint) -> None:
    found = of_botocore(botocore.session.get_session().get_credentials())
    assert found.credentials == Credentials("AKID1", "secret1", "token1")
    assert found.expires is not None
    assert 5.9 * 3600 < found.expires - datetime.now(UTC).timestamp() < 6 * 3600


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_child_is_asked_when_botocore_would_refresh(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FromChild(Found(None))  # as a start-up child that found none leaves it
    with SesStandin(credentials=endpoint.secrets()) as standin:
        ours = _transport(standin.url, source, monkeypatch)
        # 14 minutes left: inside the advisory window, so each call asks a new child
        endpoint.lifetime = timedelta(minutes=14)
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        first = source.found.credentials
        assert source.children == 1
        assert first is not None
        assert first.token
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert source.children == 2
        assert source.found.credentials != first  # signed with the new key, accepted
        # six hours left: no child until they are due
        endpoint.lifetime = timedelta(hours=6)
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        children = source.children
        for _ in range(5):
            assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert source.children == children
        assert len(standin.sent()) == 8
        await ours.aclose()


@pytest.mark.anyio
async def test_a_failing_chain_pauses_with_its_reason_and_is_not_asked_in_a_loop(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint.status = 500
    source = FromChild(Found(None))
    with SesStandin(credentials=endpoint.secrets()) as standin:
        ours = _transport(standin.url, source, monkeypatch)
        results = [await ours.send_one(message()) for _ in range(3)]
        assert {(r.code, r.verdict) for r in results} == {("NoCredentials", Verdict.PAUSE)}
        assert "credentials child failed" in results[0].detail
        assert "secret" not in results[0].detail
        assert source.children == 1  # the next child only after RETRY_AFTER
        assert standin.calls() == {}
        await ours.aclose()


@pytest.mark.anyio
async def test_an_advisory_failure_keeps_the_credentials_that_still_work(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint.status = 500
    near = datetime.now(UTC).timestamp() + MANDATORY + 120  # advisory, not mandatory
    source = FromChild(Found(Credentials("AKID1", "secret1", "token1"), near))
    with SesStandin(credentials=endpoint.secrets()) as standin:
        ours = _transport(standin.url, source, monkeypatch)
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert source.children == 1
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert source.children == 1
        await ours.aclose()


@pytest.mark.anyio
async def test_waiting_for_credentials_counts_in_the_calls_budget(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a chain that never answers (a role endpoint that hangs): the call ends within its
    # budget (connect + read, what the lease is sized for), nothing is sent, sending pauses
    hanging = [sys.executable, "-c", "import time; time.sleep(60)"]
    source = FromChild(Found(None), command=hanging)
    with SesStandin(credentials=endpoint.secrets()) as standin:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", standin.url)
        resolved = awsconfig.resolve(botocore.session.get_session())
        ours = SesTransport(DEFAULTS, concurrency=1, connect_timeout=0.5, read_timeout=0.5,
                            resolved=resolved, credentials=source)  # fmt: skip
        started = time.monotonic()
        result = await ours.send_one(message())
        assert time.monotonic() - started < 1.0 + 3.0  # the budget, and a busy machine's slack
        assert (result.code, result.verdict) == ("NoCredentials", Verdict.PAUSE)
        assert "credentials child failed: no answer within 0.9 s" in result.detail
        assert standin.calls() == {}
        await ours.aclose()
