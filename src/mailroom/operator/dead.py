"""``mailroom dead list | retry | purge``: dead letters by id or filter, in batches.

Retry and purge call one database function per batch (the ``dead_retry_batch`` /
``dead_purge_batch`` queries, migration 0020) that changes the rows and writes the
batch's audit row in one transaction; the operator may not write the tables directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator.audit import Actor
from mailroom.operator.output import Progress, confirm, revealed
from mailroom.outbox import query
from mailroom.text import CommandError, jsonable, masker, recipients, stamp, table

Connection = psycopg.Connection[Any]
BATCH = 500  # rows per statement of `dead retry` and `dead purge`
NOT_RESENDABLE = "a token email: its secret was discarded when it died (the user must ask again)"


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a ``dead`` command acts on; None means "any"."""

    ids: list[int] | None = None
    queue: str | None = None
    template: str | None = None
    reason: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, cfg: Config) -> Selection:
        ids = list(args.ids) or None
        # Ids name messages of any queue; filters default to the configured queue.
        queue = args.queue if args.queue or ids else cfg.queue_name
        return cls(ids, queue, args.template, args.reason, args.since, args.before)

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def described(self) -> dict[str, Any]:
        """The filters given (for the audit trail), ids left out: the rows name them."""
        return {k: jsonable(v) for k, v in self.params().items() if v is not None and k != "ids"}


_DEAD = ["id", "queue", "template", "to", "attempts", "died_at", "reason", "last_error"]


def dead_count(conn: Connection, selection: Selection) -> tuple[int, int, datetime]:
    """(matching dead letters, of which token emails, the time they were counted)."""
    row = conn.execute(query("dead_count"), selection.params()).fetchone()
    assert row is not None  # noqa: S101 -- an aggregate returns one row
    return int(row[0]), int(row[1]), row[2]


def dead_list(
    conn: Connection, selection: Selection, *, limit: int, reveal: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """Matching dead letters, newest first, and how many match in all."""
    rows = conn.execute(query("dead_list"), {**selection.params(), "limit": limit}).fetchall()
    shown = masker(reveal)
    out = [dict(zip(_DEAD, row, strict=True)) for row in rows]
    for item in out:
        item.update({k: shown(item[k]) for k in ("to", "reason", "last_error")})
    return out, dead_count(conn, selection)[0]


def cmd_dead_list(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    selection = Selection.from_args(args, cfg)
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
    selection = Selection.from_args(args, cfg)
    chosen = (selection.ids, selection.template, selection.reason, selection.since)
    if not (args.all or any(v is not None for v in (*chosen, selection.before))):
        raise CommandError(
            f"say which dead letters to {verb}: IDs, a filter (--template, --reason, --since, "
            "--before) or --all"
        )
    return selection


def _in_batches(
    conn: Connection, name: str, selection: Selection, actor: Actor, *, size: int,
    progress: Progress | None, each: Callable[[list[Any]], None] | None = None,
) -> int:  # fmt: skip
    """Run batch query ``name`` until it finds nothing; returns the rows it touched. Rows go
    in (updated_at, id) order after a cursor, and only those dead when the run began: each
    at most once, even if a retried message dies again meanwhile."""
    snapshot = dead_count(conn, selection)[2]
    cursor: tuple[datetime, int] = (datetime.min.replace(tzinfo=UTC), 0)
    done = 0
    audit = actor.params(selection.described())
    while True:
        params = {**selection.params(), **audit, "snapshot": snapshot, "limit": size}
        with admin_audit.refusals_as_errors():
            cursor_at = {"after_at": cursor[0], "after_id": cursor[1]}
            batch = conn.execute(query(name), {**params, **cursor_at}).fetchall()
        if not batch:
            return done
        cursor = max((r[-1], r[0]) for r in batch)
        done += len(batch)
        if each:
            each(batch)
        if progress:
            progress.update(done)


def retry_refusals(conn: Connection, ids: Sequence[int]) -> list[str]:
    """Why each of ``ids`` cannot be retried (empty: all are dead letters)."""
    found = {i: (s, t) for i, s, t in conn.execute(query("message_states"), {"ids": list(ids)})}
    problems = []
    for i in ids:
        state, token = found.get(i, (None, False))
        if state is None:
            problems.append(f"message {i} does not exist")
        elif state == "cancelled":
            problems.append(f"message {i} was cancelled by an operator: it is never retried")
        elif state != "dead":
            problems.append(f"message {i} is {state}, not dead: only dead letters are retried")
        elif token:
            problems.append(f"message {i} is {NOT_RESENDABLE}")
    return problems


def dead_retry(
    conn: Connection, selection: Selection, *, channel: str, actor: Actor | None = None,
    batch: int = BATCH, progress: Progress | None = None,
) -> int:  # fmt: skip
    """Re-arm matching dead letters (pending, attempts 0, due now) batch by batch, waking
    the daemons of their queues after each batch; returns how many were re-armed."""

    def wake(rows: list[Any]) -> None:
        for queue in sorted({r[1] for r in rows}):
            conn.execute(query("wake"), {"channel": channel, "queue": queue})

    return _in_batches(
        conn, "dead_retry_batch", selection, actor or Actor.from_cli(), size=batch,
        progress=progress, each=wake,
    )  # fmt: skip


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


def dead_purge(
    conn: Connection, selection: Selection, *, actor: Actor | None = None, batch: int = BATCH,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Delete matching dead letters (attempts cascade) batch by batch; returns how many."""
    return _in_batches(
        conn, "dead_purge_batch", selection, actor or Actor.from_cli(), size=batch,
        progress=progress,
    )  # fmt: skip


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
