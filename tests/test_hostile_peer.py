"""The SES transport's exchange against peers that misbehave: malformed, truncated,
oversized and slow answers, TLS cut mid-body, a server that never reads. Whatever the
peer does, a call ends within its budget (connect + read timeout) with an answer or one
clear ExchangeError, and a connection that failed is closed, never reused: nothing hangs,
nothing leaks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from mailroom.transports.exchange import MAX_BODY, Exchange, ExchangeError, Response
from sesv2_standin import SesStandin
from test_ses_transport import certificates  # noqa: F401 -- a fixture, used by name

TIMEOUT = 0.5  # connect and read: a call's budget is their sum
SLACK = 3.0  # scheduling on a busy 2-core machine; not a speed assertion


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")), 0,
    )  # fmt: skip
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


class Scripted:
    """Answers each connection's requests with the next scripted answers, then closes it;
    counts connections and whether each one was closed by the client."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.tls = tls
        self.scripts: list[list[bytes]] = []
        self.linger = 0.0  # seconds to keep a connection open after its last answer
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> URL:
        scheme = "https" if self.tls else "http"
        return URL(
            f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/v2/email/outbound-emails"
        )

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            answers = self.scripts.pop(0) if self.scripts else []
            threading.Thread(target=self._answer, args=(raw, answers), daemon=True).start()

    def _answer(self, raw: socket.socket, answers: list[bytes]) -> None:
        with contextlib.suppress(OSError, ssl.SSLError), contextlib.closing(raw):
            raw.settimeout(10)
            conn = self.tls.wrap_socket(raw, server_side=True) if self.tls else raw
            for answer in answers:
                if not read_request(conn):
                    return
                conn.sendall(answer)
            if self.linger:
                time.sleep(self.linger)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def exchange(**kw: object) -> Exchange:
    return Exchange(concurrency=2, connect_timeout=TIMEOUT, read_timeout=TIMEOUT, **kw)  # type: ignore[arg-type]


