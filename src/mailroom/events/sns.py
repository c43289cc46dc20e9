"""SNS message signatures, as AWS documents them ("Verifying the signatures of Amazon SNS
messages"). Pure: no I/O. The certificate is fetched by ``mailroom.events.sns_certs``, and only
from the URL :func:`prepare` approved.

An SNS envelope is signed over some of its own fields, each as ``"Key\\nvalue\\n"`` in a
fixed order (Subject only when present), with RSA PKCS#1 v1.5 over SHA1
(``SignatureVersion`` 1) or SHA256 (2). The public key is in an X.509 certificate at
``SigningCertURL``, which must be an HTTPS URL on the SNS host of the region the message's
``TopicArn`` names: the TLS connection to that host is what makes the certificate AWS's.
Anything else is refused before anything is fetched.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # cryptography (7.7 MiB) loads with the first signature to verify:
    # a queue with raw delivery (no SNS envelopes) never pays for it
    from cryptography.x509 import Certificate

# Why a message is refused: metric labels (mailroom_events_malformed_total{reason}).
REASONS = (
    "bad_signature", "bad_cert_url", "unsupported_version", "cert_unavailable", "unsigned",
    "unknown_topic",
)  # fmt: skip
SNS_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})
# The fields that make an envelope signed: any of them present, it must verify.
SIGNATURE_FIELDS = ("Signature", "SignatureVersion", "SigningCertURL")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
    ),
}  # fmt: skip
_OPTIONAL = frozenset({"Subject"})
_HASHES = {"1": "SHA1", "2": "SHA256"}  # SignatureVersion: the hash under RSA PKCS#1 v1.5
# arn:<partition>:sns:<region>:<account>:<topic>; the partition decides the host's domain.
_TOPIC_ARN = re.compile(r"arn:(aws|aws-cn|aws-us-gov):sns:([a-z]{2}(?:-[a-z]+)+-[0-9]):")
_DOMAINS = {"aws": "amazonaws.com", "aws-cn": "amazonaws.com.cn", "aws-us-gov": "amazonaws.com"}
# What SNS's certificate paths look like (/SimpleNotificationService-<hex>.pem); no dot
# segments, no escapes, nothing a URL parser and an HTTP client could read differently.
_CERT_PATH = re.compile(r"/[A-Za-z0-9_-]+(?:/[A-Za-z0-9_-]+)*\.pem")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # ASCII without spaces or control characters
MAX_SIGNATURE = 1024  # base64 characters: a 4096-bit RSA signature is 684


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok``, or why not: ``reason`` is one of REASONS."""

    ok: bool
    reason: str = ""
    detail: str = ""


OK = Verdict(True)


def refuse(reason: str, detail: str) -> Verdict:
    return Verdict(False, reason, detail)


@dataclass(frozen=True, slots=True)
class Pending:
    """A signed envelope whose fields check out: verify ``signature`` over ``data`` with
    the certificate at ``cert_url`` (the only URL that may be fetched for it)."""

    cert_url: str
    signature: bytes
    data: bytes
    version: str


def is_sns(document: Any) -> bool:
    """Whether a decoded SQS body is an SNS envelope (not raw delivery, not EventBridge)."""
    return isinstance(document, dict) and document.get("Type") in SNS_TYPES


def is_signed(document: dict[str, Any]) -> bool:
    return any(name in document for name in SIGNATURE_FIELDS)


def string_to_sign(document: dict[str, Any]) -> bytes | None:
    """The canonical text an SNS envelope is signed over; None if a field it needs is
    missing or not a string (no genuine envelope is like that)."""
    kind = document.get("Type")
    fields = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        return None
    parts = []
    for name in fields:
        value = document.get(name)
        if value is None and name in _OPTIONAL:
            continue
        if not isinstance(value, str):
            return None
        parts.append(f"{name}\n{value}\n")
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: SNS signs UTF-8, which cannot hold one
        return None


def cert_url(url: Any, topic_arn: Any) -> str | None:
    """The certificate URL to fetch, rebuilt from its checked parts, or None: HTTPS, the
    SNS host of the topic's own region and partition exactly, port 443 if any, no user
    info, query or fragment, a plain path ending in .pem."""
    if not isinstance(url, str) or not isinstance(topic_arn, str):
        return None
    if not _PRINTABLE.fullmatch(url):  # urlsplit drops tabs and newlines: refuse them first
        return None
    arn = _TOPIC_ARN.match(topic_arn)
    if arn is None:
        return None
    host = f"sns.{arn[2]}.{_DOMAINS[arn[1]]}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable netloc or port
        return None
    if (
        parts.scheme != "https"
        or "@" in parts.netloc
        or parts.netloc not in (host, f"{host}:443")
        or port not in (None, 443)
        or parts.query
        or parts.fragment
        or "?" in url
        or "#" in url
        or not _CERT_PATH.fullmatch(parts.path)
    ):
        return None
    return f"https://{host}{parts.path}"


def prepare(document: dict[str, Any]) -> Pending | Verdict:
    """Check a signed envelope's fields without fetching anything: a refusal, or what to
    verify with which certificate."""
    version = document.get("SignatureVersion")
    if version not in _HASHES:
        return refuse("unsupported_version", f"SignatureVersion {str(version)[:10]!r}")
    raw = document.get("Signature")
    if not isinstance(raw, str) or not raw or len(raw) > MAX_SIGNATURE:
        return refuse("bad_signature", "no usable Signature")
    try:
        signature = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return refuse("bad_signature", "Signature is not base64")
    url = cert_url(document.get("SigningCertURL"), document.get("TopicArn"))
    if url is None:
        return refuse("bad_cert_url", "SigningCertURL is not an SNS host of the topic's region")
    data = string_to_sign(document)
    if data is None:
        return refuse("bad_signature", "a signed field is missing or not a string")
    return Pending(url, signature, data, str(version))


def verify(pending: Pending, certificate: Certificate) -> Verdict:
    """Whether ``pending``'s signature is the certificate key's over its data."""
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 -- see above
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: PLC0415

    algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}[pending.version]  # as _HASHES names
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return refuse("bad_signature", "the signing certificate's key is not RSA")
    try:
        key.verify(pending.signature, pending.data, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        return refuse("bad_signature", "the signature does not match the message")
    return OK
