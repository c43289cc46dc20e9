"""The commands ``status``, ``show``, ``send-test``, ``find``, ``cancel`` and ``send-now``:
each ``cmd_*`` takes the parsed arguments, the configuration and an autocommit connection
to a database that ``migrate.check_ready`` accepted, calls operator/ for the data, prints
its answer and returns the exit code (0 ok, 1 "no"), or raises CommandError. Addresses are
masked as in the logs unless ``--reveal`` (or MAILROOM_LOG_REVEAL_ADDRESSES).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.cli.output import revealed
from mailroom.cli.queue import describe as describe_pause
from mailroom.client import enqueue
from mailroom.config.settings import Config
from mailroom.daemon import presence
from mailroom.operator import audit as admin_audit
from mailroom.operator import search
from mailroom.operator.admin import REASONS_SHOWN, outcome, show
from mailroom.operator.audit import Actor
from mailroom.operator.find import (
    Filter,
    cancel,
    find,
    incomplete_notice,
    refusals,
    send_now,
    unsearched_below,
)
from mailroom.text import CommandError, age, jsonable, masker, recipients, stamp, table

Connection = psycopg.Connection[Any]
REASON_MAX = 500


def filter_from_args(args: argparse.Namespace) -> Filter:
    """The ``find`` options as the operator's Filter."""
    given = ",".join(args.status or [])
    statuses = [part.strip().lower() for part in given.split(",")]
    searches = [(flag, text) for flag, text in (("--to", args.to), ("--domain", args.domain),
                ("--prefix", args.prefix)) if text is not None]  # fmt: skip
    if len(searches) > 1:
        raise CommandError(f"{' and '.join(f for f, _ in searches)}: give one recipient search")
    wanted = None
    if searches:
        flag, text = searches[0]
        wanted = search.parse(
            text, {"--to": None, "--domain": "domain", "--prefix": "prefix"}[flag]
        )
    return Filter(
        recipient=wanted, idempotency_key=args.key, ses_id=args.ses_id,
        statuses=[s for s in statuses if s] or None, template=args.template,
        queue=args.queue, since=args.since, before=args.before,
    )  # fmt: skip


def format_status(report: dict[str, Any]) -> str:
    depth = report["depth"]
    lines = [f"queue {report['queue']}  ({stamp(datetime.fromisoformat(report['generated_at']))})"]
    if report["paused"]:  # an operator's pause (0027)
        lines.append(f"QUEUE {describe_pause(report['paused'])}: no daemon claims from it")
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
    lines += presence.summary(report["daemons"], report["queue"])
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
        ("token", m["token"]),  # its kind only (0019): never the token, secret or code
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
    delivery = m["delivery"]
    lines.append(f"delivery: {delivery['state']}" + (f" ({delivery['reason']})"
                 if delivery["reason"] and delivery["state"] != m["status"] else ""))  # fmt: skip
    for e in m["events"]:
        kind = " ".join(x for x in (e["type"], e["subtype"]) if x)
        lines.append(
            f"  {stamp(e['at'])}  {kind:<28} {e['recipient']}  {e['detail'] or ''}".rstrip()
        )
    lines += _format_audit(m["audit"])
    return "\n".join(lines)


def _format_audit(entries: list[dict[str, Any]] | None) -> list[str]:
    if entries is None:
        return ["operator actions: not visible to this role (mailroom_operator reads them)"]
    if not entries:
        return ["operator actions: none"]
    lines = [f"operator actions ({len(entries)}):"]
    for e in entries:
        who = e["actor"] + (f" ({e['operator']})" if e["operator"] else "")
        why = f": {e['reason']}" if e["reason"] else ""
        lines.append(
            f"  {stamp(e['at'])}  {e['action']:<10} by {who} via {e['via']}, "
            f"{e['messages']} message(s){why}"
        )
    return lines


def cmd_show(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    message = show(conn, args.id, reveal=revealed(args, cfg))
    if message is None:
        raise CommandError(f"no message with id {args.id}", 1)
    print(json.dumps(jsonable(message), indent=2) if args.json else format_show(message))
    return 0


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
    shown = masker(revealed(args, cfg))
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


def cmd_find(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "find")
    wanted = filter_from_args(args)
    rows, more = find(
        conn, wanted, limit=args.limit, cursor=args.cursor, reveal=revealed(args, cfg),
    )  # fmt: skip
    notice = incomplete_notice(unsearched_below(conn)) if wanted.wanted() else None
    if notice:
        print(f"mailroom: note: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps({"messages": jsonable(rows), "next_cursor": more}, indent=2))
        return 0
    if not rows:
        print("no messages match")
        return 0
    # a recipient search says where the recipient was: a cc or bcc match is not the To shown
    matched = ["matched"] if rows[0]["matched"] is not None else []
    print(
        table(
            ["id", "created", "status", "tries", "queue", "template", *matched, "to",
             "SES id / reason"],
            [
                (
                    r["id"],
                    stamp(r["created_at"]),
                    r["status"],
                    r["attempts"],
                    r["queue"],
                    r["template"],
                    *([",".join(r["matched"])] if matched else []),
                    recipients(r["to"]),
                    r["ses_id"] or r["reason"],
                )
                for r in rows
            ],
            right="id tries",
        )
    )  # fmt: skip
    if more is not None:
        print(f"more match: add --cursor {more} for the next page (newest first)")
    return 0


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
    if args.dry_run:
        print(f"would cancel {len(ids)} message(s)")
        return 0
    done = cancel(conn, ids, Actor.from_cli(reason))
    print(f"cancelled {len(done)} message(s): {', '.join(map(str, done))}")
    if len(done) < len(ids):
        left = sorted(set(ids) - set(done))
        print(f"{len(left)} changed meanwhile (a daemon took them) and were left alone: "
              f"{', '.join(map(str, left))}")  # fmt: skip
        return 1
    return 0


def cmd_send_now(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "send-now", admin_audit.SENDS_NOW)
    reason = _reason(args.reason, required=False)
    ids = list(dict.fromkeys(args.ids))
    problems = refusals(conn, ids, "send-now")
    if problems:
        raise CommandError("\n  ".join(["nothing changed:", *problems]), 1)
    if args.dry_run:
        print(f"would make {len(ids)} message(s) due now")
        return 0
    done = send_now(conn, ids, Actor.from_cli(reason), channel=cfg.channel_name)
    print(f"due now, daemons woken: {', '.join(map(str, done))}")
    if len(done) < len(ids):
        print(f"{len(ids) - len(done)} changed meanwhile and were left alone")
        return 1
    return 0
