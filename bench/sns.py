"""``python -m bench.sns``: what checking SNS signatures costs the events reader, per message.

The events reader checks a message's SNS signature (``mailroom.events.sns_certs.Verifier.check``)
before parsing it (``mailroom.events.parse_counted``). This measures, in one process and
one run, the CPU per SQS message of

- the reader's path before signatures were checked: parsing alone (the peer);
- an unsigned SNS envelope (raw delivery off, no signature): the check finds none;
- a signed envelope, SignatureVersion 1 (RSA-2048, SHA1) and 2 (SHA256),

with the signing certificate already cached (it is fetched once per URL and hour), a
throwaway 2048-bit key standing in for SNS's. Prints a markdown table; the events/s column
is what one core could check and parse at that cost, not a daemon's throughput (see
``python -m bench.events`` for that).
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailroom.events import sns
from mailroom.events.parsing import parse_counted
from mailroom.events.sns_certs import Verifier

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-bench.pem"


def _event(n: int) -> dict[str, Any]:
    return {
        "eventType": "Delivery",
        "mail": {"messageId": f"bench-{n}", "timestamp": "2026-12-02T10:00:00.000Z",
                 "destination": [f"user{n}@example.com"]},
        "delivery": {"timestamp": "2026-12-02T10:00:01.000Z",
                     "recipients": [f"user{n}@example.com"]},
    }  # fmt: skip


class _Signer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.pem = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )  # fmt: skip

    def envelope(self, n: int, version: str | None) -> str:
        document: dict[str, Any] = {
            "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
            "Message": json.dumps(_event(n)), "Timestamp": "2026-12-02T10:00:00.000Z",
        }  # fmt: skip
        if version is not None:
            text = sns.string_to_sign(document)
            assert text is not None
            algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS v1
            signature = self.key.sign(text, padding.PKCS1v15(), algorithm)
            document.update(SignatureVersion=version, SigningCertURL=CERT_URL,
                            Signature=base64.b64encode(signature).decode())  # fmt: skip
        return json.dumps(document)


async def _cpu_per_message(bodies: list[str], verifier: Verifier | None) -> float:
    """CPU seconds per message of checking (when ``verifier``) and parsing ``bodies``, in
    one event loop as the reader runs them."""
    started = time.process_time()
    for body in bodies:
        if verifier is not None:
            verdict = await verifier.check(body)
            assert verdict.ok, verdict
        parse_counted(body)
    return (time.process_time() - started) / len(bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="messages per measurement")
    parser.add_argument("--runs", type=int, default=5, help="measurements of each")
    args = parser.parse_args()
    signer = _Signer()
    verifier = Verifier(fetch=lambda url: signer.pem)
    cases: dict[str, tuple[str | None, Verifier | None]] = {
        "parse only (the reader before signatures)": (None, None),
        "unsigned SNS envelope: check + parse": (None, verifier),
        "signed, SignatureVersion 1: check + parse": ("1", verifier),
        "signed, SignatureVersion 2: check + parse": ("2", verifier),
    }
    anyio.run(_cpu_per_message, [signer.envelope(0, "1")], verifier)  # caches the certificate
    print(f"{args.n} messages a measurement, {args.runs} measurements, medians\n")
    print("| path | CPU us / message | events/s per core |")
    print("| --- | ---: | ---: |")
    for label, (version, check) in cases.items():
        bodies = [signer.envelope(n, version) for n in range(args.n)]
        cost = statistics.median(
            anyio.run(_cpu_per_message, bodies, check) for _ in range(args.runs)
        )
        print(f"| {label} | {cost * 1e6:.1f} | {1 / cost:,.0f} |")


if __name__ == "__main__":
    main()
