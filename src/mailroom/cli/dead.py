"""The commands ``dead list | retry | purge`` and their parsers: dead letters by id or
filter, in batches, calling operator/dead.py; each ``cmd_*`` prints its answer and
returns the exit code."""

from __future__ import annotations

import argparse
import json
from typing import Any

import psycopg

from mailroom.cli.args import (
    as_json,
    command,
    message_id,
    page_cursor,
    queue_acted_on,
    revealing,
)
from mailroom.cli.common import handler
from mailroom.cli.output import Progress, confirm, revealed
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.audit import Actor
from mailroom.operator.dead import (
    Selection,
    dead_count,
    dead_purge,
    dead_retry,
    retry_refusals,
)
from mailroom.operator.pages import dead_page
from mailroom.text import CommandError, jsonable, positive, recipients, stamp, table, when

Connection = psycopg.Connection[Any]


def selection_from_args(args: argparse.Namespace, cfg: Config) -> Selection:
    """The ``dead`` options as the operator's Selection."""
    ids = list(args.ids) or None
    # Ids name messages of any queue; filters default to the configured queue.
    queue = args.queue if args.queue or ids else cfg.queue_name
    return Selection(ids, queue, args.template, args.reason, args.since, args.before)


def cmd_dead_list(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    selection = selection_from_args(args, cfg)
    rows, total, more = dead_page(
        conn, selection, limit=args.limit, after=args.cursor, reveal=revealed(args, cfg)
    )
    if args.json:
        document = {"total": total, "messages": jsonable(rows), "next_cursor": more}
        print(json.dumps(document, indent=2))
        return 0
    if not rows:
        print("no dead letters match")
        return 0
    print(
        table(
            ["id", "died", "tries", "template", "to", "reason"],
            [
                (
                    r["id"],
                    stamp(r["died_at"]),
                    r["attempts"],
                    r["template"],
                    recipients(r["to"]),
                    r["reason"],
                )
                for r in rows
            ],
            right="id tries",
        )
    )
    if more:
        print(f"showing {len(rows)} of {total} (newest first); more: --cursor {more}")
    return 0


def _selected(args: argparse.Namespace, cfg: Config, verb: str) -> Selection:
    selection = selection_from_args(args, cfg)
    chosen = (selection.ids, selection.template, selection.reason, selection.since)
    if not (args.all or any(v is not None for v in (*chosen, selection.before))):
        raise CommandError(
            f"say which dead letters to {verb}: IDs, a filter (--template, --reason, --since, "
            "--before) or --all"
        )
    return selection


def cmd_dead_retry(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "dead retry", admin_audit.RETRIES)
    selection = _selected(args, cfg, "retry")
    problems = retry_refusals(conn, selection.ids) if selection.ids else []
    if problems:
        raise CommandError("\n  ".join(["nothing retried:", *problems]), 1)
    total, tokens, _ = dead_count(conn, selection)
    wanted = total - tokens
    document = {"dry_run": args.dry_run, "matched": total, "skipped_token_emails": tokens,
                "would_retry": wanted, "retried": 0, "left_alone": 0}  # fmt: skip
    code = _retry(args, cfg, conn, selection, document)
    if args.json:
        print(json.dumps(document, indent=2))
    return code


def _retry(
    args: argparse.Namespace, cfg: Config, conn: Connection, selection: Selection,
    document: dict[str, Any],
) -> int:  # fmt: skip
    """``dead retry`` after its checks: the text as it goes (none with --json: the
    document is printed at the end), the counts into ``document``."""
    say = (lambda line: None) if args.json else print
    tokens, wanted = document["skipped_token_emails"], document["would_retry"]
    if tokens:
        say(f"skipping {tokens} token email(s): their secrets were discarded when they died")
    if wanted == 0:
        say("no dead letters to retry")
        return 0
    if args.dry_run:
        say(f"would retry {wanted} dead letter(s)")
        return 0
    if args.all and not confirm(
        f"retry {wanted} dead letter(s)?", yes=args.yes, what=f"retry {wanted} dead letter(s)"
    ):
        say("nothing retried")
        return 1
    progress = Progress("retried", wanted)
    done = dead_retry(
        conn, selection, channel=cfg.channel_name, actor=Actor.from_cli(args.note),
        batch=args.batch, progress=progress,
    )  # fmt: skip
    progress.close()
    document.update(retried=done, left_alone=wanted - done)
    say(f"retried {done} dead letter(s): pending again, attempts reset, daemons woken")
    if done < wanted:
        say(f"{wanted - done} changed or were busy meanwhile and were left alone")
    return 0


def cmd_dead_purge(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "dead purge", admin_audit.PURGES)
    selection = _selected(args, cfg, "purge")
    total = dead_count(conn, selection)[0]
    what = f"{total} dead letter(s) and their attempts"
    done, code = 0, 0
    if total and not args.dry_run:
        if confirm(f"delete {what}?", yes=args.yes, what=f"delete {what}"):
            progress = Progress("deleted", total)
            done = dead_purge(
                conn, selection, actor=Actor.from_cli(args.note), batch=args.batch,
                progress=progress,
            )  # fmt: skip
            progress.close()
        else:
            code = 1  # declined at the prompt
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "matched": total, "deleted": done,
                          "declined": code == 1}, indent=2))  # fmt: skip
    elif total == 0 or args.dry_run:
        print(f"would delete {what}" if total else "no dead letters match")
    else:
        print("nothing deleted" if code else f"deleted {done} dead letter(s)")
    return code


