"""Errors mailroom raises to applications, and how a driver's error is recognised as one
(psycopg 3, psycopg2, SQLAlchemy and Django wrap the database's error each in their own way).
"""

from __future__ import annotations

KEY_REUSED = "outbox_idempotency_key_reused"  # sql/0028: SQLSTATE 23505 with this constraint
UNIQUE_VIOLATION = "23505"


class IdempotencyConflict(ValueError):
    """An idempotency key already names another message of the caller's (other sender,
    recipients or content): the new message was not enqueued. The same key with the same
    message returns the existing id instead. The caller's transaction is aborted, as by
    any database error: roll it back (or to a savepoint)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key


def _database_errors(exc: BaseException) -> list[BaseException]:
    # SQLAlchemy keeps the driver's error in .orig; Django chains it as __cause__
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 8:
            continue
        seen.append(current)
        pending += [getattr(current, "orig", None), current.__cause__]
    return seen


def conflict_of(exc: BaseException, key: str | None) -> IdempotencyConflict | None:
    """The IdempotencyConflict ``exc`` is (the database said so), or None."""
    for error in _database_errors(exc):
        state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        diag = getattr(error, "diag", None)
        if state == UNIQUE_VIOLATION and getattr(diag, "constraint_name", None) == KEY_REUSED:
            text = getattr(diag, "message_primary", None) or str(error)
            return IdempotencyConflict(key, str(text).removeprefix("mailroom: "))
    return None