async def call(http: Exchange, url: URL, body: bytes = b"{}") -> Response | ExchangeError:
    """One POST, failing the test if it outlives its budget."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(2 * TIMEOUT + SLACK):
            return await http.post(url, {"Host": url.raw_authority}, body)
    except ExchangeError as exc:
        return exc
    finally:
        assert time.monotonic() - started < 2 * TIMEOUT + SLACK


def in_use(http: Exchange) -> int:
    """Connections checked out of the pool: none may be left after a call."""
    return http.in_use


status_lines = st.sampled_from([
    b"HTTP/1.1 200 OK", b"HTTP/1.1 400 Bad", b"HTTP/1.0 500 X", b"HTTP/1.1 2000 Huh",
    b"HTTP/1.1 -1 Neg", b"HTTP/9.9 200 OK", b"ICY 200 OK", b"SSH-2.0-OpenSSH", b"", b"HTTP/1.1",
    b"HTTP/1.1 200 \xff\xfe", b"\x00\x00\x00\x00",
])  # fmt: skip
header_lines = st.lists(
    st.sampled_from([
        b"Content-Length: 5", b"Content-Length: 0", b"Content-Length: -3",
        b"Content-Length: abc", b"Content-Length: 99999999999999999999",
        b"Content-Length: %d" % (MAX_BODY + 1), b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked", b"Connection: close", b"X-Amzn-ErrorType: A:b",
        b"no colon here", b": empty name", b"X-Long: " + b"x" * 70000, b"Content-Type: \x00",
    ]),
    max_size=4,
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([
        b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\nbroken\r\n", b"5\r\nhel", b"ffffffffffff\r\nx",
        b"3\r\nabc\r\n", b'{"MessageId":"m"}',
    ]),
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(status=status_lines, headers=header_lines, body=bodies, cut=st.none() | st.integers(0, 80))
def test_any_answer_ends_within_the_budget_and_leaks_nothing(
    scripted: Scripted, status: bytes, headers: list[bytes], body: bytes, cut: int | None
) -> None:
    answer = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body
    if cut is not None:
        answer = answer[:cut]  # then the server closes: a truncated answer
    scripted.scripts.append([answer])

    async def run() -> Response | ExchangeError:
        http = exchange()
        try:
            outcome = await call(http, scripted.url)
            assert in_use(http) == 0
            return outcome
        finally:
            await http.aclose()

    outcome = asyncio.run(run())
    if isinstance(outcome, ExchangeError):
        assert outcome.code == "NetworkError"
        assert outcome.detail
    else:
        assert 100 <= outcome.status <= 999
        assert len(outcome.body) <= MAX_BODY


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "incomplete body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "incomplete body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", ""),
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), "too large"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ""),
    ],
)
async def test_bad_framing_is_a_network_error(
    scripted: Scripted, answer: bytes, error: str
) -> None:
    scripted.scripts.append([answer])
    http = exchange()
    try:
        outcome = await call(http, scripted.url)
        assert isinstance(outcome, ExchangeError), outcome
        assert outcome.code == "NetworkError"
        assert error in outcome.detail
        assert in_use(http) == 0
    finally:
        await http.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_framings_that_are_fine(scripted: Scripted) -> None:
    scripted.scripts += [
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Amzn-ErrorType: A\r\n\r\nhello",
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nTrailer: x\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nto the end",
        ],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
    ]  # fmt: skip
    http = exchange()
    try:
        first, second, third, fourth = [await call(http, scripted.url) for _ in range(4)]
        assert isinstance(first, Response)
        assert (first.status, first.body, first.headers["x-amzn-errortype"]) == (200, b"hello", "A")
        assert (second.status, second.body) == (400, b'{"a":1}')  # type: ignore[union-attr]
        assert (third.status, third.body) == (500, b"to the end")  # type: ignore[union-attr]
        assert (fourth.status, fourth.body) == (204, b"")  # type: ignore[union-attr]
        assert scripted.connections == 2  # kept alive until the server said close
    finally:
        await http.aclose()


@pytest.mark.anyio
async def test_a_slow_drip_ends_at_the_budget(scripted: Scripted) -> None:
    # Each byte arrives within the read timeout, the whole answer never does: the call's
    # total budget (connect + read), not a per-read timeout, ends it.
    listener = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(100):
                conn.sendall(b"x")
                time.sleep(TIMEOUT / 3)

    threading.Thread(target=drip, daemon=True).start()
    http = exchange()
    try:
        outcome = await call(http, URL(f"http://127.0.0.1:{listener.getsockname()[1]}/"))
        assert isinstance(outcome, ExchangeError)
        assert "timeout" in outcome.detail
        assert in_use(http) == 0
    finally:
        await http.aclose()
        listener.close()


@pytest.mark.anyio
async def test_a_peer_that_never_reads_times_the_write_out() -> None:
    # Far larger than the socket buffers, and nothing reads it: the budget ends the write.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        http = exchange()
        try:
            url = URL(f"http://127.0.0.1:{listener.getsockname()[1]}/")
            outcome = await call(http, url, b"x" * 64 * 1024 * 1024)
            assert isinstance(outcome, ExchangeError)
            assert "timeout" in outcome.detail
        finally:
            await http.aclose()


@pytest.mark.anyio
async def test_nothing_listening_is_a_network_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    http = exchange()
    try:
        outcome = await call(http, URL(f"http://127.0.0.1:{port}/"))
        assert isinstance(outcome, ExchangeError)
        assert outcome.code == "NetworkError"
    finally:
        await http.aclose()


@pytest.mark.anyio
async def test_tls_closed_mid_body(certificates: tuple[Path, ssl.SSLContext]) -> None:  # noqa: F811 -- the fixture
    ca, server_context = certificates
    server = Scripted(tls=server_context)
    server.scripts.append([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10])
    http = exchange(ssl_context=ssl.create_default_context(cafile=str(ca)))
    try:
        outcome = await call(http, server.url)
        assert isinstance(outcome, ExchangeError)
        assert outcome.code == "NetworkError"
        assert in_use(http) == 0
    finally:
        await http.aclose()
        server.close()


@pytest.mark.anyio
async def test_a_connection_the_server_closed_is_not_reused() -> None:
    with SesStandin() as standin:
        http = exchange()
        url = URL(f"{standin.url}/v2/email/outbound-emails")
        body = (
            b'{"FromEmailAddress":"a@example.com","Destination":{"ToAddresses":["b@example.com"]},'
            b'"Content":{"Simple":{"Subject":{"Data":"s"},"Body":{"Text":{"Data":"t"}}}}}'
        )
        try:
            for _ in range(2):
                assert (await http.post(url, {}, body)).status == 200
            assert standin.connections() == 1  # kept alive
            assert standin._server is not None
            standin._server.close_connections()  # as a server's idle timeout does
            await asyncio.sleep(0.1)
            assert (await http.post(url, {}, body)).status == 200
            assert standin.connections() == 2
            assert len(standin.sent()) == 3
        finally:
            await http.aclose()
