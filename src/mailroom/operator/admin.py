"""Status, show and the send-test outcome (``mailroom status | show | send-test``, the
console's overview and message page) as functions over a connection returning data.
Every query is a named one from queries.sql; addresses are masked unless reveal.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mailroom.daemon import presence
from mailroom.operator import audit as admin_audit
from mailroom.operator import queues
from mailroom.operator.content import subject_shown
from mailroom.outbox import query
from mailroom.text import CommandError, jsonable, masker, mime_subject

Connection = psycopg.Connection[Any]
REASONS_SHOWN = 5


# -- status ----------------------------------------------------------------------------------


def status(conn: Connection, queue: str, *, reveal: bool = False) -> dict[str, Any]:
    """The report of ``mailroom status --json`` (keys documented in docs/cli.md)."""
    row = conn.execute(query("status_overview"), {"queue": queue}).fetchone()
    assert row is not None  # noqa: S101 -- a SELECT of scalar subqueries returns one row
    pending, retrying, sending, dead, due, oldest, minute, hour, now = row
    reasons = conn.execute(query("status_dead_reasons"), {"queue": queue, "limit": REASONS_SHOWN})
    leases = conn.execute(query("status_leases"), {"queue": queue}).fetchall()
    shown = masker(reveal)
    return {
        "queue": queue,
        "generated_at": jsonable(now),
        # no "sent": counting every sent message kept reads the whole history
        "depth": dict(pending=pending, retrying=retrying, sending=sending, dead=dead),
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


# -- show ------------------------------------------------------------------------------------

_SHOW = [
    "id", "queue", "status", "priority", "from", "to", "cc", "bcc", "reply_to", "config_set",
    "template", "subject", "data_keys", "idempotency_key", "attempts", "max_attempts",
    "created_at", "not_before", "next_attempt_at", "locked_by", "locked_until", "updated_at",
    "sent_at", "provider_message_id", "last_error", "token", "raw_head",
]  # fmt: skip
_MASKED = ("from", "to", "cc", "bcc", "reply_to", "idempotency_key", "last_error")


def show(conn: Connection, message_id: int, *, reveal: bool = False) -> dict[str, Any] | None:
    """One message (no content: template data keys only) with its attempts, or None."""
    row = conn.execute(query("message_show"), {"id": message_id}).fetchone()
    if row is None:
        return None
    shown = masker(reveal)
    message = dict(zip(_SHOW, row, strict=True))
    raw_head = message.pop("raw_head")  # a raw message's subject is in its MIME
    subject = message["subject"] or mime_subject(raw_head and bytes(raw_head))
    message["subject"] = subject_shown(subject, shown)  # as the console's message page
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


# -- send-test -------------------------------------------------------------------------------


def outcome(conn: Connection, message_id: int) -> tuple[str, int, str | None, str | None]:
    """(status, attempts, SES message id, last error) of one message."""
    row = conn.execute(query("message_outcome"), {"id": message_id}).fetchone()
    if row is None:
        raise CommandError(f"message {message_id} no longer exists", 1)
    return str(row[0]), int(row[1]), row[2], row[3]
