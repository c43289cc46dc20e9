"""A small HTTP/1.1 client on anyio streams: POST to one origin over keep-alive connections.

The daemon's SES calls run on its event loop instead of in worker threads: a thread per
call cost more CPU (wake-ups, GIL hand-offs) than the call itself, and latency on an idle
daemon. It speaks only what the SES API needs: a POST with a Content-Length body; answers
with Content-Length or chunked bodies; TLS, and HTTPS proxies through CONNECT.
"""

from __future__ import annotations

import base64
import select
import ssl
import time
from typing import NamedTuple
from urllib.parse import SplitResult, unquote, urlsplit

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 16 * 1024 * 1024
IDLE_LIMIT = 30.0  # seconds: an older idle connection is closed, not reused


class HTTPError(Exception):
    """The exchange failed: no connection, a timeout, or an answer that is not HTTP."""


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class _Connection:
    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.reader = BufferedByteReceiveStream(stream)
        self.idle_since = time.monotonic()
        # looked up once: anyio builds its whole attribute mapping on every extra() call
        self.socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 -- anyio, not Django

    def dropped(self) -> bool:
        """Whether the peer closed (or wrote to) the idle connection: readable means EOF,
        a TLS close alert or garbage, and a request sent on it would be lost."""
        if self.reader.buffer or time.monotonic() - self.idle_since > IDLE_LIMIT:
            return True
        try:
            readable, _, _ = select.select([self.socket], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class Client:
    """Keeps up to ``max_idle`` idle connections to ``base_url``'s origin."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        default_port = parts.port is None or parts.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 keeps its brackets
        self.authority = host if default_port else f"{host}:{self.port}"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.tls else None)
        self.proxy = urlsplit(proxy) if proxy and self.tls else None
        self._idle: list[_Connection] = []

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        """POST ``body`` to ``path``. ``headers`` must not hold Host or Content-Length."""
        head = [f"POST {path} HTTP/1.1", f"Host: {self.authority}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        connection = await self._checkout()
        try:
            # The write too: a peer that stops reading must not hold the call past the
            # connect + read budget that the lease is sized for.
            with anyio.fail_after(self.read_timeout):
                await connection.stream.send(request)
                response, keep = await _read_response(connection.reader)
        except TimeoutError:
            await anyio.aclose_forcefully(connection.stream)
            raise HTTPError(f"no answer within {self.read_timeout:g} s (read timeout)") from None
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, anyio.IncompleteRead,
                anyio.DelimiterNotFound, ssl.SSLError, ValueError) as exc:  # fmt: skip
            await anyio.aclose_forcefully(connection.stream)
            raise HTTPError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            await anyio.aclose_forcefully(connection.stream)
            raise
        if keep and len(self._idle) < self.max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            await anyio.aclose_forcefully(connection.stream)
        return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            await anyio.aclose_forcefully(connection.stream)

    async def _checkout(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely stale
            if not connection.dropped():
                return connection
            await anyio.aclose_forcefully(connection.stream)
        try:
            with anyio.fail_after(self.connect_timeout):
                return _Connection(await self._connect())
        except TimeoutError:
            raise HTTPError(f"no connection within {self.connect_timeout:g} s") from None
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, ssl.SSLError) as exc:
            raise HTTPError(f"cannot connect to {self.authority}: {exc}") from exc

    async def _connect(self) -> ByteStream:
        if self.proxy is None:
            stream: ByteStream = await anyio.connect_tcp(self.host, self.port)
        else:
            stream = await self._tunnel(self.proxy)
        if not self.tls:
            return stream
        return await TLSStream.wrap(
            stream,
            server_side=False,
            hostname=self.host,
            ssl_context=self.ssl_context,
            standard_compatible=False,  # like browsers: no close_notify wait on close
        )

    async def _tunnel(self, parts: SplitResult) -> ByteStream:
        stream = await anyio.connect_tcp(parts.hostname or "", parts.port or 80)
        target = f"{self.host}:{self.port}"
        head = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if parts.username:
            user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head.append("Proxy-Authorization: Basic " + base64.b64encode(user.encode()).decode())
        await stream.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        reader = BufferedByteReceiveStream(stream)
        status_line = (await reader.receive_until(b"\r\n\r\n", MAX_HEAD)).split(b"\r\n", 1)[0]
        fields = status_line.split(None, 2)
        if len(fields) < 2 or fields[1] != b"200" or reader.buffer:
            await anyio.aclose_forcefully(stream)
            shown = status_line.decode("latin-1", "replace")
            raise OSError(f"proxy refused CONNECT {target}: {shown}")
        return stream


async def _read_response(reader: BufferedByteReceiveStream) -> tuple[Response, bool]:
    """One answer, and whether the connection may carry another request."""
    while True:
        head = (await reader.receive_until(b"\r\n\r\n", MAX_HEAD)).decode("latin-1")
        status_line, _, header_block = head.partition("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in header_block.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break  # 1xx (100 Continue, 103 Early Hints) precede the real answer
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= MAX_BODY:
            raise ValueError(f"Content-Length {length} out of range")
        body = await reader.receive_exactly(length) if length else b""
    elif status in (204, 304):
        body = b""
    else:  # the body runs to the end of the connection
        body, keep = await _read_to_eof(reader), False
    return Response(status, headers, body), keep


async def _read_chunked(reader: BufferedByteReceiveStream) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size_line = await reader.receive_until(b"\r\n", 1024)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.receive_until(b"\r\n", MAX_HEAD):  # trailers, then a blank line
                pass
            return b"".join(chunks)
        total += size
        if total > MAX_BODY:
            raise ValueError("chunked body too large")
        chunks.append(await reader.receive_exactly(size))
        await reader.receive_exactly(2)  # the CRLF after each chunk


async def _read_to_eof(reader: BufferedByteReceiveStream) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = await reader.receive()
        except anyio.EndOfStream:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_BODY:
            raise ValueError("body too large")
        chunks.append(chunk)
