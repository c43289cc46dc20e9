"""The commands ``queues``, ``stats`` and ``status [--watch]`` and their parsers: the
system at a glance, calling operator/stats.py and operator/admin.py; each ``cmd_*``
prints its answer and returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.cli.args import (
    OPERATOR_EXIT_CODES,
    as_json,
    command,
    queue_acted_on,
    queue_filter,
    revealing,
    seconds,
)
from mailroom.cli.common import handler
from mailroom.cli.messages import format_status
from mailroom.cli.output import revealed
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.admin import status
from mailroom.operator.stats import queues, stats
from mailroom.text import age, jsonable, stamp, table, when

Connection = psycopg.Connection[Any]


def cmd_queues(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "queues")
    found = [q for q in queues(conn) if args.queue in (None, q["queue"])]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no messages in queue {args.queue}" if args.queue else "no messages in any queue")
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


def add_commands(sub: Any) -> None:
    """``status``, ``queues`` and ``stats``, for cli/commands.py."""
    revealing_, json_ = revealing(), as_json()
    status_ = command(
        sub, "status", "what is waiting, failing and sending: depth, age, rate, dead reasons",
        description="Depth of the queue by status, how long the oldest due message has "
        "waited, sends in the last minute and hour, the commonest dead-letter reasons and "
        "the daemons holding leases. --json prints the same as a stable document (keys in "
        "docs/cli.md).",
        examples="  mailroom status\n  mailroom status --json | jq .depth.dead\n"
        "  mailroom --dsn postgresql://ops@db/app status --queue bulk\n",
        parents=[queue_acted_on(), revealing_, json_],
    )  # fmt: skip
    status_.add_argument(
        "--watch", nargs="?", const=2.0, type=seconds, metavar="SECONDS",
        help="refresh every SECONDS (2) in place on a terminal; plain reports when piped",
    )  # fmt: skip
    status_.set_defaults(handler=handler("stats.cmd_status"))

    queues_ = command(
        sub, "queues", "every queue: depth by status, oldest due, sends in the last hour",
        description="One line per queue that has messages (every queue, or --queue alone): "
        "due, scheduled, retrying, sending, dead and cancelled counts, how long the oldest "
        "due message has waited, and messages sent and dead in the last hour.",
        examples="  mailroom queues\n  mailroom queues --json | jq '.[] | select(.dead > 0)'\n",
        parents=[queue_filter(), json_], exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    queues_.set_defaults(handler=handler("stats.cmd_queues"))

    stats_ = command(
        sub, "stats", "tries per template and per failure reason over a time range",
        description="Outcomes of the tries made in every queue (or --queue) since --since "
        "(default 24h) and before --before (default now): sent, retried and dead per "
        "template, and the failure "
        "reasons of retries and dead letters. Bounces and complaints join once delivery "
        "events are recorded.",
        examples="  mailroom stats\n  mailroom stats --since 1h --queue bulk\n"
        "  mailroom stats --since 2024-05-01T00:00 --before 2024-05-02T00:00 --json\n",
        parents=[queue_filter(), revealing_, json_], exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    stats_.add_argument("--since", type=when, default="24h", help="from: 1h, 24h, 7d, ISO time")
    stats_.add_argument("--before", type=when, help="until (now): 1h, 7d, ISO time")
    stats_.set_defaults(handler=handler("stats.cmd_stats"))
