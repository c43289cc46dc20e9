"""Keyset paging of dead letters for the console's dead-letter page and `mailroom dead
list` (issue 22): the operator's Selection, a page at a time after a (died at, id) cursor,
so that the thousandth page costs what the first does (the outbox_dead index, no OFFSET)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from mailroom.operator.dead import Selection, dead_count
from mailroom.outbox import query
from mailroom.text import masker

Connection = psycopg.Connection[Any]
_DEAD = ["id", "queue", "template", "to", "attempts", "died_at", "reason", "last_error"]


def cursor_text(row: dict[str, Any]) -> str:
    """The cursor after ``row``: its death time (ISO) and id."""
    return f"{row['died_at'].isoformat()}_{row['id']}"


def parse_cursor(text: str) -> tuple[datetime, int] | None:
    at, _, ident = text.rpartition("_")
    if not (ident.isascii() and ident.isdigit() and len(ident) <= 19):
        return None
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return None
    return (when, int(ident)) if when.tzinfo is not None else None


def dead_page(
    conn: Connection, selection: Selection, *, limit: int, after: tuple[datetime, int] | None,
    reveal: bool = False,
) -> tuple[list[dict[str, Any]], int, str | None]:  # fmt: skip
    """A page of matching dead letters (newest first), how many match in all, and the
    cursor of the next page (None: this is the last)."""
    at, ident = after if after else (None, None)
    params = {**selection.params(), "limit": limit + 1, "after_at": at, "after_id": ident}
    rows = conn.execute(query("dead_page"), params).fetchall()
    shown = masker(reveal)
    out = [dict(zip(_DEAD, row, strict=True)) for row in rows[:limit]]
    for item in out:
        item.update({k: shown(item[k]) for k in ("to", "reason", "last_error")})
    more = cursor_text(out[-1]) if len(rows) > limit and out else None
    return out, dead_count(conn, selection)[0], more
