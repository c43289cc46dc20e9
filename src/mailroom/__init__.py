"""mailroom: a PostgreSQL transactional-email outbox delivered through AWS SES.

Enqueue in the same transaction as your business change::

    with psycopg.connect(dsn) as conn:
        create_account(conn, ...)
        mailroom.enqueue(conn, "ann@example.com", template="activationv1", data={...})

Commit and the email will be sent; roll back and it never existed.
"""

from mailroom.delivery import DeliveryStatus, delivery_status, delivery_status_async
from mailroom.outbox import enqueue, enqueue_async

__all__ = [
    "DeliveryStatus",
    "delivery_status",
    "delivery_status_async",
    "enqueue",
    "enqueue_async",
]
