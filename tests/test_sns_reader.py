"""SNS signatures end to end: the events reader against moto's SQS and a real PostgreSQL
with an injected certificate fetcher (a forged bounce suppresses nothing and leaves the
queue, a signed one suppresses), a daemon requiring signatures, and the default
certificate fetcher over real HTTPS."""

from __future__ import annotations

import ipaddress
import json
import signal
import ssl
import threading
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from psycopg_pool import AsyncConnectionPool

import mailroom
from conftest import wait_for
from mailroom import metrics
from mailroom.config.settings import load
from mailroom.events import sns
from mailroom.events.reader import EventsReader
from mailroom.events.sns_certs import MAX_CERT_BYTES, Verifier, fetch_certificate
from mailroom.outbox import Outbox
from ses_simulator import envelope
from test_deliverability_e2e import bounce_event, count, publish, queue_empty, sqs_client
from test_sns import TOPIC, Fetcher, Signer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


# --- the reader, moto's SQS and a real PostgreSQL -------------------------------------


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


async def test_a_genuine_event_waits_in_the_queue_while_the_certificate_cannot_be_fetched(
    moto_url: str, pool: AsyncConnectionPool[Any], db: str, signer: Signer,
    conn: psycopg.Connection[Any],
) -> None:  # fmt: skip
    """An unreachable certificate host is an outage, not the message's fault: the event is
    not deleted (it would be lost), and is read once the certificate can be had."""
    sqs = sqs_client(moto_url)
    url = sqs.create_queue(QueueName=f"ses-events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    publish(sqs, url, [json.dumps(signer.envelope(bounce_event("late@example.com", "ses-l")))])
    config = load({"MAILROOM_DATABASE_URL": db, "MAILROOM_EVENTS_QUEUE_URL": url})
    outbox = Outbox(pool, queue="q", owner="w")
    down = EventsReader(config, outbox, sqs, verifier=Verifier(fetch=Fetcher(None)))
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert await down.handle(received)
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "1"  # kept, in flight
    assert suppressed(conn) == set()
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    up = EventsReader(config, outbox, sqs, verifier=Verifier(fetch=Fetcher(signer.pem)))
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert await up.handle(again)
    assert suppressed(conn) == {"late@example.com"}
    assert queue_empty(sqs, url)


async def test_refused_messages_are_deleted_before_their_batch_mates_are_stored(
    moto_url: str, pool: AsyncConnectionPool[Any], db: str, conn: psycopg.Connection[Any],
) -> None:  # fmt: skip
    """A refused message of a batch is deleted before the batch is stored, so a store that
    takes longer than the visibility timeout cannot hand it out again (the fuzzing saw a
    malformed message refused twice behind a 5,000-recipient batch-mate)."""
    sqs = sqs_client(moto_url)
    url = sqs.create_queue(QueueName=f"ses-events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    publish(sqs, url, ["not json", envelope(bounce_event("b@example.com", "ses-b"))])
    in_flight_during_store: list[str] = []

    class Watched(Outbox):
        async def ingest_events(self, params: Any) -> Any:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            in_flight_during_store.append(attributes["ApproximateNumberOfMessagesNotVisible"])
            return await super().ingest_events(params)

    config = load({"MAILROOM_DATABASE_URL": db, "MAILROOM_EVENTS_QUEUE_URL": url})
    reader = EventsReader(config, Watched(pool, queue="q", owner="w"), sqs)
    received: list[dict[str, Any]] = []
    for _ in range(20):  # moto may answer with fewer than it holds
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        if len(received) == 2:
            break
    assert len(received) == 2
    assert await reader.handle(received)
    assert suppressed(conn) == {"b@example.com"}
    assert in_flight_during_store == ["1"]  # the refused one was gone already
    assert queue_empty(sqs, url)
    assert suppressed(conn) == {"b@example.com"}