DEAD_BATCH = 500  # rows per statement of `dead retry` and `dead purge`


def add_commands(sub: Any) -> None:
    """``dead list | retry | purge``: the dead letters, by id or by filter."""
    dead = command(
        sub, "dead", "list, retry or purge dead letters",
        description="Dead letters: messages that failed for good. `dead list` finds them, "
        "`dead retry` sends them again, `dead purge` deletes them. Filters cover one queue: "
        "--queue, by default MAILROOM_QUEUE_NAME; message ids name messages of any queue.",
        examples="  mailroom dead list --since 1h\n"
        "  mailroom dead retry --reason TooManyRequests\n"
        "  mailroom dead purge --before 30d --dry-run\n",
    )  # fmt: skip
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    selecting = argparse.ArgumentParser(add_help=False, parents=[queue_acted_on()])
    selecting.add_argument("ids", nargs="*", type=message_id, metavar="ID", help="message ids")
    selecting.add_argument("--template", help="template name (or simple / raw)")
    selecting.add_argument("--reason", help="text in the last error, e.g. MESSAGE_REJECTED")
    selecting.add_argument("--since", type=when, help="died at or after: 30m, 12h, 7d, ISO time")
    selecting.add_argument("--before", type=when, help="died before: 30m, 12h, 7d, ISO time")
    bulk = argparse.ArgumentParser(add_help=False, parents=[selecting, as_json()])
    bulk.add_argument("--all", action="store_true", help="every dead letter of the queue")
    bulk.add_argument(
        "--batch",
        type=positive,
        default=DEAD_BATCH,
        help=f"rows per statement ({DEAD_BATCH})",
    )
    bulk.add_argument("--note", metavar="TEXT", help="why, for the audit trail")

    listing = command(
        dead_sub, "list", "dead letters, newest first, with their reasons",
        description="Dead letters of the queue (or the given ids), newest first, with the "
        "total matching. Filters combine; --reason matches any part of the last error, "
        "case-insensitively. A page at a time: --limit rows, then `more: --cursor ...` "
        "(--json: next_cursor, null on the last page) gives the next.",
        examples="  mailroom dead list\n  mailroom dead list --template activationv1 --since 2h\n"
        "  mailroom dead list --reason MESSAGE_REJECTED --limit 200 --json\n"
        "  mailroom dead list --cursor 2026-12-01T09:30:00+00:00_9123\n",
        parents=[selecting, revealing(), as_json()],
    )  # fmt: skip
    listing.add_argument("--limit", type=positive, default=50, help="rows shown (50)")
    listing.add_argument(
        "--cursor", type=page_cursor, help="the next page: the cursor the last page gave"
    )
    listing.set_defaults(handler=handler("dead.cmd_dead_list"))

    retry = command(
        dead_sub, "retry", "send dead letters again: pending, attempts reset, daemons woken",
        description="Re-arms dead letters (by id, by filter, or --all): status pending, "
        "attempts 0, due now; last_error keeps why it died until a new try replaces it, and "
        "the attempts log keeps the earlier tries. Works in batches (progress on a terminal) "
        "and wakes the daemons. Ids that are not dead letters (e.g. sent) are refused and "
        "nothing is done (exit 1); token emails are never retried: their secret is gone.",
        examples="  mailroom dead retry 42 43\n"
        "  mailroom dead retry --reason TooManyRequests --since 6h\n"
        "  mailroom dead retry --template activationv1 --all\n"
        "  mailroom dead retry --all --dry-run\n",
        parents=[bulk],
    )  # fmt: skip
    retry.add_argument("--dry-run", action="store_true", help="count only, retry nothing")
    retry.add_argument("--yes", action="store_true", help="--all without confirmation")
    retry.set_defaults(handler=handler("dead.cmd_dead_retry"))

    purge = command(
        dead_sub, "purge", "delete dead letters (and their attempts)",
        description="Deletes dead letters by id, filter or --all, in batches. Asks for "
        "confirmation on a terminal; without a terminal it needs --yes (exit 2 otherwise). "
        "--dry-run only counts. Declining exits 1.",
        examples="  mailroom dead purge --before 30d --dry-run\n"
        "  mailroom dead purge --template oldnewsletter --all --yes\n",
        parents=[bulk],
    )  # fmt: skip
    purge.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=handler("dead.cmd_dead_purge"))
