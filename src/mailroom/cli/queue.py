"""``mailroom queue pause | resume NAME [--note TEXT] [--json]`` (issue 22): the parser and
the handlers; the work is operator/queues.py's (audited functions of migration 0027)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from mailroom.cli.args import OPERATOR_EXIT_CODES, as_json, command, queue_name, refuse_queue
from mailroom.cli.common import connect, fail, load
from mailroom.text import stamp


def describe(p: dict[str, Any]) -> str:
    """One line about a pause (``paused_at`` a datetime, or ISO text as in --json)."""
    at = p["paused_at"]
    note = f": {p['note']}" if p["note"] else ""
    who = p["operator"] + (f" ({p['paused_by']})" if p["paused_by"] != p["operator"] else "")
    since = stamp(at if isinstance(at, datetime) else datetime.fromisoformat(at))
    return f"PAUSED by an operator since {since}, by {who}{note}"


def run(args: argparse.Namespace) -> int:
    from mailroom import migrate  # noqa: PLC0415
    from mailroom.operator import audit, queues  # noqa: PLC0415
    from mailroom.text import CommandError, jsonable  # noqa: PLC0415

    cfg = load()
    pausing = args.queue_command == "pause"
    actor = audit.Actor.from_cli(args.note)
    with connect(cfg) as conn:
        try:
            migrate.check_ready(conn, channel=cfg.channel_name)
            audit.require(
                conn, f"queue {args.queue_command}",
                queues.PAUSES_QUEUE if pausing else queues.RESUMES_QUEUE,
            )  # fmt: skip
            if pausing:
                changed = queues.pause(conn, args.name, actor)
            else:
                changed = queues.resume(conn, args.name, actor, channel=cfg.channel_name)
            now = queues.pause_of(conn, args.name)
        except CommandError as exc:
            return fail(str(exc), exc.code)
    if args.json:
        print(json.dumps(jsonable({"queue": args.name, "changed": changed, "paused": now}),
                         indent=2))  # fmt: skip
    elif pausing:
        what = "paused" if changed else "already paused, nothing changed"
        print(f"queue {args.name}: {what}" + (f" ({describe(now)})" if now else ""))
    else:
        print(f"queue {args.name}: " + ("resumed" if changed else "was not paused"))
    return 0


def add_commands(sub: Any) -> None:
    queue = command(
        sub, "queue", "pause or resume a queue by hand (audited)",
        description="Pause a queue: no daemon claims from it (within about a second; what "
        "was claimed finishes) until it is resumed. Recorded in the audit trail.",
        examples="  mailroom queue pause bulk --note 'bad template in campaign 7'\n"
        "  mailroom queue resume bulk --note 'template fixed'\n",
        exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    for name, summary, description, examples in (
        ("pause", "stop every daemon claiming from the queue",
         "Records the pause (mailroom.queue_pauses); every daemon's next claim skips the "
         "queue, so nothing more is sent from it: messages stay pending, no attempt is used. "
         "`mailroom status`, the console and the mailroom_queue_paused gauge show it. "
         "Pausing a paused queue changes nothing (exit 0).",
         "  mailroom queue pause bulk --note 'bad template in campaign 7'\n"
         "  mailroom queue pause user_action_queue --json\n"),
        ("resume", "let the daemons claim from the queue again",
         "Deletes the pause and wakes the queue's daemons. Resuming a queue that is not "
         "paused changes nothing (exit 0).",
         "  mailroom queue resume bulk --note 'template fixed'\n"),
    ):  # fmt: skip
        action = command(
            actions, name, summary, description=description, examples=examples,
            parents=[as_json()], exit_codes=OPERATOR_EXIT_CODES,
        )  # fmt: skip
        action.add_argument("name", type=queue_name, metavar="NAME", help="the queue")
        action.add_argument("--note", metavar="TEXT", help="why, for the audit trail")
        refuse_queue(action, "the queue is NAME, the argument")
        action.set_defaults(handler=run)
