"""The events reader's trust check: which SQS messages may be read at all.

An SNS envelope that carries a signature must verify (``mailroom.events.sns``); with
``MAILROOM_EVENTS_REQUIRE_SIGNATURE`` every message must be a validly signed SNS envelope.
With ``MAILROOM_EVENTS_SNS_TOPICS``, a signed envelope of another topic is refused: SNS
signs every topic's messages, those of a topic in the attacker's own account too.
Without a signature required, raw delivery and EventBridge messages are read as they
come: the SQS queue policy, which says who may send to the queue, is the boundary
(docs/deliverability.md).

Signing certificates are fetched over HTTPS only from the URL ``sns.prepare`` approved,
one fetch at a time, with a short timeout and a size cap, and cached by URL (a bounded
cache with a TTL). A failed fetch is cached too, for a minute, and fetches of new URLs
are budgeted per minute: a flood of messages naming certificates that do not exist costs
a few requests to AWS's own hosts, not one per message.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from mailroom.events import sns
from mailroom.events.sns import OK, Pending, Verdict, refuse

if TYPE_CHECKING:  # loaded with the first certificate (mailroom.events.sns: why)
    from cryptography import x509

log = structlog.get_logger("mailroom.events")

Fetch = Callable[[str], bytes]  # blocking: the certificate's PEM bytes, or raise

FETCH_TIMEOUT = 5.0  # seconds: the reader waits for it, with the rest of its batch
MAX_CERT_BYTES = 64 * 1024  # an SNS signing certificate is under 2 KiB
CACHE_SIZE = 16  # certificates kept: SNS uses one per region at a time
CACHE_TTL = 3600.0  # seconds a fetched certificate is trusted before it is fetched again
FAILURE_TTL = 60.0  # seconds a failed fetch is remembered: no retry per message
FETCH_BUDGET = 10  # fetches of certificates not in the cache per minute, at most


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The approved URL, or nothing: a redirect could lead anywhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_certificate(url: str) -> bytes:
    """GET ``url`` (an HTTPS URL ``sns.cert_url`` approved) with the system's CA bundle,
    a timeout and a size cap; raises on any failure."""
    if not url.startswith("https://"):  # sns.cert_url makes only these
        raise ValueError("not an HTTPS URL")
    opener = urllib.request.build_opener(_NoRedirect())
    with opener.open(url, timeout=FETCH_TIMEOUT) as answer:
        if answer.status != 200:
            raise OSError(f"HTTP {answer.status}")
        body: bytes = answer.read(MAX_CERT_BYTES + 1)
    if len(body) > MAX_CERT_BYTES:
        raise ValueError(f"over {MAX_CERT_BYTES} bytes")
    return body


class Verifier:
    """Decides, per SQS message body, whether the reader may read it (``check``)."""

    def __init__(
        self,
        *,
        require: bool = False,
        topics: frozenset[str] = frozenset(),
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.require = require
        self.topics = topics  # empty: any topic's signed messages
        self._fetch = fetch or fetch_certificate
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, x509.Certificate | None]] = OrderedDict()
        self._fetched: deque[float] = deque()  # times of recent fetches (the budget)
        self._lock = anyio.Lock()  # one fetch at a time, whatever the pollers

    async def check(self, body: str) -> Verdict:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None  # not JSON: the parser says so, unless a signature is required
        if not sns.is_sns(document):
            return refuse("unsigned", "not an SNS envelope") if self.require else OK
        if not sns.is_signed(document):
            return refuse("unsigned", "an SNS envelope without a signature") if self.require else OK
        if self.topics and document.get("TopicArn") not in self.topics:
            # before fetching: SNS signs every topic's messages, an attacker's own too
            return refuse("unknown_topic", "the TopicArn is not in MAILROOM_EVENTS_SNS_TOPICS")
        prepared = sns.prepare(document)
        if isinstance(prepared, Verdict):
            return prepared
        certificate = await self._certificate(prepared)
        if certificate is None:
            return refuse("cert_unavailable", "the signing certificate could not be fetched")
        return sns.verify(prepared, certificate)

    async def _certificate(self, pending: Pending) -> x509.Certificate | None:
        cached = self._cached(pending.cert_url)
        if cached is not None:
            return cached[1]
        async with self._lock:
            cached = self._cached(pending.cert_url)  # fetched while this one waited
            if cached is not None:
                return cached[1]
            now = self._clock()
            while self._fetched and self._fetched[0] <= now - 60.0:
                self._fetched.popleft()
            if len(self._fetched) >= FETCH_BUDGET:
                return None  # not cached: the URL is not known to be bad
            self._fetched.append(now)
            certificate = await self._load(pending.cert_url)
            ttl = CACHE_TTL if certificate is not None else FAILURE_TTL
            self._cache[pending.cert_url] = (self._clock() + ttl, certificate)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            return certificate

    def _cached(self, url: str) -> tuple[float, x509.Certificate | None] | None:
        entry = self._cache.get(url)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[url]
            return None
        self._cache.move_to_end(url)
        return entry

    async def _load(self, url: str) -> x509.Certificate | None:
        from cryptography import x509  # noqa: PLC0415 -- see the import above

        try:
            # abandoned on cancellation: a fetch still waiting must not hold up a shutdown
            pem = await anyio.to_thread.run_sync(self._fetch, url, abandon_on_cancel=True)
            return x509.load_pem_x509_certificate(pem)
        except Exception as exc:  # any failure to fetch or read: the certificate is unavailable
            # once per URL and FAILURE_TTL: the failure is cached
            log.warning("sns_certificate_unavailable", url=url[:200], error=type(exc).__name__,
                        detail=str(exc)[:200])  # fmt: skip
            return None
