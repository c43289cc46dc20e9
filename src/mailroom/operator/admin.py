"""The operator commands ``status``, ``show`` and ``send-test`` (dead letters: admin_dead;
find, cancel, send-now: admin_find; queues and stats: admin_stats).

Each ``cmd_*`` takes the parsed arguments, the configuration and an autocommit connection
to a database that ``migrate.check_ready`` accepted, prints its answer and returns the exit
code (0 ok, 1 "no"), or raises CommandError. Every query is a named one from queries.sql.
Addresses are masked as in the logs unless ``--reveal`` (or MAILROOM_LOG_REVEAL_ADDRESSES).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.client import enqueue
from mailroom.config.settings import Config
from mailroom.daemon import presence
from mailroom.operator import audit as admin_audit
from mailroom.operator import queues
from mailroom.operator.output import revealed
from mailroom.outbox import query
from mailroom.text import CommandError, age, jsonable, masker, stamp

Connection = psycopg.Connection[Any]
REASONS_SHOWN = 5


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
        "daemons": jsonable(
            [{**d, "pause_reason": shown(d["pause_reason"])} for d in presence.listing(conn, queue)]
        ),
        # an operator's pause of the queue (0027; None: running)
        "paused": jsonable(queues.pause_of(conn, queue)),
    }


def format_status(report: dict[str, Any]) -> str:
    depth = report["depth"]
    lines = [f"queue {report['queue']}  ({stamp(datetime.fromisoformat(report['generated_at']))})"]
    if report["paused"]:
        lines.append(f"QUEUE {queues.describe(report['paused'])}: no daemon claims from it")
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


def cmd_status(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    report = status(conn, args.queue or cfg.queue_name, reveal=revealed(args, cfg))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


# -- show ------------------------------------------------------------------------------------

_SHOW = [
    "id", "queue", "status", "priority", "from", "to", "cc", "bcc", "reply_to", "config_set",
    "template", "subject", "data_keys", "idempotency_key", "attempts", "max_attempts",
    "created_at", "not_before", "next_attempt_at", "locked_by", "locked_until", "updated_at",
    "sent_at", "provider_message_id", "last_error", "token",
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
    delivery = conn.execute(query("message_delivery"), {"id": message_id}).fetchone()
    state, state_at, reason = delivery if delivery else (None, None, None)
    message["delivery"] = {"state": state, "at": state_at, "reason": shown(reason)}
    message["audit"] = admin_audit.audit_of(conn, message_id)
    for entry in message["audit"] or []:
        entry["reason"] = shown(entry["reason"])  # free text: it may name the customer
    message["events"] = delivery_events(conn, message_id, reveal=reveal)
    return message


def delivery_events(conn: Connection, message_id: int, *, reveal: bool) -> list[dict[str, Any]]:
    """The per-recipient SES events of a message, oldest first (no bodies): `show`, `find
    --json` and the console's message page all call this one function."""
    shown = masker(reveal)
    history = conn.execute(query("message_events"), {"id": message_id}).fetchall()
    return [
        {"at": at, "recipient": shown(r), "type": t, "subtype": st, "detail": shown(d),
         "received_at": rec}
        for at, r, t, st, d, rec in history
    ]  # fmt: skip


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
