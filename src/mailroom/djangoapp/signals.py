"""One signal per state of the changes feed, each sent with ``sender=Change`` (the class
mailroom.feed.Change), ``message_id`` (the outbox id, ``message.mailroom_id`` after
``send()``) and ``change`` (the Change itself: reason, bounce type and subtype, recipient,
time). Fired by ``manage.py mailroom_events``, at least once per change (see there)."""

from __future__ import annotations

from django.dispatch import Signal  # type: ignore[import-untyped]

email_sent = Signal()
email_delivered = Signal()
email_bounced = Signal()
email_complained = Signal()
email_dead = Signal()
email_cancelled = Signal()

BY_STATE: dict[str, Signal] = {
    "sent": email_sent,
    "delivered": email_delivered,
    "bounced": email_bounced,
    "complained": email_complained,
    "dead": email_dead,
    "cancelled": email_cancelled,
}
