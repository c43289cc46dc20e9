"""``mailroom queues``, ``stats`` and ``status [--watch]``: the system at a glance. The
console's overview page calls the same functions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.admin import format_status, status
from mailroom.operator.output import revealed
from mailroom.outbox import query
from mailroom.text import age, jsonable, masker, stamp, table

Connection = psycopg.Connection[Any]
REASONS_SHOWN = 20

_QUEUE = [
    "queue", "due", "scheduled", "retrying", "sending", "sent", "dead", "cancelled",
    "oldest_due_age_seconds", "sent_last_hour", "dead_last_hour",
]  # fmt: skip


def queues(conn: Connection) -> list[dict[str, Any]]:
    """Every queue that has messages, with its depth by status."""
    rows = conn.execute(query("queues_overview")).fetchall()
    out = [dict(zip(_QUEUE, row, strict=True)) for row in rows]
    for q in out:
        q["oldest_due_age_seconds"] = round(float(q["oldest_due_age_seconds"]), 3)
    return out


def cmd_queues(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "queues")
    found = queues(conn)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no messages in any queue")
        return 0
    heads = ["queue", "due", "scheduled", "retrying", "sending", "dead", "cancelled",
             "oldest due", "sent 1h", "dead 1h"]  # fmt: skip
    print(
        table(
            heads,
            [
                (
                    q["queue"],
                    q["due"],
                    q["scheduled"],
                    q["retrying"],
                    q["sending"],
                    q["dead"],
                    q["cancelled"],
                    age(q["oldest_due_age_seconds"]) if q["due"] else "-",
                    q["sent_last_hour"],
                    q["dead_last_hour"],
                )
                for q in found
            ],
            right=" ".join(h for h in heads if h not in ("queue", "oldest due")) + " due",
        )
    )
    return 0


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


def cmd_stats(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "stats")
    until = args.before or datetime.now(UTC)
    report = stats(
        conn, since=args.since, until=until, queue=args.queue, reveal=revealed(args, cfg)
    )
    if args.json:
        print(json.dumps(jsonable(report), indent=2))
        return 0
    where = f" in queue {args.queue}" if args.queue else ""
    print(f"tries from {stamp(report['since'])} to {stamp(report['until'])}{where}")
    if not report["templates"]:
        print("no tries in this time range")
        return 0
    counted = ("sent", "retried", "dead", "bounced", "complained")
    rows = [(t["template"], *(t[k] for k in counted)) for t in report["templates"]]
    print(table(["template", *counted], rows, right=" ".join(counted)))
    if report["reasons"]:
        print()
        failures = [(r["tries"], r["outcome"], r["reason"]) for r in report["reasons"]]
        print(table(["tries", "outcome", "reason"], failures, right="tries"))
    if report["deliverability"]:
        print()
        heads = ["recipients", "event", "reason", "template"]
        found = [(d["recipients"], d["event"], d["reason"], d["template"])
                 for d in report["deliverability"]]  # fmt: skip
        print(table(heads, found, right="recipients"))
    return 0


CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def cmd_status(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    queue = args.queue or cfg.queue_name
    reveal = revealed(args, cfg)
    if not args.watch:
        report = status(conn, queue, reveal=reveal)
        print(json.dumps(report, indent=2) if args.json else format_status(report))
        return 0
    if args.watch <= 0:
        from mailroom.text import CommandError  # noqa: PLC0415

        raise CommandError(f"--watch takes a number of seconds above 0, got {args.watch:g}")
    terminal = sys.stdout.isatty() and not args.json
    try:
        while True:
            report = status(conn, queue, reveal=reveal)
            if args.json:  # one document per line, for a pipe
                print(json.dumps(report), flush=True)
            elif terminal:
                sys.stdout.write(CLEAR + format_status(report) + "\n")
                sys.stdout.write(f"\nevery {args.watch:g} s; Ctrl-C stops\n")
                sys.stdout.flush()
            else:
                print(format_status(report) + "\n", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
