"""Pausing and resuming a queue by hand (migration 0027, issue 22): the data functions
that `mailroom queue pause | resume`, `mailroom status` and the console call. A paused
queue's row in mailroom.queue_pauses keeps every daemon's claim from taking its messages;
both actions are audited functions of the database, like cancel or send-now."""

from __future__ import annotations

from typing import Any

import psycopg

from mailroom.operator.audit import Actor, refusals_as_errors
from mailroom.outbox import query

Connection = psycopg.Connection[Any]
PAUSES = (("mailroom.queue_pauses", "SELECT"),)
PAUSES_QUEUE = (*PAUSES, ("mailroom.operator_pause_queue(text,text,text,text,uuid)", "EXECUTE"))
RESUMES_QUEUE = (*PAUSES, ("mailroom.operator_resume_queue(text,text,text,text,uuid)", "EXECUTE"))


def pauses(conn: Connection, queue: str | None = None) -> list[dict[str, Any]]:
    """The paused queues (``queue``: that one only), as `status --json` shows them."""
    rows = conn.execute(query("queue_pauses"), {"queue": queue}).fetchall()
    return [
        {"queue": q, "paused_at": at, "paused_by": by, "operator": op, "note": note,
         "paused_seconds": round(float(seconds), 3)}
        for q, at, by, op, note, seconds in rows
    ]  # fmt: skip


def pause_of(conn: Connection, queue: str) -> dict[str, Any] | None:
    found = pauses(conn, queue)
    return found[0] if found else None


def _act(conn: Connection, name: str, queue: str, actor: Actor) -> bool:
    with refusals_as_errors():
        row = conn.execute(query(name), {"queue": queue, **actor.params()}).fetchone()
    return bool(row and row[0])


def pause(conn: Connection, queue: str, actor: Actor) -> bool:
    """Pause ``queue``; True if it was running (False: already paused, nothing changed).
    The daemons see it at their next claim (within about a second)."""
    return _act(conn, "queue_pause", queue, actor)


def resume(conn: Connection, queue: str, actor: Actor, *, channel: str) -> bool:
    """Resume ``queue``; True if it was paused. Wakes its daemons (NOTIFY on ``channel``)."""
    done = _act(conn, "queue_resume", queue, actor)
    if done:
        conn.execute(query("wake"), {"channel": channel, "queue": queue})
    return done
