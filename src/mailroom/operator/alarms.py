"""What the console raises in red (issue 22): stuck queues and orphaned leases, over every
queue. ``alarms`` is pure: it judges the rows the overview already read (the queues'
depths, the daemons' rows, the operator pauses, the leases), so that it is tested without
a database; ``leases`` and ``dead_reasons`` read every queue's leases and reasons."""

from __future__ import annotations

from typing import Any

import psycopg

from mailroom.outbox import query
from mailroom.text import age, masker

Connection = psycopg.Connection[Any]
# Due work waiting this long is stuck even with a daemon serving the queue: the daemons
# are paused by SES, throttled far below the inflow, or failing every claim.
STUCK_AFTER = 600.0


def leases(conn: Connection) -> list[dict[str, Any]]:
    """Every queue's leases by holder: messages held and seconds to the first expiry."""
    rows = conn.execute(query("leases_all")).fetchall()
    return [
        {"queue": q, "worker": w, "messages": n, "expires_in_seconds": round(float(e), 3)}
        for q, w, n, e in rows
    ]


def dead_reasons(
    conn: Connection, *, limit: int = 10, reveal: bool = False
) -> list[dict[str, Any]]:
    shown = masker(reveal)
    rows = conn.execute(query("dead_reasons_all"), {"limit": limit}).fetchall()
    return [{"queue": q, "reason": shown(r), "messages": n} for q, r, n in rows]


def alarms(
    queues: list[dict[str, Any]], daemons: list[dict[str, Any]], pauses: list[dict[str, Any]],
    held: list[dict[str, Any]], *, stuck_after: float = STUCK_AFTER,
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Stuck queues (due work and no live daemon, or the oldest due older than
    ``stuck_after``; a queue an operator paused is listed as paused instead), and orphaned
    leases (held by a worker with no live daemon row: it died or lost the database; the
    next poll of a live daemon of the queue reclaims them once they expire)."""
    live = {d["worker"] for d in daemons if not d["stale"]}
    serving = {d["queue"] for d in daemons if not d["stale"]}
    paused = {p["queue"] for p in pauses}
    stuck, held_back = [], []
    for q in queues:
        waited = float(q["oldest_due_age_seconds"])
        if not (q["due"] or waited > 0):
            continue
        if q["queue"] in paused:
            held_back.append({"queue": q["queue"], "due": q["due"], "waited": waited})
            continue
        why = []
        if q["queue"] not in serving:
            why.append("no live daemon serves it")
        if waited > stuck_after:
            why.append(f"the oldest due message has waited {age(waited)}")
        if why:
            stuck.append({"queue": q["queue"], "due": q["due"], "waited": waited,
                          "why": " and ".join(why)})  # fmt: skip
    orphaned = [dict(lease) for lease in held if lease["worker"] not in live]
    return {"stuck": stuck, "paused": held_back, "orphaned": orphaned}
