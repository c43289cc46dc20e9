"""HTTP/1.1 as the SES exchange speaks it (RFC 9112), pure: the request's head, an answer's
status line and headers, and how its body is framed. No I/O (exchange.py does it).

Strict where a lenient reading would let a peer smuggle a second answer into the next
call's read: one version (1.0 or 1.1), a three-digit status, header names that are tokens,
no folded lines, no control characters, conflicting ``Content-Length`` values refused,
``Transfer-Encoding`` winning over ``Content-Length`` (and the connection then closed).
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_HEAD = 64 * 1024  # status line and headers together
MAX_BODY = 16 * 1024 * 1024  # an SES answer is a few KiB; anything near this is not SES

_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?")
_SAFE_VALUE = re.compile(r"[^\r\n\x00]*")


class ProtocolError(ValueError):
    """An answer that is not well-formed HTTP/1.1 (or exceeds the limits)."""


class Head(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case; a repeated name keeps its last value
    keep_alive: bool  # the connection may carry the next request
    framing: str  # "length", "chunked", "close" (to the end of the stream) or "none"
    length: int  # for "length"


def request_head(
    target: str, headers: dict[str, str], body_length: int, *, authority: str
) -> bytes:
    """``POST target HTTP/1.1`` with ``headers``, Host (when not among them) and
    Content-Length; a value with a line break is refused, never sent."""
    lines = [f"POST {target} HTTP/1.1"]
    names = {name.lower() for name in headers}
    if "host" not in names:
        lines.append(f"Host: {authority}")
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name.encode("latin-1", "replace")) or not _SAFE_VALUE.fullmatch(
            value
        ):
            raise ProtocolError(f"header {name!r} cannot be sent")
        if name.lower() != "content-length":
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {body_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connect_head(authority: str, headers: dict[str, str]) -> bytes:
    """A proxy's CONNECT for ``authority`` (host:port) with its own headers."""
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    for name, value in headers.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise ProtocolError(f"proxy header {name!r} cannot be sent")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Fields(NamedTuple):
    headers: dict[str, str]
    lengths: set[bytes]  # every Content-Length value seen
    codings: list[bytes]  # Transfer-Encoding, in order
    connection: list[bytes]  # Connection options


def _fields(lines: list[bytes]) -> _Fields:
    fields = _Fields({}, set(), [], [])
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also a folded line: it starts blank
            raise ProtocolError(f"malformed header line: {line[:60]!r}")
        value = value.strip(b" \t")
        if _CONTROL.search(value):
            raise ProtocolError(f"control character in header {name.decode()!r}")
        key = name.decode("ascii").lower()
        options = [v.strip().lower() for v in value.split(b",") if v.strip()]
        if key == "content-length":
            fields.lengths.update(options or [b""])
        elif key == "transfer-encoding":
            fields.codings.extend(options)
        elif key == "connection":
            fields.connection.extend(options)
        fields.headers[key] = value.decode("latin-1")
    return fields


def parse_head(raw: bytes) -> Head:
    """An answer's head (without its final CRLF CRLF)."""
    lines = raw.split(b"\r\n")
    match = _STATUS.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:60]!r}")
    minor, status = match.group(1), int(match.group(2))
    headers, lengths, codings, connection = _fields(lines[1:])
    keep_alive = minor == b"1" and b"close" not in connection
    if status < 200 or status in (204, 304):
        return Head(status, headers, keep_alive, "none", 0)
    if codings:
        if codings[-1] != b"chunked":
            return Head(status, headers, False, "close", 0)
        # with Content-Length too, the peer's framing is ambiguous: read it, reuse nothing
        return Head(status, headers, keep_alive and not lengths, "chunked", 0)
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise ProtocolError(f"bad Content-Length: {sorted(lengths)!r}")
        length = int(next(iter(lengths)))
        if length > MAX_BODY:
            raise ProtocolError(f"Content-Length {length} is too large")
        return Head(status, headers, keep_alive, "length", length)
    return Head(status, headers, False, "close", 0)


def chunk_size(line: bytes) -> int:
    """A chunk's size line (without CRLF): hex digits and optional extensions."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise ProtocolError(f"bad chunk size line: {line[:40]!r}")
    return int(match.group(1), 16)
