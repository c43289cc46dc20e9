"""The SES transport signs and sends what boto3 would, and reads SES's answers as botocore
does: botocore is the oracle for the signature and for the wire body."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.outbox import Message
from mailroom.transports import Defaults, SetupError
from mailroom.transports.classify import Verdict
from mailroom.transports.ses import SesTransport, bulk_request, error_of, single_request
from mailroom.transports.sigv4 import Credentials, Signer
from sesv2_standin import SesStandin

DEFAULTS = Defaults(source="noreply@example.com", config_set=None)


def message(**fields: Any) -> Message:
    base: dict[str, Any] = dict(
        id=1, attempts=1, max_attempts=5, from_address=None, to=["ann@example.com"], cc=[],
        bcc=[], reply_to=[], config_set=None, template=None, template_data=None,
        subject="Hi", body_text="hello", body_html=None, raw_mime=None, created_at=0.0,
    )  # fmt: skip
    base.update(fields)
    return Message(**base)


class Case(NamedTuple):
    credentials: Credentials
    region: str
    host: str
    path: str
    body: bytes


def botocore_signature(case: Case, stamp: str) -> str:
    creds = case.credentials
    request = AWSRequest(
        method="POST",
        url=f"https://{case.host}{case.path}",
        data=case.body,
        headers={"content-type": "application/json", "host": case.host, "x-amz-date": stamp}
        | ({"x-amz-security-token": creds.token} if creds.token else {}),
    )
    request.context["timestamp"] = stamp
    auth = SigV4Auth(BotoCredentials(*creds), "ses", case.region)
    return str(auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                              request))  # fmt: skip


def sign(signer: Signer, case: Case, now: float) -> tuple[dict[str, str], str]:
    headers = signer.headers(case.credentials, case.host, case.path, case.body, now=now)
    return headers, headers["Authorization"].rsplit("Signature=", 1)[1]


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
cases = st.builds(
    Case,
    credentials=st.builds(
        Credentials,
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=20),
        text.filter(bool),
        st.none() | st.text("abcdefXYZ0123456789+/=", min_size=1, max_size=60),
    ),
    region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"]),
    host=st.sampled_from(["email.eu-west-1.amazonaws.com", "127.0.0.1:8443", "localhost:80"]),
    path=st.sampled_from(["/v2/email/outbound-emails", "/v2/email/outbound-bulk-emails"]),
    body=st.binary(max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(case=cases, now=st.floats(min_value=0, max_value=4e9))
def test_signature_matches_botocore(case: Case, now: float) -> None:
    headers, signature = sign(Signer(case.region, "ses"), case, now)
    stamp = headers["X-Amz-Date"]
    scope = f"{case.credentials.access_key}/{stamp[:8]}/{case.region}/ses/aws4_request"
    assert headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={scope}, ")
    assert signature == botocore_signature(case, stamp)
    assert headers.get("X-Amz-Security-Token") == case.credentials.token


def test_the_cached_signing_key_follows_the_date_and_secret() -> None:
    signer = Signer("us-east-1", "ses")
    for secret, now in [("a", 0.0), ("a", 86400.0), ("b", 86400.0), ("a", 86401.0)]:
        case = Case(Credentials("AK", secret), "us-east-1", "h", "/p", b"{}")
        headers, signature = sign(signer, case, now)
        assert signature == botocore_signature(case, headers["X-Amz-Date"])


class Capture(ThreadingHTTPServer):
    """Records each request and answers as SES does to a successful call."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), CaptureHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CaptureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Capture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers), body))
        if self.path.endswith("bulk-emails"):
            count = len(json.loads(body)["BulkEmailEntries"])
            answer: dict[str, Any] = {
                "BulkEmailEntryResults": [
                    {"Status": "SUCCESS", "MessageId": f"m{i}"} for i in range(count)
                ]
            }
        else:
            answer = {"MessageId": "m0"}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return monkeypatch


def transport(url: str, monkeypatch: pytest.MonkeyPatch, timeout: float = 2.0) -> SesTransport:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", url)
    return SesTransport(DEFAULTS, concurrency=2, connect_timeout=timeout, read_timeout=timeout)


