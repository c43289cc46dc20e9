"""The console's watching pages (issue 22): the overview and one queue's page, which
refresh themselves (static/refresh.js re-reads the page every REFRESH seconds), raise
stuck queues and orphaned leases in red at the top, cover every queue's daemons, leases
and dead-letter reasons, and draw tries per minute with time and count axes."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import psycopg
from aiohttp import web

from mailroom.daemon import presence
from mailroom.operator import admin, alarms
from mailroom.operator import audit as admin_audit
from mailroom.operator import queues as admin_queues
from mailroom.operator import stats as admin_stats
from mailroom.text import masker
from mailroom.web.keys import render, run_db

Connection = psycopg.Connection[Any]
REFRESH = 5  # seconds between refreshes of a watching page
CHART_MINUTES = 180
# the plot's box inside the SVG: room on the left for the counts, below for the times
CHART_W, CHART_H, LEFT, BOTTOM, TOP = 760, 190, 44, 22, 8
TICK_MINUTES = 30


def _nice(top: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``top``: the count axis's end."""
    if top <= 1:
        return 1
    power = 10 ** math.floor(math.log10(top))
    return int(next(step * power for step in (1, 2, 5, 10) if step * power >= top))


def chart(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Polylines of sent / retried / dead per minute, with the count axis (0, half, top:
    a round number) and the time axis (a label every TICK_MINUTES, UTC), in SVG units."""
    peak = max([0] + [max(p["sent"], p["retried"], p["dead"]) for p in series])
    top = _nice(peak)
    width, height = CHART_W - LEFT, CHART_H - BOTTOM - TOP
    step = width / max(1, len(series) - 1)

    def y(value: float) -> float:
        return TOP + height - value * height / top

    def points(key: str) -> str:
        return " ".join(f"{LEFT + i * step:.1f},{y(p[key]):.1f}" for i, p in enumerate(series))

    counts = sorted({0, top // 2, top}) if top > 1 else [0, 1]
    times = []
    for i, p in enumerate(series):
        minute: datetime = p["minute"]
        if minute.minute % TICK_MINUTES == 0:
            times.append({"x": round(LEFT + i * step, 1), "label": f"{minute:%H:%M}"})
    return {
        "width": CHART_W, "height": CHART_H, "left": LEFT, "right": CHART_W,
        "top": TOP, "bottom": TOP + height, "peak": peak, "minutes": len(series),
        "lines": [(k, points(k)) for k in ("sent", "retried", "dead")],
        "counts": [{"y": round(y(c), 1), "label": c} for c in counts],
        "times": times,
        "totals": {k: sum(p[k] for p in series) for k in ("sent", "retried", "dead")},
    }  # fmt: skip


def _gather(conn: Connection, queue: str | None, reveal: bool) -> dict[str, Any]:
    """What both pages show: ``queue`` None for every queue."""
    shown = masker(reveal)
    everyone = admin_stats.queues(conn)
    daemons = [{**d, "pause_reason": shown(d["pause_reason"])}
               for d in presence.listing(conn, None)]  # fmt: skip
    pauses = admin_queues.pauses(conn)
    for p in pauses:
        p["note"] = shown(p["note"])  # free text: it may name a customer
    leases = alarms.leases(conn)
    found = alarms.alarms(everyone, daemons, pauses, leases)
    if queue is not None:
        everyone = [q for q in everyone if q["queue"] == queue]
        daemons = [d for d in daemons if d["queue"] == queue]
        leases = [lease for lease in leases if lease["queue"] == queue]
        found = {k: [a for a in v if a["queue"] == queue] for k, v in found.items()}
    live = {d["worker"] for d in daemons if not d["stale"]}
    return {
        "queues": everyone,
        "daemons": daemons,
        "pauses": {p["queue"]: p for p in pauses},
        "leases": [{**lease, "orphaned": lease["worker"] not in live} for lease in leases],
        "alarms": found,
        "series": admin_stats.throughput(conn, minutes=CHART_MINUTES, queue=queue),
        "recent": admin_audit.recent(conn, 10),
    }


def _context(data: dict[str, Any]) -> dict[str, Any]:
    live = [d for d in data["daemons"] if not d["stale"]]
    return {
        **data, "chart": chart(data["series"]), "live": live, "refresh": REFRESH,
        "debug": [d for d in live if d["mode"] == "debug"],
        "ses_paused": [d for d in live if d["paused"]],
        "stuck_after": alarms.STUCK_AFTER,
    }  # fmt: skip


def _reveal(request: web.Request) -> bool:
    return request.query.get("reveal") == "1"


async def overview(request: web.Request) -> web.Response:
    reveal = _reveal(request)

    def gather(conn: Connection) -> dict[str, Any]:
        data = _gather(conn, None, reveal)
        data["reasons"] = alarms.dead_reasons(conn, reveal=reveal)
        return data

    data = await run_db(request, gather)
    return render(request, "overview.html.j2", **_context(data))


async def queue_page(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not 1 <= len(name) <= 63:
        return render(request, "error.html.j2", http_status=404, error="no such queue")
    reveal = _reveal(request)

    def gather(conn: Connection) -> dict[str, Any]:
        data = _gather(conn, name, reveal)
        data["status"] = admin.status(conn, name, reveal=reveal)
        return data

    data = await run_db(request, gather)
    return render(request, "queue.html.j2", queue_name=name, **_context(data))
