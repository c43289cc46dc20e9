"""AWS Signature Version 4 for the two SES calls the daemon makes. No I/O.

The daemon signs a few hundred requests a second; botocore's generic request pipeline
(model lookup, endpoint rules, event hooks, signing) cost more CPU than everything else on
the send path together. This module is the signing part of that pipeline for one shape of
request: a POST with a JSON body and no query string. Tests check every signature against
botocore's own signer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import NamedTuple

ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class Signer:
    """Signs requests for one region and service; caches the day's signing key."""

    def __init__(self, region: str, service: str) -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, date, derived key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = _hmac(("AWS4" + secret).encode("utf-8"), date)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (secret, date, key)
        return key

    def headers(
        self,
        credentials: Credentials,
        host: str,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/json",
        now: float | None = None,
    ) -> dict[str, str]:
        """The headers that sign ``POST path`` with ``body`` to ``host`` (host[:port])."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        date = stamp[:8]
        signed = {"content-type": content_type, "host": host, "x-amz-date": stamp}
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        names = ";".join(signed)  # already in sorted order
        canonical = "\n".join(
            (
                "POST",
                path,
                "",  # no query string
                *(f"{name}:{value}" for name, value in signed.items()),
                "",
                names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = "\n".join(
            (ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
        )
        key = self._signing_key(credentials.secret_key, date)
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        authorization = (
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}"
        )
        headers = {
            "Content-Type": content_type,
            "X-Amz-Date": stamp,
            "Authorization": authorization,
        }
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        return headers
