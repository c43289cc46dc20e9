"""The operator commands: ``status``, ``show``, ``dead list | retry | purge``, ``send-test``.

Each ``cmd_*`` takes the parsed arguments, the configuration and an autocommit connection
to a database that ``migrate.check_ready`` accepted, prints its answer and returns the exit
code (0 ok, 1 "no"), or raises CommandError. Every query is a named one from queries.sql.
Addresses are masked as in the logs unless ``--reveal`` (or MAILROOM_LOG_REVEAL_ADDRESSES).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import psycopg

from mailroom.client import enqueue
from mailroom.config import Config
from mailroom.logs import mask
from mailroom.outbox import query

Connection = psycopg.Connection[Any]
BATCH = 500  # rows per statement of `dead retry` and `dead purge`
REASONS_SHOWN = 5
NOT_RESENDABLE = "a token email: its secret was discarded when it died (the user must ask again)"


class CommandError(Exception):
    """Print ``mailroom: <message>`` and exit with ``code`` (2: usage, 1: "no")."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# -- arguments and output --------------------------------------------------------------------

_AGE = re.compile(r"^(\d+)(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def when(text: str) -> datetime:
    """``--since`` / ``--before``: an age (``90s``, ``30m``, ``12h``, ``7d``, ``2w``: that long
    ago) or an ISO 8601 time (local time unless it names a zone)."""
    relative = _AGE.match(text.strip().lower())
    if relative:
        return datetime.now(UTC) - timedelta(seconds=int(relative[1]) * _SECONDS[relative[2]])
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (30m, 12h, 7d) nor an ISO time (2024-05-01T03:00)"
        ) from None
    return value if value.tzinfo else value.astimezone()


