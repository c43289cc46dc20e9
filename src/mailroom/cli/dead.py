"""The commands ``dead list | retry | purge``: dead letters by id or filter, in batches,
calling operator/dead.py; each ``cmd_*`` prints its answer and returns the exit code."""

from __future__ import annotations

import argparse
import json
from typing import Any

import psycopg

from mailroom.cli.output import Progress, confirm, revealed
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.audit import Actor
from mailroom.operator.dead import (
    Selection,
    dead_count,
    dead_list,
    dead_purge,
    dead_retry,
    retry_refusals,
)
from mailroom.text import CommandError, jsonable, recipients, stamp, table

Connection = psycopg.Connection[Any]


def selection_from_args(args: argparse.Namespace, cfg: Config) -> Selection:
    """The ``dead`` options as the operator's Selection."""
    ids = list(args.ids) or None
    # Ids name messages of any queue; filters default to the configured queue.
    queue = args.queue if args.queue or ids else cfg.queue_name
    return Selection(ids, queue, args.template, args.reason, args.since, args.before)


def cmd_dead_list(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    selection = selection_from_args(args, cfg)
    rows, total = dead_list(conn, selection, limit=args.limit, reveal=revealed(args, cfg))
    if args.json:
        print(json.dumps({"total": total, "messages": jsonable(rows)}, indent=2))
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
    if total > len(rows):
        print(f"showing {len(rows)} of {total} (newest first; --limit shows more)")
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
    if tokens:
        print(f"skipping {tokens} token email(s): their secrets were discarded when they died")
    wanted = total - tokens
    if wanted == 0:
        print("no dead letters to retry")
        return 0
    if args.dry_run:
        print(f"would retry {wanted} dead letter(s)")
        return 0
    if args.all and not confirm(
        f"retry {wanted} dead letter(s)?", yes=args.yes, what=f"retry {wanted} dead letter(s)"
    ):
        print("nothing retried")
        return 1
    progress = Progress("retried", wanted)
    done = dead_retry(
        conn, selection, channel=cfg.channel_name, actor=Actor.from_cli(args.note),
        batch=args.batch, progress=progress,
    )  # fmt: skip
    progress.close()
    print(f"retried {done} dead letter(s): pending again, attempts reset, daemons woken")
    if done < wanted:
        print(f"{wanted - done} changed or were busy meanwhile and were left alone")
    return 0


def cmd_dead_purge(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "dead purge", admin_audit.PURGES)
    selection = _selected(args, cfg, "purge")
    total = dead_count(conn, selection)[0]
    what = f"{total} dead letter(s) and their attempts"
    if total == 0 or args.dry_run:
        print(f"would delete {what}" if total else "no dead letters match")
        return 0
    if not confirm(f"delete {what}?", yes=args.yes, what=f"delete {what}"):
        print("nothing deleted")
        return 1
    progress = Progress("deleted", total)
    done = dead_purge(
        conn, selection, actor=Actor.from_cli(args.note), batch=args.batch, progress=progress
    )
    progress.close()
    print(f"deleted {done} dead letter(s)")
    return 0
