"""Queues, throughput and stats (``mailroom queues | stats``, the console's overview) as
functions over a connection returning data: the system at a glance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from mailroom.outbox import query
from mailroom.text import masker

Connection = psycopg.Connection[Any]
REASONS_SHOWN = 20

_QUEUE = [
    "queue", "due", "scheduled", "retrying", "sending", "dead", "cancelled",
    "oldest_due_age_seconds", "sent_last_hour", "dead_last_hour",
]  # fmt: skip


def queues(conn: Connection) -> list[dict[str, Any]]:
    """Every queue that has messages, with its depth by status (sent: the last hour's
    only; counting every sent message kept would cost a scan of the history)."""
    rows = conn.execute(query("queues_overview")).fetchall()
    out = [dict(zip(_QUEUE, row, strict=True)) for row in rows]
    for q in out:
        q["oldest_due_age_seconds"] = round(float(q["oldest_due_age_seconds"]), 3)
    return out


def throughput(conn: Connection, *, minutes: int, queue: str | None) -> list[dict[str, Any]]:
    """Sent / retried / dead tries per minute for the last ``minutes``, every minute
    present (zeros included), oldest first."""
    rows = conn.execute(query("throughput"), {"minutes": minutes, "queue": queue}).fetchall()
    counted = {minute: (s, r, d) for minute, s, r, d in rows}
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    series = []
    for back in range(minutes - 1, -1, -1):
        minute = now - timedelta(minutes=back)
        s, r, d = counted.get(minute, (0, 0, 0))
        series.append({"minute": minute, "sent": s, "retried": r, "dead": d})
    return series


def stats(
    conn: Connection, *, since: datetime, until: datetime, queue: str | None,
    reveal: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Outcomes of the tries in [since, until) per template and per failure reason."""
    params = {"since": since, "until": until, "queue": queue}
    templates = conn.execute(query("stats_by_template"), params).fetchall()
    reasons = conn.execute(query("stats_by_reason"), {**params, "limit": REASONS_SHOWN}).fetchall()
    events = conn.execute(query("stats_events_by_template"), params).fetchall()
    shown = masker(reveal)
    per_template = {
        t: {"template": t, "sent": s, "retried": r, "dead": d, "bounced": 0, "complained": 0}
        for t, s, r, d in templates
    }
    for template, kind, _, count in events:
        zero = {"sent": 0, "retried": 0, "dead": 0, "bounced": 0, "complained": 0}
        row = per_template.setdefault(template, {"template": template, **zero})
        row["bounced" if kind == "Bounce" else "complained"] += count
    return {
        "since": since,
        "until": until,
        "queue": queue,
        "templates": list(per_template.values()),
        "reasons": [{"outcome": o, "reason": shown(r), "tries": n} for o, r, n in reasons],
        # bounces by type/subtype ("Permanent/General"), complaints by feedback type
        "deliverability": [
            {"template": t, "event": kind.lower(), "reason": subtype or "(none)", "recipients": n}
            for t, kind, subtype, n in events[:REASONS_SHOWN]
        ],
    }
