"""SNS signatures: envelopes signed in the test with a throwaway RSA key and a self-signed
certificate, verified the way AWS documents; forged ones, and certificate URLs that are not
the SNS host of the topic's region, are refused (the latter without fetching anything).
Then the reader itself against moto's SQS and a real PostgreSQL: a forged bounce
suppresses nothing and leaves the queue, a signed one suppresses."""

from __future__ import annotations

import base64
import ipaddress
import json
import signal
import ssl
import threading
import urllib.error
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from moto.server import ThreadedMotoServer
from psycopg_pool import AsyncConnectionPool

import mailroom
from conftest import wait_for
from mailroom import metrics, sns
from mailroom.config import ConfigError, load
from mailroom.events_reader import EventsReader
from mailroom.outbox import Outbox
from mailroom.sns_certs import FAILURE_TTL, MAX_CERT_BYTES, Verifier, fetch_certificate
from ses_simulator import envelope
from test_admin import mailroom_cli
from test_deliverability_e2e import bounce_event, count, publish, queue_empty, sqs_client

pytestmark = pytest.mark.anyio

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123abcd.pem"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Signer:
    """A throwaway key and certificate, and envelopes signed with them as SNS signs."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def sign(self, document: dict[str, Any], version: str = "1") -> dict[str, Any]:
        text = sns.string_to_sign(document)
        assert text is not None
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS v1
        signature = self.key.sign(text, padding.PKCS1v15(), algorithm)
        return {**document, "SignatureVersion": version,
                "Signature": base64.b64encode(signature).decode(),
                "SigningCertURL": document.get("SigningCertURL", CERT_URL)}  # fmt: skip

    def envelope(self, event: dict[str, Any], version: str = "1", **fields: Any) -> dict[str, Any]:
        document = {
            "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
            "Message": json.dumps(event), "Timestamp": "2026-12-02T10:00:00.000Z",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        }  # fmt: skip
        document.update(fields)
        return self.sign(document, version)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


class Fetcher:
    """The injected certificate fetcher: counts the URLs asked for."""

    def __init__(self, pem: bytes | None) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if self.pem is None:
            raise OSError("connection refused")
        return self.pem


async def verdict(verifier: Verifier, document: dict[str, Any]) -> sns.Verdict:
    return await verifier.check(json.dumps(document))


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_genuine_envelope_verifies(signer: Signer, version: str) -> None:
    fetch = Fetcher(signer.pem)
    verifier = Verifier(fetch=fetch)
    genuine = signer.envelope(bounce_event("a@example.com", "ses-1"), version)
    assert await verdict(verifier, genuine) == sns.OK
    with_subject = signer.envelope({"x": 1}, version, Subject="Amazon SES Email Event")
    assert await verdict(verifier, with_subject) == sns.OK
    assert fetch.urls == [CERT_URL]  # fetched once, then cached


async def test_a_subscription_confirmation_verifies_over_its_own_fields(signer: Signer) -> None:
    document = signer.sign({
        "Type": "SubscriptionConfirmation", "MessageId": "m-1", "Token": "t" * 64,
        "TopicArn": TOPIC, "Message": "You have chosen to subscribe...",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": "2026-12-02T10:00:00.000Z",
    }, "2")  # fmt: skip
    verifier = Verifier(fetch=Fetcher(signer.pem))
    assert await verdict(verifier, document) == sns.OK
    assert (await verdict(verifier, {**document, "Token": "u" * 64})).reason == "bad_signature"


@pytest.mark.parametrize(
    ("field", "value"),
    [("Message", json.dumps({"eventType": "Bounce"})), ("MessageId", "another"),
     ("TopicArn", "arn:aws:sns:us-east-1:999999999999:ses-events"), ("Subject", "added"),
     ("Timestamp", "2026-12-02T10:00:01.000Z"), ("Type", "Notification ")],
)  # fmt: skip
async def test_a_changed_field_is_a_bad_signature(signer: Signer, field: str, value: str) -> None:
    forged = {**signer.envelope(bounce_event("a@example.com", "ses-1")), field: value}
    result = await verdict(Verifier(fetch=Fetcher(signer.pem)), forged)
    # a Type that is no SNS type is no SNS envelope: read as raw delivery, not refused here
    assert result.reason == ("bad_signature" if field != "Type" else "")


async def test_a_signature_over_another_version_or_of_another_key_is_refused(
    signer: Signer,
) -> None:
    genuine = signer.envelope(bounce_event("a@example.com", "ses-1"), "1")
    verifier = Verifier(fetch=Fetcher(signer.pem))
    assert (await verdict(verifier, {**genuine, "SignatureVersion": "2"})).reason == (
        "bad_signature"
    )
    for version in ("3", "", None, 1):
        assert (await verdict(verifier, {**genuine, "SignatureVersion": version})).reason == (
            "unsupported_version"
        )
    other = Signer()  # the attacker's own key, the genuine certificate URL
    forged = other.envelope(bounce_event("a@example.com", "ses-1"))
    assert (await verdict(verifier, forged)).reason == "bad_signature"
    for signature in ("not base64!", "", "A" * 2000):
        assert (await verdict(verifier, {**genuine, "Signature": signature})).reason == (
            "bad_signature"
        )
    no_signature = {k: v for k, v in genuine.items() if k != "Signature"}
    assert (await verdict(verifier, no_signature)).reason == "bad_signature"


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem",  # not the topic's
        "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:443@evil.example/x.pem",
        "https://sns.us-east-1.amazonaws.com./SimpleNotificationService-1.pem",
        "https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.cn/SimpleNotificationService-1.pem",  # aws, not cn
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
        "https://sns.us-east-1.amazonaws.com/x.pem?redirect=https://evil.example/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.pem#.pem",
        "https://sns.us-east-1.amazonaws.com/../evil.example/x.pem",
        "https://sns.us-east-1.amazonaws.com/%2e%2e/x.pem",
        "https://sns.us-east-1.amazonaws.com\\@evil.example/x.pem",
        "https://sns.us-east-1.amazonaws.com/x.pem\n",
        "https://sns.us-east-1.amazonaws\u3002com/x.pem",
        "//sns.us-east-1.amazonaws.com/x.pem",
        "",
        None,
        ["https://sns.us-east-1.amazonaws.com/x.pem"],
    ],
)
async def test_a_certificate_url_off_the_topics_sns_host_is_refused_unfetched(
    signer: Signer, url: Any
) -> None:
    fetch = Fetcher(signer.pem)
    # signed with the key the fetched certificate would hold: only the URL is wrong
    forged = signer.envelope(bounce_event("a@example.com", "ses-1"), SigningCertURL=url)
    assert (await verdict(Verifier(fetch=fetch), forged)).reason == "bad_cert_url"
    assert fetch.urls == []


async def test_a_topic_arn_that_names_no_region_is_refused_unfetched(signer: Signer) -> None:
    fetch = Fetcher(signer.pem)
    for arn in ("arn:aws:sns::123456789012:t", "arn:aws:sqs:us-east-1:123456789012:t",
                "evil.example", "arn:aws:sns:us-east-1.evil.example:1:t"):  # fmt: skip
        forged = signer.envelope({"x": 1}, TopicArn=arn)
        assert (await verdict(Verifier(fetch=fetch), forged)).reason == "bad_cert_url"
    assert fetch.urls == []


def test_the_other_partitions_hosts() -> None:
    china = "arn:aws-cn:sns:cn-north-1:123456789012:t"
    assert sns.cert_url("https://sns.cn-north-1.amazonaws.com.cn/a.pem", china) == (
        "https://sns.cn-north-1.amazonaws.com.cn/a.pem"
    )
    assert sns.cert_url("https://sns.cn-north-1.amazonaws.com/a.pem", china) is None
    gov = "arn:aws-us-gov:sns:us-gov-west-1:123456789012:t"
    assert sns.cert_url("https://sns.us-gov-west-1.amazonaws.com:443/a.pem", gov) == (
        "https://sns.us-gov-west-1.amazonaws.com/a.pem"
    )


async def test_a_failed_fetch_refuses_and_is_cached(signer: Signer) -> None:
    now = [1000.0]
    fetch = Fetcher(None)
    verifier = Verifier(fetch=fetch, clock=lambda: now[0])
    genuine = signer.envelope(bounce_event("a@example.com", "ses-1"))
    for _ in range(20):
        assert (await verdict(verifier, genuine)).reason == "cert_unavailable"
    assert fetch.urls == [CERT_URL]  # one attempt for twenty messages
    fetch.pem = signer.pem
    now[0] += FAILURE_TTL + 1
    assert await verdict(verifier, genuine) == sns.OK
    fetch.pem = b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n"
    other = signer.envelope({"x": 1}, SigningCertURL=CERT_URL.replace("0123", "4567"))
    assert (await verdict(verifier, other)).reason == "cert_unavailable"  # not a certificate


async def test_a_flood_of_unknown_certificate_urls_fetches_a_bounded_few(signer: Signer) -> None:
    fetch = Fetcher(None)
    verifier = Verifier(fetch=fetch)
    for i in range(200):
        url = f"https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{i:x}.pem"
        forged = signer.envelope({"x": i}, SigningCertURL=url)
        assert (await verdict(verifier, forged)).reason == "cert_unavailable"
    assert len(fetch.urls) == 10  # the budget per minute


async def test_what_is_read_unsigned_depends_on_the_setting(signer: Signer) -> None:
    raw = json.dumps(bounce_event("a@example.com", "ses-1"))
    bridge = json.dumps({"source": "aws.ses", "detail-type": "Email Bounced", "detail": {}})
    unsigned = json.dumps({"Type": "Notification", "MessageId": "m", "Message": raw})
    lax, strict = Verifier(fetch=Fetcher(signer.pem)), Verifier(require=True, fetch=Fetcher(None))
    for body in (raw, bridge, unsigned, "not json"):
        assert await lax.check(body) == sns.OK
        assert (await strict.check(body)).reason == "unsigned"
    # a signature present is checked whatever the setting
    forged = {**signer.envelope(json.loads(raw)), "MessageId": "other"}
    assert (await lax.check(json.dumps(forged))).reason == "bad_signature"


def test_the_setting_is_a_boolean_with_a_one_line_error() -> None:
    base = {"MAILROOM_DATABASE_URL": "postgresql:///x"}
    assert load(base).events_require_signature is False
    on = load({**base, "MAILROOM_EVENTS_REQUIRE_SIGNATURE": "true"})
    assert on.events_require_signature is True
    with pytest.raises(ConfigError) as caught:
        load({**base, "MAILROOM_EVENTS_REQUIRE_SIGNATURE": "sometimes"})
    assert str(caught.value).splitlines() == [
        "MAILROOM_EVENTS_REQUIRE_SIGNATURE: must be true or false (got 'sometimes')"
    ]
    topics = load({**base, "MAILROOM_EVENTS_SNS_TOPICS": f"{TOPIC}, {TOPIC}.fifo"})
    assert topics.events_sns_topics == {TOPIC, f"{TOPIC}.fifo"}
    with pytest.raises(ConfigError) as caught:
        load({**base, "MAILROOM_EVENTS_SNS_TOPICS": f"{TOPIC},arn:aws:sqs:us-east-1:1:q"})
    assert str(caught.value).splitlines() == [
        "MAILROOM_EVENTS_SNS_TOPICS: 'arn:aws:sqs:us-east-1:1:q' is not an SNS topic ARN "
        f"(arn:aws:sns:<region>:<account>:<name>) (got '{TOPIC},arn:aws:sqs:us-east-1:1:q')"
    ]
    for command in ("config", "run"):  # the daemon refuses to start, in the same words
        result = mailroom_cli(command, env={**base, "MAILROOM_EVENTS_REQUIRE_SIGNATURE": "2"})
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "mailroom: MAILROOM_EVENTS_REQUIRE_SIGNATURE: must be true or false (got '2')"
        ]


# --- the reader, moto's SQS and a real PostgreSQL -------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def pool(db: str, anyio_backend: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db, kwargs={"autocommit": True}, open=False, min_size=1, max_size=2
    )
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


ReaderRun = Callable[..., Any]


@pytest.fixture
def read_queue(moto_url: str, pool: AsyncConnectionPool[Any], db: str, signer: Signer) -> ReaderRun:
    """Publish SQS bodies to a fresh moto queue and let the reader (with the test's
    certificate fetcher) handle everything it receives; returns the refusal counts."""

    async def run(bodies: list[str], **env: str) -> dict[str, float]:
        sqs = sqs_client(moto_url)
        url = sqs.create_queue(QueueName=f"ses-events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        publish(sqs, url, bodies)
        config = load({"MAILROOM_DATABASE_URL": db, "MAILROOM_EVENTS_QUEUE_URL": url, **env})
        verifier = Verifier(require=config.events_require_signature,
                            topics=config.events_sns_topics, fetch=Fetcher(signer.pem))  # fmt: skip
        reader = EventsReader(config, Outbox(pool, queue="q", owner="w"), sqs, verifier=verifier)
        before = {r: metrics.EVENTS_MALFORMED.labels(r)._value.get() for r in sns.REASONS}
        with anyio.fail_after(30):
            while not queue_empty(sqs, url):
                received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
                assert await reader.handle(received.get("Messages") or [])
        return {r: metrics.EVENTS_MALFORMED.labels(r)._value.get() - before[r]
                for r in sns.REASONS}  # fmt: skip

    return run


def suppressed(conn: psycopg.Connection[Any]) -> set[str]:
    return {a for (a,) in conn.execute("SELECT address FROM mailroom.suppressions")}


async def test_a_forged_sns_bounce_suppresses_nothing_and_leaves_the_queue(
    read_queue: ReaderRun, conn: psycopg.Connection[Any], signer: Signer
) -> None:
    """The attack: anyone who may send to the queue signs a bounce with a key of their own,
    or alters a genuine one. Before the reader checked signatures, both suppressed
    victim@example.com; now both are refused as bad_signature and deleted."""
    attacker = Signer()
    own_key = attacker.envelope(bounce_event("victim@example.com", "ses-forged"))
    genuine = signer.envelope(bounce_event("other@example.com", "ses-genuine"))
    altered = {**genuine, "Message": json.dumps(bounce_event("victim@example.com", "ses-x"))}
    refused = await read_queue([json.dumps(own_key), json.dumps(altered)])
    assert refused["bad_signature"] == 2
    assert suppressed(conn) == set()
    assert count(conn, "SELECT count(*) FROM mailroom.events") == 0


async def test_a_signed_sns_bounce_suppresses(
    read_queue: ReaderRun, conn: psycopg.Connection[Any], signer: Signer
) -> None:
    bodies = [json.dumps(signer.envelope(bounce_event("gone@example.com", "ses-1"), "2"))]
    refused = await read_queue(bodies, MAILROOM_EVENTS_REQUIRE_SIGNATURE="true")
    assert sum(refused.values()) == 0
    assert suppressed(conn) == {"gone@example.com"}


async def test_with_signatures_required_raw_delivery_suppresses_nothing(
    read_queue: ReaderRun, conn: psycopg.Connection[Any], signer: Signer
) -> None:
    raw = json.dumps(bounce_event("victim@example.com", "ses-raw"))
    bridge = json.dumps({"source": "aws.ses", "detail-type": "Email Bounced",
                         "detail": bounce_event("victim2@example.com", "ses-eb")})  # fmt: skip
    refused = await read_queue([raw, bridge], MAILROOM_EVENTS_REQUIRE_SIGNATURE="true")
    assert refused["unsigned"] == 2
    assert suppressed(conn) == set()
    # the same messages without the setting: the queue policy is the boundary
    refused = await read_queue([raw, bridge])
    assert sum(refused.values()) == 0
    assert suppressed(conn) == {"victim@example.com", "victim2@example.com"}


async def test_a_genuinely_signed_envelope_of_another_topic_is_refused_when_topics_are_set(
    read_queue: ReaderRun, conn: psycopg.Connection[Any], signer: Signer
) -> None:
    """The attack: SNS signs every topic's messages, the attacker's own topic's too. A
    bounce published to a topic of the attacker's account, copied into the queue, carries
    AWS's genuine signature (here: the test's key, as AWS's). Before
    MAILROOM_EVENTS_SNS_TOPICS it suppressed victim@example.com even with signatures
    required; now it is refused as unknown_topic, and the own topic's events still count."""
    theirs = signer.envelope(bounce_event("victim@example.com", "ses-theirs"),
                             TopicArn="arn:aws:sns:us-east-1:999999999999:ses-events")  # fmt: skip
    ours = signer.envelope(bounce_event("gone@example.com", "ses-ours"))
    refused = await read_queue(
        [json.dumps(theirs), json.dumps(ours)],
        MAILROOM_EVENTS_REQUIRE_SIGNATURE="true", MAILROOM_EVENTS_SNS_TOPICS=f" {TOPIC} ,",
    )  # fmt: skip
    assert refused["unknown_topic"] == 1
    assert suppressed(conn) == {"gone@example.com"}


