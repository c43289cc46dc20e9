"""The commands ``cancel`` and ``send-now`` and their parser: operator actions on
messages named by id (any queue), refused as a whole when one id does not qualify,
calling operator/find.py; recorded in the audit trail."""

from __future__ import annotations

import argparse
import json
from typing import Any

import psycopg

from mailroom.cli.args import OPERATOR_EXIT_CODES, as_json, command, message_id, refuse_queue
from mailroom.cli.common import handler
from mailroom.cli.messages import MESSAGE_ID_NAMES_ITS_QUEUE
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.audit import Actor
from mailroom.operator.find import cancel, refusals, send_now
from mailroom.text import CommandError

Connection = psycopg.Connection[Any]
REASON_MAX = 500


def _reason(text: str | None, *, required: bool) -> str | None:
    reason = (text or "").strip()
    if required and not reason:
        raise CommandError("say why with --reason (it is kept on the message and in the audit)")
    if len(reason) > REASON_MAX:
        raise CommandError(f"--reason is {len(reason)} characters: at most {REASON_MAX}")
    return reason or None


def cmd_cancel(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "cancel", admin_audit.CANCELS)
    reason = _reason(args.reason, required=True)
    ids = list(dict.fromkeys(args.ids))
    problems = refusals(conn, ids, "cancel")
    if problems:
        raise CommandError("\n  ".join(["nothing cancelled:", *problems]), 1)
    done = [] if args.dry_run else cancel(conn, ids, Actor.from_cli(reason))
    left = [] if args.dry_run else sorted(set(ids) - set(done))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "ids": ids, "cancelled": done,
                          "left_alone": left}, indent=2))  # fmt: skip
    elif args.dry_run:
        print(f"would cancel {len(ids)} message(s)")
    else:
        print(f"cancelled {len(done)} message(s): {', '.join(map(str, done))}")
        if left:
            print(f"{len(left)} changed meanwhile (a daemon took them) and were left alone: "
                  f"{', '.join(map(str, left))}")  # fmt: skip
    return 1 if left else 0


def cmd_send_now(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "send-now", admin_audit.SENDS_NOW)
    reason = _reason(args.reason, required=False)
    ids = list(dict.fromkeys(args.ids))
    problems = refusals(conn, ids, "send-now")
    if problems:
        raise CommandError("\n  ".join(["nothing changed:", *problems]), 1)
    actor = Actor.from_cli(reason)
    done = [] if args.dry_run else send_now(conn, ids, actor, channel=cfg.channel_name)
    left = [] if args.dry_run else sorted(set(ids) - set(done))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "ids": ids, "due_now": done,
                          "left_alone": left}, indent=2))  # fmt: skip
    elif args.dry_run:
        print(f"would make {len(ids)} message(s) due now")
    else:
        print(f"due now, daemons woken: {', '.join(map(str, done))}")
        if left:
            print(f"{len(left)} changed meanwhile and were left alone")
    return 1 if left else 0


def add_commands(sub: Any) -> None:
    """``cancel`` and ``send-now``, for cli/commands.py."""
    acting = argparse.ArgumentParser(add_help=False, parents=[as_json()])
    acting.add_argument("ids", nargs="+", type=message_id, metavar="ID", help="message ids")
    acting.add_argument("--dry-run", action="store_true", help="check only, change nothing")

    cancel_ = command(
        sub, "cancel", "cancel pending, scheduled or retrying messages, with a reason",
        description="Ends messages that are still waiting (pending, scheduled or retrying) "
        "in the final state `cancelled`, with the reason as their last error; a token "
        "email's secret is discarded. Messages being sent, sent, dead or cancelled are "
        "refused and then nothing is changed (exit 1). `dead retry` never revives a "
        "cancelled message. Recorded in the audit trail (`mailroom show ID`). Ids name "
        "messages of any queue: --queue is refused (exit 2).",
        examples="  mailroom cancel 42 --reason 'customer asked us not to send it'\n"
        "  mailroom cancel 42 43 44 --reason 'duplicate campaign' --dry-run\n",
        parents=[acting], exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    cancel_.add_argument("--reason", required=True, help="why (kept on the message and audit)")
    refuse_queue(cancel_, MESSAGE_ID_NAMES_ITS_QUEUE)
    cancel_.set_defaults(handler=handler("actions.cmd_cancel"))

    send_now_ = command(
        sub, "send-now", "send a message waiting out a backoff or a schedule now",
        description="Makes waiting messages (retrying after a failure, or scheduled for "
        "later) due now and wakes the daemons. A message already due, being sent or final "
        "is refused and then nothing is changed (exit 1); so is a token email whose secret "
        "is gone (the same rule as `dead retry`). Recorded in the audit trail. Ids name "
        "messages of any queue: --queue is refused (exit 2).",
        examples="  mailroom send-now 42\n"
        "  mailroom send-now 42 43 --reason 'SES throttling is over'\n",
        parents=[acting], exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    send_now_.add_argument("--reason", help="why, for the audit trail")
    refuse_queue(send_now_, MESSAGE_ID_NAMES_ITS_QUEUE)
    send_now_.set_defaults(handler=handler("actions.cmd_send_now"))
