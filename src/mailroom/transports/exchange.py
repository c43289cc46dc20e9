"""The HTTP exchange of the SES transport: POSTs to one origin over keep-alive connections
on the daemon's event loop (asyncio), with TLS and proxies (CONNECT for https, the
absolute form for http), the wire format in http1.py.

The standard library's asyncio carries it: aiohttp did, and cost the daemon ~8 MiB of
resident memory for the one request shape SES needs (docs/BENCHMARKS.md). The policy is
unchanged: one budget per call (connect + read, which the lease is sized for) covering the
connection, the write and the whole answer, each read within the read timeout; a cap on
the answer's size; a connection that failed in any way is closed, never reused; every
failure is one ``ExchangeError`` with a code ``mailroom.transports.classify`` knows.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import NamedTuple, cast
from urllib.parse import SplitResult, urlsplit

from mailroom.transports import http1

MAX_BODY = http1.MAX_BODY
IDLE_LIMIT = 15.0  # seconds an idle connection is kept (below typical server idle timeouts)
HAPPY_EYEBALLS = 0.25  # seconds before the next address family is tried (RFC 8305)


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


class _Connection(asyncio.Protocol):
    """One socket's bytes, buffered; waits for more within the read timeout."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.idle_since = time.monotonic()
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio's callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_connection's: a stream

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._writable.set()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- used by the exchange
    def usable(self) -> bool:
        """Idle and still good: the peer has not closed it (or written to it unasked:
        those bytes would be read as the next call's answer) and it is not too old."""
        return (
            not self.closed
            and not self.buffer
            and self.transport is not None
            and not self.transport.is_closing()
            and time.monotonic() - self.idle_since < IDLE_LIMIT
        )

    async def write(self, data: bytes, within: float) -> None:
        if self.transport is None or self.closed:
            raise ConnectionResetError("the connection closed before the request was sent")
        self.transport.write(data)
        async with asyncio.timeout(within):
            await self._writable.wait()  # the peer reads (or the budget ends the call)
        if self.closed:
            raise ConnectionResetError("the connection closed while the request was sent")

    async def until(self, marker: bytes, limit: int, within: float) -> bytes:
        """Bytes up to ``marker`` (consumed, not returned), at most ``limit`` of them."""
        start = 0
        while (at := self.buffer.find(marker, start)) < 0:
            if len(self.buffer) > limit:
                raise http1.ProtocolError(f"more than {limit} bytes without {marker!r}")
            if self.closed:
                raise ConnectionResetError("the peer closed the connection mid-answer")
            start = max(0, len(self.buffer) - len(marker) + 1)
            await self._more_or_eof(within)
        if at > limit:
            raise http1.ProtocolError(f"more than {limit} bytes without {marker!r}")
        data = bytes(self.buffer[:at])
        del self.buffer[: at + len(marker)]
        return data

    async def exactly(self, n: int, within: float) -> bytes:
        while len(self.buffer) < n:
            if self.closed:
                raise http1.ProtocolError(f"incomplete body: {len(self.buffer)} of {n} bytes")
            await self._more_or_eof(within)
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def to_the_end(self, limit: int, within: float) -> bytes:
        while not self.closed:
            if len(self.buffer) > limit:
                raise http1.ProtocolError("answer too large")
            await self._more_or_eof(within)
        if len(self.buffer) > limit:
            raise http1.ProtocolError("answer too large")
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def _more_or_eof(self, within: float) -> None:
        if self.closed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(within):
                await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # nothing more is owed to a connection that failed


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
        self.proxy_headers = dict(proxy_headers or {})
        self.in_use = 0  # connections checked out by calls
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None  # made on first use, on the loop

    async def post(
        self, url: object, headers: dict[str, str], body: bytes, *, budget: float | None = None
    ) -> Response:
        """POST ``body`` to ``url`` (its str() is the URL, already encoded); ``headers``
        carry Host (the signed one) but not Content-Length. ``budget``: the whole call's
        seconds (connect + read timeout when None; less when the caller used some)."""
        if budget is None:
            budget = self.connect_timeout + self.read_timeout
        try:
            async with asyncio.timeout(budget):
                return await self._post(urlsplit(str(url)), headers, body)
        except ExchangeError:
            raise
        except TimeoutError as exc:
            raise ExchangeError("NetworkError", f"no answer within {budget:g} s (timeout)") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ExchangeError("TLSVerificationFailed", str(exc)) from exc
        except (OSError, ValueError, EOFError) as exc:  # ssl.SSLError is an OSError
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise ExchangeError("NetworkError", detail) from exc

    async def _post(self, parts: SplitResult, headers: dict[str, str], body: bytes) -> Response:
        scheme, host, port = parts.scheme, parts.hostname or "", parts.port
        port = port or (443 if scheme == "https" else 80)
        shown = f"[{host}]" if ":" in host else host
        authority = shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"
        forward = self.proxy is not None and scheme == "http"
        if forward:  # a forwarding proxy reads the whole URL and its credentials
            target = parts.geturl()
            headers = {**headers, **self.proxy_headers}
        else:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = http1.request_head(target, headers, len(body), authority=authority)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with asyncio.timeout(self.connect_timeout):
            await self._slots.acquire()
        self.in_use += 1
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = self._reuse() or await self._connect(scheme, host, port, authority)
            await conn.write(head + body, self.read_timeout)
            answer = await self._read(conn)
        except BaseException:
            if conn is not None:
                conn.close()  # half-written, half-read or cancelled: never reused
            raise
        finally:
            self.in_use -= 1
            self._slots.release()
        response, keep = answer
        if keep and len(self._idle) < self.concurrency:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _reuse(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, scheme: str, host: str, port: int, authority: str) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            tls = self.ssl_context or ssl.create_default_context()
        if self.proxy is None:
            return await self._open(host, port, tls, host)
        proxy = urlsplit(self.proxy)
        proxy_tls = ssl.create_default_context() if proxy.scheme == "https" else None
        proxy_port = proxy.port or (443 if proxy.scheme == "https" else 80)
        conn = await self._open(proxy.hostname or "", proxy_port, proxy_tls, proxy.hostname)
        if scheme == "http":
            return conn  # forwarding: requests go to the proxy as they are
        try:
            # the proxy's credentials: botocore put them in Proxy-Authorization (awsconfig)
            await conn.write(http1.connect_head(authority, self.proxy_headers), self.read_timeout)
            raw = await conn.until(b"\r\n\r\n", http1.MAX_HEAD, self.read_timeout)
            answer = http1.parse_head(raw)
            if answer.status in (401, 407):
                raise ExchangeError(
                    "ProxyAuthenticationRequired", f"{answer.status}, proxy refused"
                )
            if not 200 <= answer.status < 300:
                raise ExchangeError("NetworkError", f"proxy refused: {answer.status}")
            if conn.buffer:
                raise http1.ProtocolError("the proxy sent bytes before the tunnel opened")
            if conn.transport is None or tls is None:
                raise ConnectionResetError("the proxy closed the tunnel")
            transport = await loop.start_tls(conn.transport, conn, tls, server_hostname=host)
            if transport is None:
                raise ConnectionResetError("the proxy closed the tunnel during TLS")
            conn.transport = transport
        except BaseException:
            conn.close()
            raise
        return conn

    async def _open(
        self, host: str, port: int, tls: ssl.SSLContext | None, server_hostname: str | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _Connection, host, port, ssl=tls, server_hostname=server_hostname if tls else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS,
        )  # fmt: skip
        return conn

    async def _read(self, conn: _Connection) -> tuple[Response, bool]:
        timeout = self.read_timeout
        while True:
            head = http1.parse_head(await conn.until(b"\r\n\r\n", http1.MAX_HEAD, timeout))
            if head.status >= 200:
                break  # 1xx (100 Continue) are informational: the answer follows
        if head.framing == "length":
            body = await conn.exactly(head.length, timeout)
        elif head.framing == "chunked":
            body = await _chunked(conn, timeout)
        elif head.framing == "close":
            body = await conn.to_the_end(MAX_BODY, timeout)
        else:
            body = b""
        return Response(head.status, head.headers, body), head.keep_alive

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


async def _chunked(conn: _Connection, within: float) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size = http1.chunk_size(await conn.until(b"\r\n", 1024, within))
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise http1.ProtocolError("answer too large")
        parts.append(await conn.exactly(size, within))
        if await conn.exactly(2, within) != b"\r\n":
            raise http1.ProtocolError("chunk not followed by CRLF")
    while await conn.until(b"\r\n", http1.MAX_HEAD, within):  # trailers, then an empty line
        pass
    return b"".join(parts)
