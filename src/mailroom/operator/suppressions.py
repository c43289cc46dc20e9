"""The suppression list (``mailroom suppression list | add | remove | import``, and the
console) as functions over a connection returning data; every change goes through an
audited database function (migration 0020). Addresses are masked unless reveal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.addresses import ascii_domain, is_valid, normalize_address
from mailroom.operator.audit import Actor, refusals_as_errors
from mailroom.outbox import query
from mailroom.text import CommandError, masker

Connection = psycopg.Connection[Any]
_LIST = ["address", "reason", "detail", "created_at", "created_by", "id"]
MAX_ADDRESS = 320  # RFC 5321's limit for a path; checked before any conversion


def cursor_text(entry: dict[str, Any]) -> str:
    """The cursor after ``entry``: its time and its number (0032), never its address (a
    cursor goes into URLs, shell history and logs)."""
    return f"{entry['created_at'].isoformat()}_{entry['id']}"


def listing(
    conn: Connection, *, reason: str | None, since: datetime | None, address: str | None,
    limit: int, reveal: bool = False, after: tuple[datetime, int] | None = None,
) -> tuple[int, list[dict[str, Any]], str | None]:  # fmt: skip
    """(how many match in all, the newest ``limit`` entries that match after the cursor
    ``after``, the cursor of the next page or None on the last)."""
    at, ident = after if after else (None, None)
    params = {"reason": reason, "since": since, "address": address, "limit": limit + 1,
              "after_at": at, "after_id": ident}  # fmt: skip
    rows = conn.execute(query("suppression_list"), params).fetchall()
    counted = conn.execute(query("suppression_count"), params).fetchone()
    total = int(counted[0]) if counted else 0
    entries = [dict(zip(_LIST, row, strict=True)) for row in rows[:limit]]
    more = cursor_text(entries[-1]) if len(rows) > limit and entries else None
    shown = masker(reveal)
    for entry in entries:
        entry["address"] = shown(entry["address"])
        entry["detail"] = shown(entry["detail"])
    return total, entries, more


def address_problem(value: str) -> str | None:
    """What is wrong with an operator's address (None: nothing). The length first, so an
    8,000-character IDN label is refused before punycode sees it."""
    if len(value) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "holds a control character (a line break?): one address per argument"
    spec = normalize_address(value)
    if "," in spec or ";" in spec or any(c.isspace() for c in spec):
        return "holds a comma, semicolon or space: one address per argument"
    local, at, domain = spec.rpartition("@")
    if not at or not local or not domain:
        return "not an address such as someone@example.com"
    ascii_form = ascii_domain(domain)
    if ascii_form is None or not is_valid(f"{local}@{ascii_form}"):
        return "not an address such as someone@example.com"
    return None


def add(
    conn: Connection, addresses: list[str], *, note: str | None, actor: Actor | None = None
) -> list[str]:
    """Suppress ``addresses`` by hand (one audit row); returns those newly suppressed.
    ``actor``: who acts (default: the CLI's user)."""
    details = [note] * len(addresses) if note else None
    params = {"addresses": addresses, "reason": "manual", "details": details,
              **(actor or Actor.from_cli(note)).params()}  # fmt: skip
    with refusals_as_errors():
        return [r[0] for r in conn.execute(query("suppression_add"), params).fetchall()]


def remove(
    conn: Connection, addresses: list[str], *, actor: Actor | None = None
) -> list[tuple[str, str]]:
    """Unsuppress ``addresses``; returns (address, the reason it had) of those removed.
    An ``actor`` with a reason keeps it as the audit row's note (0027)."""
    who = actor or Actor.from_cli()
    name = "suppression_remove_noted" if who.reason else "suppression_remove"
    with refusals_as_errors():
        rows = conn.execute(query(name), {"addresses": addresses, **who.params()}).fetchall()
    return [(str(a), str(r)) for a, r in rows]


def ses_pages(client: Any, page_size: int, max_pages: int) -> Iterator[list[dict[str, Any]]]:
    """The pages of SES's account-level suppression list (an sesv2 client)."""
    # botocore has no paginator for this operation: follow NextToken by hand, but not for
    # ever: a token seen before (a loop) or more pages than asked for stops the import
    token: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        kwargs: dict[str, Any] = {"PageSize": page_size}
        if token:
            kwargs["NextToken"] = token
        page = client.list_suppressed_destinations(**kwargs)
        yield list(page.get("SuppressedDestinationSummaries") or [])
        token = page.get("NextToken")
        if not token:
            return
        if token in seen:
            raise CommandError(
                "SES returned a NextToken it had returned before: stopped, the import is "
                "incomplete (what was read is kept; run it again later)",
                1,
            )
        seen.add(token)
    raise CommandError(
        f"stopped after {max_pages} page(s) (--max-pages): SES lists more; what was read is "
        "kept (raise --max-pages or --page-size to read the rest)",
        1,
    )


def import_pages(
    conn: Connection, pages: Iterable[list[dict[str, Any]]]
) -> Iterator[tuple[int, int]]:
    """Add each page of SES summaries; yields (addresses read, added) after each page.
    The pages' audit rows share one action id."""
    seen = added = 0
    actor = Actor.from_cli().params()
    for page in pages:
        if not page:
            continue  # an empty page: nothing to add (the function wants 1+ addresses)
        rows = {
            **actor,
            "addresses": [p["EmailAddress"] for p in page],
            "reasons": [p.get("Reason", "") for p in page],
            "updated": [_when(p.get("LastUpdateTime")) for p in page],
        }
        seen += len(page)
        with refusals_as_errors():
            added += len(conn.execute(query("suppression_import"), rows).fetchall())
        yield seen, added


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value or "")