def age(seconds: float) -> str:
    """``4m 12s``-style duration."""
    s = int(abs(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def stamp(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 UTC strings, recursively."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def masker(reveal: bool) -> Callable[[Any], Any]:
    """Masks addresses in a string or a list of strings (None passes)."""

    def shown(value: Any) -> Any:
        if reveal or value is None:
            return value
        return [mask(v) for v in value] if isinstance(value, list) else mask(value)

    return shown


def _reveal(args: argparse.Namespace, cfg: Config) -> bool:
    return bool(getattr(args, "reveal", False)) or cfg.reveal_addresses


class Progress:
    """``retried 1500/3000`` on stderr, rewritten in place, only on a terminal."""

    def __init__(self, verb: str, total: int, stream: TextIO | None = None) -> None:
        self.verb, self.total = verb, total
        self.stream = stream or sys.stderr
        self.shown = self.stream.isatty()

    def update(self, done: int) -> None:
        if self.shown:
            self.stream.write(f"\r{self.verb} {done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")


# -- status ----------------------------------------------------------------------------------


def status(conn: Connection, queue: str, *, reveal: bool = False) -> dict[str, Any]:
    """The report of ``mailroom status --json`` (keys documented in docs/cli.md)."""
    row = conn.execute(query("status_overview"), {"queue": queue}).fetchone()
    assert row is not None  # noqa: S101 -- a SELECT of scalar subqueries returns one row
    pending, retrying, sending, sent, dead, due, oldest, minute, hour, now = row
    reasons = conn.execute(query("status_dead_reasons"), {"queue": queue, "limit": REASONS_SHOWN})
    leases = conn.execute(query("status_leases"), {"queue": queue}).fetchall()
    shown = masker(reveal)
    return {
        "queue": queue,
        "generated_at": jsonable(now),
        "depth": dict(pending=pending, retrying=retrying, sending=sending, sent=sent, dead=dead),
        "due": due,
        "oldest_due_age_seconds": round(float(oldest), 3),
        "sent_last_minute": minute,
        "sent_last_hour": hour,
        "dead_reasons": [{"reason": shown(r), "messages": n} for r, n in reasons.fetchall()],
        "leases": [
            {"worker": w, "messages": n, "expires_in_seconds": round(float(e), 3)}
            for w, n, e in leases
        ],
    }


def format_status(report: dict[str, Any]) -> str:
    depth = report["depth"]
    lines = [f"queue {report['queue']}  ({stamp(datetime.fromisoformat(report['generated_at']))})"]
    lines += [f"  {name:<9}{count:>9}" for name, count in depth.items()]
    oldest = (
        f", the oldest due for {age(report['oldest_due_age_seconds'])}" if report["due"] else ""
    )
    lines.append(f"due now: {report['due']} of {depth['pending'] + depth['retrying']}{oldest}")
    lines.append(
        f"sent: {report['sent_last_minute']} in the last minute, "
        f"{report['sent_last_hour']} in the last hour"
    )
    if report["dead_reasons"]:
        lines.append(f"dead-letter reasons (top {REASONS_SHOWN}):")
        lines += [f"  {r['messages']:>7}  {r['reason']}" for r in report["dead_reasons"]]
    lines.append("leases:" if report["leases"] else "leases: none (no daemon is sending now)")
    for lease in report["leases"]:
        left = lease["expires_in_seconds"]
        until = (
            f"lease ends in {age(left)}"
            if left >= 0
            else f"lease EXPIRED {age(left)} ago: holder dead or stuck; the next poll reclaims it"
        )
        lines.append(f"  {lease['worker']}  {lease['messages']} message(s), {until}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    report = status(conn, args.queue or cfg.queue_name, reveal=_reveal(args, cfg))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


# -- show ------------------------------------------------------------------------------------

_SHOW = [
    "id", "queue", "status", "priority", "from", "to", "cc", "bcc", "reply_to", "config_set",
    "template", "subject", "data_keys", "idempotency_key", "attempts", "max_attempts",
    "created_at", "not_before", "next_attempt_at", "locked_by", "locked_until", "updated_at",
    "sent_at", "provider_message_id", "last_error",
]  # fmt: skip
_MASKED = ("from", "to", "cc", "bcc", "reply_to", "idempotency_key", "last_error")


def show(conn: Connection, message_id: int, *, reveal: bool = False) -> dict[str, Any] | None:
    """One message (no content: template data keys only) with its attempts, or None."""
    row = conn.execute(query("message_show"), {"id": message_id}).fetchone()
    if row is None:
        return None
    shown = masker(reveal)
    message = dict(zip(_SHOW, row, strict=True))
    message.update({key: shown(message[key]) for key in _MASKED})
    attempts = conn.execute(query("message_attempts"), {"id": message_id}).fetchall()
    message["attempts_log"] = [
        {"attempt": n, "outcome": o, "at": at, "worker": w, "provider_message_id": p,
         "error": shown(e)}
        for n, o, at, w, p, e in attempts
    ]  # fmt: skip
    return message


def format_show(m: dict[str, Any]) -> str:
    now = datetime.now(UTC)

    def rel(t: datetime) -> str:
        delta = (t - now).total_seconds()
        return f"{stamp(t)} ({'in ' + age(delta) if delta > 0 else age(delta) + ' ago'})"

    rows: list[tuple[str, Any]] = [
        ("status", f"{m['status']}, {m['attempts']} of {m['max_attempts']} attempts used"),
        *((k.replace("_", " "), ", ".join(m[k])) for k in ("to", "cc", "bcc", "reply_to")),
        ("from", m["from"] or "(MAILROOM_SES_SOURCE)"),
        ("template", m["template"]),
        ("data keys", ", ".join(m["data_keys"])),
        ("subject", m["subject"]),
        ("config set", m["config_set"]),
        ("priority", m["priority"]),
        ("idempotency key", m["idempotency_key"]),
        ("created", rel(m["created_at"])),
        ("updated", rel(m["updated_at"])),
    ]
    if m["status"] in ("pending", "retrying"):
        rows.append(("next attempt", rel(m["next_attempt_at"])))
    if m["status"] == "sending":
        rows.append(("lease", f"{m['locked_by']} until {rel(m['locked_until'])}"))
    if m["sent_at"]:
        rows.append(("sent", rel(m["sent_at"])))
    rows += [("SES message id", m["provider_message_id"]), ("last error", m["last_error"])]
    lines = [f"message {m['id']}  (queue {m['queue']})"]
    lines += [f"  {k:<16} {v}" for k, v in rows if v not in (None, "")]
    log = m["attempts_log"]
    lines.append(f"attempts ({len(log)}):" if log else "attempts: none yet")
    for a in log:
        detail = " ".join(x for x in (a["provider_message_id"], a["error"]) if x)
        head = f"  #{a['attempt']:<3} {stamp(a['at'])}  {a['outcome']:<13} {a['worker'] or '-'}"
        lines.append(f"{head}  {detail}".rstrip())
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    message = show(conn, args.id, reveal=_reveal(args, cfg))
    if message is None:
        raise CommandError(f"no message with id {args.id}", 1)
    print(json.dumps(jsonable(message), indent=2) if args.json else format_show(message))
    return 0


# -- dead letters ----------------------------------------------------------------------------


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
    rows, total = dead_list(conn, selection, limit=args.limit, reveal=_reveal(args, cfg))
    if args.json:
        print(json.dumps({"total": total, "messages": jsonable(rows)}, indent=2))
        return 0
    if not rows:
        print("no dead letters match")
        return 0
    print(f"{'id':>10}  {'died':<20}  {'tries':>5}  {'template':<20}  {'to':<28}  reason")
    for r in rows:
        to = r["to"][0] + (f" +{len(r['to']) - 1}" if len(r["to"]) > 1 else "")
        print(
            f"{r['id']:>10}  {stamp(r['died_at']):<20}  {r['attempts']:>5}  "
            f"{r['template']:<20}  {to:<28}  {r['reason']}"
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
    conn: Connection, name: str, selection: Selection, *, size: int,
    progress: Progress | None, each: Callable[[list[Any]], None] | None = None,
) -> int:  # fmt: skip
    """Run batch query ``name`` until it finds nothing; returns the rows it touched. Rows go
    in (updated_at, id) order after a cursor, and only those dead when the run began: each
    at most once, even if a retried message dies again meanwhile."""
    snapshot = dead_count(conn, selection)[2]
    cursor: tuple[datetime, int] = (datetime.min.replace(tzinfo=UTC), 0)
    done = 0
    while True:
        params = {**selection.params(), "snapshot": snapshot, "limit": size}
        rows = conn.execute(query(name), {**params, "after_at": cursor[0], "after_id": cursor[1]})
        batch = rows.fetchall()
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
        elif state != "dead":
            problems.append(f"message {i} is {state}, not dead: only dead letters are retried")
        elif token:
            problems.append(f"message {i} is {NOT_RESENDABLE}")
    return problems


def dead_retry(
    conn: Connection, selection: Selection, *, channel: str, batch: int = BATCH,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Re-arm matching dead letters (pending, attempts 0, due now) batch by batch, waking
    the daemons of their queues after each batch; returns how many were re-armed."""

    def wake(rows: list[Any]) -> None:
        for queue in sorted({r[1] for r in rows}):
            conn.execute(query("wake"), {"channel": channel, "queue": queue})

    return _in_batches(
        conn, "dead_retry_batch", selection, size=batch, progress=progress, each=wake
    )


def cmd_dead_retry(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    selection = _selected(args, cfg, "retry")
    problems = retry_refusals(conn, selection.ids) if selection.ids else []
    if problems:
        raise CommandError("\n  ".join(["nothing retried:", *problems]), 1)
    total, tokens, _ = dead_count(conn, selection)
    if tokens:
        print(f"skipping {tokens} token email(s): their secrets were discarded when they died")
    if total == tokens:
        print("no dead letters to retry")
        return 0
    progress = Progress("retried", total - tokens)
    done = dead_retry(
        conn, selection, channel=cfg.channel_name, batch=args.batch, progress=progress
    )
    progress.close()
    print(f"retried {done} dead letter(s): pending again, attempts reset, daemons woken")
    if done < total - tokens:
        print(f"{total - tokens - done} changed or were busy meanwhile and were left alone")
    return 0


def dead_purge(
    conn: Connection, selection: Selection, *, batch: int = BATCH,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Delete matching dead letters (attempts cascade) batch by batch; returns how many."""
    return _in_batches(conn, "dead_purge_batch", selection, size=batch, progress=progress)


def cmd_dead_purge(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    selection = _selected(args, cfg, "purge")
    total = dead_count(conn, selection)[0]
    what = f"{total} dead letter(s) and their attempts"
    if total == 0 or args.dry_run:
        print(f"would delete {what}" if total else "no dead letters match")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise CommandError(f"refusing to delete {what} without --yes (stdin is no terminal)")
        if input(f"delete {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    progress = Progress("deleted", total)
    done = dead_purge(conn, selection, batch=args.batch, progress=progress)
    progress.close()
    print(f"deleted {done} dead letter(s)")
    return 0


# -- send-test -------------------------------------------------------------------------------


def _test_content(args: argparse.Namespace) -> dict[str, Any]:
    if args.template is None:
        if args.data is not None:
            raise CommandError("--data goes with --template")
        sent = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        text = f"A test message from `mailroom send-test` on {socket.gethostname()}, {sent}."
        return {"subject": args.subject, "text": text}
    try:
        data = json.loads(args.data) if args.data is not None else {}
    except ValueError as exc:
        raise CommandError(f"--data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("--data must be a JSON object")
    return {"template": args.template, "data": data}


def outcome(conn: Connection, message_id: int) -> tuple[str, int, str | None, str | None]:
    """(status, attempts, SES message id, last error) of one message."""
    row = conn.execute(query("message_outcome"), {"id": message_id}).fetchone()
    if row is None:
        raise CommandError(f"message {message_id} no longer exists", 1)
    return str(row[0]), int(row[1]), row[2], row[3]


def cmd_send_test(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    content = _test_content(args)
    queue = args.queue or cfg.queue_name
    try:
        message_id = enqueue(conn, args.to, queue=queue, from_address=args.from_address, **content)
    except psycopg.errors.CheckViolation as exc:
        raise CommandError(f"refused: {exc.diag.constraint_name or exc}") from None
    print(f"enqueued message {message_id} (queue {queue})", flush=True)
    if not args.wait:
        return 0
    shown = masker(_reveal(args, cfg))
    deadline = time.monotonic() + args.timeout
    last = ("pending", 0)
    while True:
        state, attempts, provider_id, error = outcome(conn, message_id)
        if state in ("sent", "dead"):
            print(
                f"sent: SES message id {provider_id}"
                if state == "sent"
                else f"dead after {attempts} attempt(s): {shown(error)}"
            )
            return 0 if state == "sent" else 1
        if (state, attempts) != last:
            last = (state, attempts)
            print(f"{state} (attempts {attempts})" + (f": {shown(error)}" if error else ""))
        if time.monotonic() >= deadline:
            print(
                f"still {state} after {args.timeout:g} s: is a daemon serving queue {queue}? "
                "(`mailroom status` shows leases)"
            )
            return 1
        time.sleep(0.2)
