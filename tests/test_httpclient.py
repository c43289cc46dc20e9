"""The SES transport's HTTP/1.1 client against real sockets: framing, keep-alive, stale
connections, timeouts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator

import anyio
import pytest

from mailroom.transports.httpclient import Client, HTTPError
from sesv2_standin import SesStandin

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def scripted() -> Iterator[Callable[[list[list[bytes]]], str]]:
    """A server that answers each connection's requests with scripted raw bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads = []

    def serve(script: list[list[bytes]]) -> str:
        def run() -> None:
            for answers in script:
                conn, _ = listener.accept()
                with conn:
                    for answer in answers:
                        if not read_request(conn):
                            break
                        conn.sendall(answer)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield serve
    listener.close()


def client(url: str, read_timeout: float = 2.0) -> Client:
    return Client(url, connect_timeout=2.0, read_timeout=read_timeout, max_idle=4)


async def test_framings(scripted: Callable[[list[list[bytes]]], str]) -> None:
    url = scripted([
        [
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Amzn-ErrorType: A\r\n\r\nhello",
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\n{\"a\r\n4;ext=1\r\n\":1}\r\n0\r\nTrailer: x\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nto the end",
        ],
        [b"HTTP/1.1 204 No Content\r\n\r\n"],
    ])  # fmt: skip
    http = client(url)
    first = await http.post("/a", {}, b"x")
    assert (first.status, first.body, first.headers["x-amzn-errortype"]) == (200, b"hello", "A")
    second = await http.post("/b", {}, b"{}")
    assert (second.status, second.body) == (400, b'{"a":1}')
    third = await http.post("/c", {}, b"")
    assert (third.status, third.body) == (500, b"to the end")
    fourth = await http.post("/d", {}, b"")  # the server closed: a new connection
    assert (fourth.status, fourth.body) == (204, b"")


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    with SesStandin() as standin:
        http = client(standin.url)
        body = json.dumps({
            "FromEmailAddress": "a@example.com",
            "Destination": {"ToAddresses": ["b@example.com"]},
            "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
        }).encode()  # fmt: skip
        assert (await http.post("/v2/email/outbound-emails", {}, body)).status == 200
        assert (await http.post("/v2/email/outbound-emails", {}, body)).status == 200
        assert standin.connections() == 1  # kept alive
        assert standin._server is not None
        standin._server.close_connections()  # as a server's idle timeout does
        await anyio.sleep(0.1)
        assert (await http.post("/v2/email/outbound-emails", {}, body)).status == 200
        assert standin.connections() == 2
        assert len(standin.sent()) == 3
        await http.aclose()


async def test_garbage_and_truncation_are_http_errors(
    scripted: Callable[[list[list[bytes]]], str],
) -> None:
    url = scripted(
        [[b"SSH-2.0-OpenSSH\r\n\r\n"], [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]]
    )
    http = client(url, read_timeout=0.5)
    with pytest.raises(HTTPError, match=r"not an HTTP/1\.x answer"):
        await http.post("/", {}, b"")
    with pytest.raises(HTTPError, match="IncompleteRead"):  # a body cut short
        await http.post("/", {}, b"")


async def test_nothing_listening_is_an_http_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(HTTPError, match="cannot connect"):
        await client(f"http://127.0.0.1:{port}").post("/", {}, b"")


async def test_a_peer_that_stops_reading_times_the_write_out() -> None:
    # The request is far larger than the socket buffers, and nothing reads it: without a
    # deadline on the write the call would hang past the budget the lease is sized for.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with anyio.fail_after(10):
            with pytest.raises(HTTPError, match="read timeout"):
                await client(url, read_timeout=0.5).post("/", {}, b"x" * 64 * 1024 * 1024)
