"""The SES exchange's HTTP/1.1 (mailroom.transports.http1), pure: what is sent can carry
no injected line, and an answer whose framing is ambiguous is refused or ends the
connection, so that no peer can smuggle bytes into the next call's answer."""

from __future__ import annotations

import pytest

from mailroom.transports.http1 import (
    MAX_BODY,
    ProtocolError,
    chunk_size,
    connect_head,
    parse_head,
    request_head,
)


def test_the_request_head_is_what_ses_needs() -> None:
    head = request_head("/v2/x?a=1", {"Host": "h:1", "X-Amz-Date": "d"}, 7, authority="h:1")
    assert head == (
        b"POST /v2/x?a=1 HTTP/1.1\r\nHost: h:1\r\nX-Amz-Date: d\r\nContent-Length: 7\r\n\r\n"
    )
    # no Host given: the authority; a Content-Length given is replaced by the real one
    head = request_head("/", {"content-length": "99"}, 0, authority="[::1]:8")
    assert head == b"POST / HTTP/1.1\r\nHost: [::1]:8\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "headers",
    [{"X": "a\r\nInjected: 1"}, {"X": "a\nb"}, {"X": "a\x00"}, {"Bad Name": "v"}, {"": "v"}],
)
def test_a_header_that_would_inject_a_line_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError):
        request_head("/", headers, 0, authority="h")


def test_a_connect_head_carries_the_proxy_credentials_only() -> None:
    head = connect_head("ses:443", {"Proxy-Authorization": "Basic eA=="})
    assert head == (
        b"CONNECT ses:443 HTTP/1.1\r\nHost: ses:443\r\nProxy-Authorization: Basic eA==\r\n\r\n"
    )
    with pytest.raises(ProtocolError):
        connect_head("ses:443", {"Proxy-Authorization": "x\r\nHost: evil"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5", (200, True, "length", 5)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5", (200, True, "length", 5)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5", (200, True, "length", 5)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", (200, True, "chunked", 0)),
        # both framings: the chunked one is read, the connection is not reused
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",
         (200, False, "chunked", 0)),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", (200, False, "close", 0)),
        (b"HTTP/1.1 200 OK", (200, False, "close", 0)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1", (200, False, "length", 1)),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1",
         (200, False, "length", 1)),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 9", (204, True, "none", 0)),
        (b"HTTP/1.1 100 Continue", (100, True, "none", 0)),
        (b"HTTP/1.1 404", (404, False, "close", 0)),
    ],
)  # fmt: skip
def test_framing(raw: bytes, expected: tuple[int, bool, str, int]) -> None:
    head = parse_head(raw)
    assert (head.status, head.keep_alive, head.framing, head.length) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"HTTP/2 200 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 099 X", b"ICY 200 OK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1", b"HTTP/1.1 200 OK\r\nContent-Length: +1",
        b"HTTP/1.1 200 OK\r\nContent-Length:", b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d" % (MAX_BODY + 1),
        b"HTTP/1.1 200 OK\r\nno colon", b"HTTP/1.1 200 OK\r\n: empty",
        b"HTTP/1.1 200 OK\r\n folded: line", b"HTTP/1.1 200 OK\r\nA b: c",
        b"HTTP/1.1 200 OK\r\nX: \x00", b"HTTP/1.1 200 OK\r\nX: a\rb",
    ],
)  # fmt: skip
def test_what_is_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(raw)


def test_headers_are_read_in_lower_case_the_last_one_kept() -> None:
    head = parse_head(b"HTTP/1.1 400 Bad\r\nX-Amzn-ErrorType: A:b\r\nx-amzn-errortype: C\t")
    assert head.headers == {"x-amzn-errortype": "C"}


def test_chunk_sizes() -> None:
    assert chunk_size(b"1a") == 26
    assert chunk_size(b"0;ext=1") == 0
    assert chunk_size(b"FFFFFFFF") == 2**32 - 1
    for bad in (b"", b"zz", b"-1", b"123456789", b"1 2", b" 1"):
        with pytest.raises(ProtocolError):
            chunk_size(bad)