BULK = [
    message(id=i, template="welcome", template_data=data, to=[f"u{i}@example.com"], cc=cc,
            bcc=bcc, reply_to=["help@example.com"], config_set="cs", from_address="a@b.example")
    for i, (data, cc, bcc) in enumerate(
        [('{"name":"Ann"}', [], []), (None, ["c@example.com"], ["d@example.com"]),
         ('{"x":{"y":[1,2,"\\u00e9"]}}', [], [])]
    )
]  # fmt: skip
SINGLES = [
    message(),
    message(body_text=None, body_html="<p>h\u00e9</p>", subject="Gr\u00fc\u00dfe"),
    message(body_html="<b>both</b>", reply_to=["r@example.com"], config_set="cs"),
    message(subject=None, body_text=None, raw_mime=b"From: a@b\r\nTo: c@d\r\n\r\n\xff\x00body"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_wire_request_is_what_boto3_sends(
    aws_env: pytest.MonkeyPatch, capture: Capture
) -> None:
    client = boto3.client(
        "sesv2", endpoint_url=capture.url, config=Config(retries={"total_max_attempts": 1})
    )
    ours = transport(capture.url, aws_env)
    for request, send in [(bulk_request(BULK, DEFAULTS), client.send_bulk_email)] + [
        (single_request(m, DEFAULTS), client.send_email) for m in SINGLES
    ]:
        send(**request)
    assert [r.verdict for r in await ours.send_bulk(BULK)] == [Verdict.SENT] * 3
    assert [(await ours.send_one(m)).provider_id for m in SINGLES] == ["m0"] * len(SINGLES)
    theirs, mine = capture.requests[: len(SINGLES) + 1], capture.requests[len(SINGLES) + 1 :]
    assert len(mine) == len(theirs)
    for (their_path, their_headers, their_body), (path, headers, body) in zip(
        theirs, mine, strict=True
    ):
        assert path == their_path
        assert json.loads(body) == json.loads(their_body)
        assert headers["Content-Type"] == their_headers["Content-Type"]
        assert headers["Host"] == their_headers["Host"]
        assert headers["User-Agent"].startswith("mailroom/")


@pytest.mark.anyio
async def test_a_bad_signature_is_refused_and_pauses(aws_env: pytest.MonkeyPatch) -> None:
    with SesStandin(credentials={"testing": "other-secret"}) as standin:
        result = await transport(standin.url, aws_env).send_one(message())
        assert (result.code, result.verdict) == ("SignatureDoesNotMatch", Verdict.PAUSE)
        assert result.whole_call
        assert standin.sent() == []


@pytest.mark.anyio
async def test_a_session_token_is_sent_and_signed(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzE//token==")
    with SesStandin(credentials={"testing": "testing"}) as standin:
        ours = transport(standin.url, aws_env)
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert [r.verdict for r in await ours.send_bulk(BULK)] == [Verdict.SENT] * 3
        assert len(standin.sent()) == 4


@pytest.mark.anyio
async def test_no_credentials_pauses_without_a_request(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    with SesStandin() as standin:
        result = await transport(standin.url, aws_env).send_one(message())
        assert (result.code, result.verdict) == ("NoCredentials", Verdict.PAUSE)
        assert standin.calls() == {}


@pytest.mark.anyio
async def test_service_errors_are_classified(aws_env: pytest.MonkeyPatch) -> None:
    with SesStandin(credentials={"testing": "testing"}) as standin:
        ours = transport(standin.url, aws_env)
        for kind, code, verdict in [
            ("throttle", "TooManyRequestsException", Verdict.RETRY),
            ("server_error", "InternalFailure", Verdict.RETRY),
            ("message_rejected", "MessageRejected", Verdict.DEAD),
            ("account_suspended", "AccountSuspendedException", Verdict.PAUSE),
            ("limit", "LimitExceededException", Verdict.PAUSE),  # "Daily message quota"
        ]:
            standin.inject(kind)
            results = await ours.send_bulk(BULK)
            assert {(r.code, r.verdict, r.whole_call) for r in results} == {(code, verdict, True)}
            assert results[0].detail


@pytest.mark.anyio
async def test_entry_statuses_come_back_per_message(aws_env: pytest.MonkeyPatch) -> None:
    with SesStandin() as standin:
        standin.entry_status_for("u1@", "MESSAGE_REJECTED")
        results = await transport(standin.url, aws_env).send_bulk(BULK)
        assert [r.verdict for r in results] == [Verdict.SENT, Verdict.DEAD, Verdict.SENT]
        assert results[1].code == "MESSAGE_REJECTED"
        assert not results[1].whole_call
        assert None not in (results[0].provider_id, results[2].provider_id)


@pytest.mark.anyio
async def test_network_failures_retry(aws_env: pytest.MonkeyPatch) -> None:
    with SesStandin(timeout_sleep=5) as standin:
        ours = transport(standin.url, aws_env, timeout=0.3)
        standin.inject("timeout")
        result = await ours.send_one(message())
        assert (result.code, result.verdict) == ("NetworkError", Verdict.RETRY)
        assert "timeout" in result.detail
        url = standin.url
    result = await transport(url, aws_env).send_one(message())  # nothing listens there now
    assert (result.code, result.verdict) == ("NetworkError", Verdict.RETRY)


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (400, {"x-amzn-errortype": "MessageRejected:http://internal/"}, b'{"message":"no"}',
         ("MessageRejected", "no")),
        (400, {}, b'{"__type":"com.amazon#BadRequestException","Message":"bad"}',
         ("BadRequestException", "bad")),
        (403, {}, b'{"code":"AccessDeniedException"}', ("AccessDeniedException", "")),
        (502, {}, b"<html>Bad Gateway</html>", ("502", "<html>Bad Gateway</html>")),
        (503, {}, b"", ("503", "")),
        (500, {}, b"[1]", ("500", "[1]")),
    ],
)  # fmt: skip
def test_error_answers_are_read_as_botocore_reads_them(
    status: int, headers: dict[str, str], body: bytes, expected: tuple[str, str]
) -> None:
    assert error_of(status, headers, body) == expected


def test_no_region_is_a_setup_error(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.delenv("AWS_REGION")
    aws_env.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(SetupError, match="no AWS region"):
        SesTransport(DEFAULTS, concurrency=1, connect_timeout=1, read_timeout=1)


# -- HTTPS, a private CA, a CONNECT proxy -------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM file) and a server context whose certificate it signed for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_cert = certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    server_cert = certificate("127.0.0.1", server_key, "test CA", ca_key, ca=False)
    directory = tmp_path_factory.mktemp("tls")
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.pem").write_bytes(
        server_cert.public_bytes(pem)
        + server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem")
    return directory / "ca.pem", context


class ConnectProxy:
    """An HTTP proxy that only tunnels (CONNECT), recording each request head."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.heads: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        self.heads.append(head.decode())
        host, port = head.split()[1].decode().rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.anyio
async def test_https_is_verified_against_the_ca_bundle(
    aws_env: pytest.MonkeyPatch, certificates: tuple[Path, ssl.SSLContext]
) -> None:
    ca, server_context = certificates
    with SesStandin(credentials={"testing": "testing"}, tls=server_context) as standin:
        assert standin.url.startswith("https://")
        untrusted = await transport(standin.url, aws_env).send_one(message())
        # the CA bundle is the daemon's configuration, not the message's fault: a pause
        assert (untrusted.code, untrusted.verdict) == ("TLSVerificationFailed", Verdict.PAUSE)
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
        aws_env.setenv("AWS_CA_BUNDLE", str(ca))
        ours = transport(standin.url, aws_env)
        assert (await ours.send_one(message())).verdict is Verdict.SENT
        assert [r.verdict for r in await ours.send_bulk(BULK)] == [Verdict.SENT] * 3
        assert len(standin.sent()) == 4
        assert standin.connections() == 1  # one kept alive (the refused one never got in)
        await ours.aclose()


@pytest.mark.anyio
async def test_https_goes_through_a_connect_proxy_unless_no_proxy(
    aws_env: pytest.MonkeyPatch, certificates: tuple[Path, ssl.SSLContext]
) -> None:
    ca, server_context = certificates
    aws_env.setenv("AWS_CA_BUNDLE", str(ca))
    proxy = ConnectProxy()
    try:
        with SesStandin(credentials={"testing": "testing"}, tls=server_context) as standin:
            aws_env.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://ann:s%40cret@"))
            aws_env.delenv("NO_PROXY", raising=False)
            aws_env.delenv("no_proxy", raising=False)
            assert (
                await transport(standin.url, aws_env).send_one(message())
            ).verdict is Verdict.SENT
            [head] = proxy.heads
            assert head.startswith(f"CONNECT 127.0.0.1:{standin.port} HTTP/1.1\r\n")
            assert "Proxy-Authorization: Basic " + base64.b64encode(b"ann:s@cret").decode() in head
            aws_env.setenv("NO_PROXY", "127.0.0.1")
            assert (
                await transport(standin.url, aws_env).send_one(message())
            ).verdict is Verdict.SENT
            assert len(proxy.heads) == 1  # the host is in NO_PROXY: straight there
            assert len(standin.sent()) == 2
    finally:
        proxy.close()
