"""SNS signatures: envelopes signed in the test with a throwaway RSA key and a self-signed
certificate, verified the way AWS documents; forged ones, and certificate URLs that are not
the SNS host of the topic's region, are refused (the latter without fetching anything).
The reader and the daemon with them: tests/test_sns_reader.py."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailroom.config.settings import ConfigError, load
from mailroom.events import sns
from mailroom.events.sns_certs import FAILURE_TTL, Verifier
from test_admin import mailroom_cli
from test_deliverability_e2e import bounce_event

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
        result = mailroom_cli(command, env={  # a console log: `run` speaks JSON without one
            **base, "MAILROOM_EVENTS_REQUIRE_SIGNATURE": "2", "MAILROOM_LOG_FORMAT": "console",
        })  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            "mailroom: MAILROOM_EVENTS_REQUIRE_SIGNATURE: must be true or false (got '2')"
        ]


def test_a_daemon_without_an_events_queue_does_not_load_cryptography() -> None:
    """Every daemon imports the events reader (for the account-health refresh); the
    signature checks and their ~7.7 MiB of cryptography load only with a signature to
    check (test_cryptography_loads_with_the_first_signature_to_verify)."""
    code = (
        "import sys, mailroom.cli.commands, mailroom.daemon.run; mailroom.cli.commands.parser(); "
        "print('cryptography' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "False"


def test_cryptography_loads_with_the_first_signature_to_verify() -> None:
    """A reader of a raw-delivery queue (no SNS envelope, no signature) never loads
    cryptography (7.7 MiB); the first signed envelope loads it, and is checked."""
    code = """
import base64, json, sys, anyio
from mailroom.events.reader import EventsReader
from mailroom.events.sns_certs import Verifier
verifier = Verifier(fetch=lambda url: b"not a certificate")
print("=", anyio.run(verifier.check, '{"eventType": "Bounce"}').ok, "cryptography" in sys.modules)
signed = {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:us-east-1:1:t",
          "Message": "{}", "Timestamp": "2026-01-01T00:00:00Z", "SignatureVersion": "1",
          "Signature": base64.b64encode(b"x" * 256).decode(),
          "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0a.pem"}
verdict = anyio.run(verifier.check, json.dumps(signed))
print("=", verdict.reason, "cryptography" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    said = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("= ")]
    assert said == [["True", "False"], ["cert_unavailable", "True"]]  # the log lines aside
