"""The commands ``queues``, ``stats`` and ``status [--watch]``: the system at a glance,
calling operator/stats.py and operator/admin.py; each ``cmd_*`` prints its answer and
returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.cli.messages import format_status
from mailroom.cli.output import revealed
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.admin import status
from mailroom.operator.stats import queues, stats
from mailroom.text import age, jsonable, stamp, table

Connection = psycopg.Connection[Any]


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