@pytest.mark.slow
def test_a_daemon_requiring_signatures_reads_no_unsigned_event_and_still_sends(
    conn: psycopg.Connection[Any], moto_url: str, spawn: Any
) -> None:
    """The setting as the daemon reads it (no injected fetcher; nothing here is fetched):
    unsigned SNS envelopes and raw delivery are refused, deleted, and suppress nothing."""
    sqs = sqs_client(moto_url)
    url = sqs.create_queue(QueueName=f"ses-events-{uuid.uuid4().hex[:8]}",
                           Attributes={"VisibilityTimeout": "2"})["QueueUrl"]  # fmt: skip
    bounce = bounce_event("victim@example.com", "ses-unsigned")
    publish(sqs, url, [envelope(bounce), json.dumps(bounce)])
    daemon = spawn(MAILROOM_EVENTS_QUEUE_URL=url, AWS_ENDPOINT_URL_SQS=moto_url,
                   MAILROOM_EVENTS_REQUIRE_SIGNATURE="true")  # fmt: skip
    wait_for(lambda: queue_empty(sqs, url), timeout=30)
    control = mailroom.enqueue(conn, "control@example.com", subject="control", text="t")
    sent = "SELECT count(*) FROM mailroom.outbox WHERE id = %s AND status = 'sent'"
    wait_for(lambda: count(conn, sent, control) == 1, timeout=30)
    assert suppressed(conn) == set()
    assert count(conn, "SELECT count(*) FROM mailroom.events") == 0
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    reasons = [e["reason"] for e in daemon.events() if e["event"] == "event_malformed"]
    assert reasons == ["unsigned", "unsigned"]


# --- the default fetcher, over real HTTPS ---------------------------------------------


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved.pem":
            self.send_response(302)
            self.send_header("Location", "/cert.pem")
            self.end_headers()
            return
        body = b"x" * (MAX_CERT_BYTES + 1) if self.path == "/huge.pem" else b"PEM"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def https_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, CA file): an HTTPS server on 127.0.0.1 with a certificate of its own."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("https")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(cert_file)
    server.shutdown()


def test_the_default_fetcher_trusts_tls_follows_no_redirect_and_caps_the_size(
    https_site: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, ca_file = https_site
    with pytest.raises(urllib.error.URLError):  # a TLS certificate the system does not trust
        fetch_certificate(f"{base}/cert.pem")
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    assert fetch_certificate(f"{base}/cert.pem") == b"PEM"
    with pytest.raises(urllib.error.HTTPError):  # 302: refused, not followed
        fetch_certificate(f"{base}/moved.pem")
    with pytest.raises(ValueError, match="over 65536 bytes"):
        fetch_certificate(f"{base}/huge.pem")
    with pytest.raises(ValueError, match="not an HTTPS URL"):
        fetch_certificate(base.replace("https", "http") + "/cert.pem")
