"""The HTTP exchange of the SES transport, carried by aiohttp: keep-alive pool, TLS,
proxies (CONNECT for https, absolute-form for http) and response framing are aiohttp's.

The SES calls run on the daemon's event loop, not in worker threads (docs/BENCHMARKS.md).
What stays here is the policy: one budget per call (connect + read, which the lease is
sized for) covering the connection, the write and the whole answer; a cap on the answer's
size; a connection that failed in any way is closed, never reused; and every failure is
one ``ExchangeError`` with a code ``mailroom.transports.classify`` knows.
"""

from __future__ import annotations

import ssl
from typing import NamedTuple

import aiohttp
from yarl import URL

MAX_BODY = 16 * 1024 * 1024  # an SES answer is a few KiB; anything near this is not SES
IDLE_LIMIT = 15.0  # seconds an idle connection is kept (below typical server idle timeouts)


class ExchangeError(Exception):
    """No answer: ``code`` is NetworkError (transient), or TLSVerificationFailed /
    ProxyAuthenticationRequired (the daemon's own configuration: sending pauses)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class Exchange:
    """POSTs to one origin over up to ``concurrency`` keep-alive connections."""

    def __init__(
        self,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        proxy_headers: dict[str, str] | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context
        self.proxy = proxy
        self.proxy_headers = proxy_headers or None
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            keepalive_timeout=IDLE_LIMIT,
            ssl=self.ssl_context if self.ssl_context is not None else True,
        )
        timeout = aiohttp.ClientTimeout(
            total=self.connect_timeout + self.read_timeout,  # the call's whole budget
            connect=self.connect_timeout,  # a free slot in the pool, the proxy, TLS
            sock_read=self.read_timeout,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding",),  # SES answers are small: no gzip
            trust_env=False,  # botocore chose the proxy (awsconfig.py)
        )
        return self._session

    async def post(self, url: URL, headers: dict[str, str], body: bytes) -> Response:
        """POST ``body``; ``headers`` carry Host (the signed one) but not Content-Length."""
        session = self._session or self._open()
        if self.proxy_headers and url.scheme == "http":
            # A forwarding proxy reads its credentials from the request itself; aiohttp
            # sends proxy_headers only on a CONNECT (as urllib3 does for botocore)
            headers = {**headers, **self.proxy_headers}
        try:
            response = await session.post(
                url,
                data=body,
                headers=headers,
                proxy=self.proxy,
                proxy_headers=self.proxy_headers,
                allow_redirects=False,
            )
            try:
                data = await _read(response)
            except BaseException:
                response.close()  # half-read or cancelled: the connection is not reused
                raise
            response.release()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ExchangeError("TLSVerificationFailed", str(exc)) from exc
        except aiohttp.ClientHttpProxyError as exc:
            if exc.status in (401, 407):
                raise ExchangeError("ProxyAuthenticationRequired", str(exc)) from exc
            raise ExchangeError("NetworkError", f"proxy refused: {exc}") from exc
        except TimeoutError as exc:
            budget = self.connect_timeout + self.read_timeout
            raise ExchangeError("NetworkError", f"no answer within {budget:g} s (timeout)") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise ExchangeError("NetworkError", detail) from exc
        headers_out = {name.lower(): value for name, value in response.headers.items()}
        return Response(response.status, headers_out, data)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, refused beyond MAX_BODY whatever its framing says."""
    if response.content_length is not None and response.content_length > MAX_BODY:
        raise ValueError(f"Content-Length {response.content_length} is too large")
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_any():
        total += len(chunk)
        if total > MAX_BODY:
            raise ValueError("answer too large")
        chunks.append(chunk)
    return b"".join(chunks)
