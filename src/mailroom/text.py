"""The operator's words, shared by every layer that talks to an operator (daemon.presence,
the operator verbs, the web console, the CLI): parsing what they type (message ids,
counts, ``--since`` times) and formatting what they read (ages, times, JSON, masked
addresses, tables). Pure: no I/O, no database, no parsers. argparse is imported only for
ArgumentTypeError, the error the CLI prints as written (a ValueError would become
"invalid value"), and which the console turns into its own message."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from mailroom.logs import mask


class CommandError(Exception):
    """Print ``mailroom: <message>`` and exit with ``code`` (2: usage, 1: "no", 3: refused)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


INT_MAX = 2**31 - 1  # counts, limits and lifetimes: PostgreSQL's integer, far past any use
BIGINT_MAX = 2**63 - 1


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_id(text: str) -> int | None:
    """A message id (1 to the largest bigint) written in ASCII digits, or None. int()
    alone takes "٣", " 7", "+7" and "1_000", and a bigger number fails in the
    database instead of here."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= BIGINT_MAX else None


def positive(text: str) -> int:
    value = parse_id(text)  # ASCII digits only: int() takes " 7", "+7", "1_000" and "٣"
    if value is None or value > INT_MAX:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {INT_MAX}, got {_shown(text)}"
        )
    return value


_AGE = re.compile(r"^(\d+)(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE_MAX = 36500 * 86400  # older than any message; past it, dates overflow


def when(text: str) -> datetime:
    """``--since`` / ``--before``: an age (``90s``, ``30m``, ``12h``, ``7d``, ``2w``: that long
    ago) or an ISO 8601 time (local time unless it names a zone)."""
    shown = _shown(text)
    relative = _AGE.match(text.strip().lower())
    if relative:
        if len(relative[1]) > 12 or int(relative[1]) * _SECONDS[relative[2]] > _AGE_MAX:
            raise argparse.ArgumentTypeError(f"{shown}: an age of at most 100 years (36500d)")
        return datetime.now(UTC) - timedelta(seconds=int(relative[1]) * _SECONDS[relative[2]])
    try:
        value = datetime.fromisoformat(text.strip())
        value = value if value.tzinfo else value.astimezone()
    except (ValueError, OverflowError):  # astimezone() cannot place year 1 in local time
        raise argparse.ArgumentTypeError(
            f"{shown} is neither an age (30m, 12h, 7d) nor an ISO time (2024-05-01T03:00)"
        ) from None
    if not 1900 <= value.year <= 9000:
        raise argparse.ArgumentTypeError(f"{shown}: a time between the years 1900 and 9000")
    return value


def age(seconds: float) -> str:
    """``4m 12s``-style duration."""
    s = int(abs(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def stamp(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 UTC strings, recursively."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def masker(reveal: bool) -> Callable[[Any], Any]:
    """Masks addresses in a string or a list of strings (None passes)."""

    def shown(value: Any) -> Any:
        if reveal or value is None:
            return value
        return [mask(v) for v in value] if isinstance(value, list) else mask(value)

    return shown


def recipients(addresses: Sequence[str]) -> str:
    """The first address and how many more: ``a***@example.com +2``."""
    if not addresses:
        return "-"
    return addresses[0] + (f" +{len(addresses) - 1}" if len(addresses) > 1 else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: str = "") -> str:
    """Columns as wide as their widest cell; columns named in ``right`` (space separated)
    are right-aligned (numbers). The last column is not padded."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    aligned = set(right.split())

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if h in aligned else v.ljust(w)
            for v, w, h in zip(values, widths, headers, strict=True)
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


def mime_subject(head: bytes | None) -> str | None:
    """The Subject of raw MIME (its start: the header section), decoded (RFC 2047), for
    showing a raw message as a simple one is shown; None without one."""
    if not head:
        return None
    import email.parser  # noqa: PLC0415 -- only `show` of a raw message needs it
    import email.policy  # noqa: PLC0415 -- as above

    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
    subject = headers.get("Subject")
    return None if subject is None else " ".join(str(subject).split())
