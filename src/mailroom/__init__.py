"""mailroom: a PostgreSQL transactional-email outbox delivered through AWS SES.

Enqueue in the same transaction as your business change::

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        create_account(conn, ...)
        mailroom.enqueue(conn, "ann@example.com", template="activationv1", data={...})

Commit and the email will be sent; roll back and it never existed. ``conn`` may be a psycopg
3, psycopg2, SQLAlchemy or Django connection (see docs/applications.md). An idempotency key
reused for another message raises :class:`IdempotencyConflict`. What became of your
messages (sent, delivered, bounced, ...): ``for change in mailroom.changes(conn, cursor)``
(:mod:`mailroom.feed`).
"""

from mailroom.client import (
    cancel,
    cancel_async,
    enqueue,
    enqueue_async,
    status,
    status_async,
)
from mailroom.errors import IdempotencyConflict
from mailroom.feed import Change, changes, changes_async

__all__ = [
    "Change",
    "IdempotencyConflict",
    "cancel",
    "cancel_async",
    "changes",
    "changes_async",
    "enqueue",
    "enqueue_async",
    "status",
    "status_async",
]
