"""What happened to a message after it was enqueued, for the application that enqueued it.

``delivery_status(conn, message_id)`` reads ``mailroom.message_status(id)`` (granted to
``mailroom_app``; an application sees its own messages only) and says:

- ``pending``: not sent yet (waiting, retrying or being sent);
- ``sent``: SES accepted it, nothing heard since;
- ``delivered`` / ``delayed`` / ``bounced`` / ``complained``: what SES reported (the worst
  recipient of the message counts: one bounce among three recipients is ``bounced``);
- ``dead``: it will not be sent (``reason`` says why, e.g. ``suppressed: bounce since ...``);
- ``cancelled``: nobody wants it sent any more.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from mailroom.outbox import query


class DeliveryStatus(NamedTuple):
    status: str  # the outbox status: pending, retrying, sending, sent, dead, cancelled
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None  # the SES MessageId
    state: str  # pending, sent, delivered, delayed, bounced, complained, dead, cancelled
    at: datetime | None  # when the state was reached
    reason: str | None  # why: the event (type, subtype, diagnostic) or the dead reason


def delivery_status(conn: psycopg.Connection[Any], message_id: int) -> DeliveryStatus | None:
    """The delivery state of one of the caller's messages; None if there is no such
    message, or another application enqueued it."""
    row = conn.execute(query("delivery_status"), {"id": message_id}).fetchone()
    return None if row is None else DeliveryStatus._make(row)


async def delivery_status_async(
    conn: psycopg.AsyncConnection[Any], message_id: int
) -> DeliveryStatus | None:
    """:func:`delivery_status` for an async connection."""
    cur = await conn.execute(query("delivery_status"), {"id": message_id})
    row = await cur.fetchone()
    return None if row is None else DeliveryStatus._make(row)
