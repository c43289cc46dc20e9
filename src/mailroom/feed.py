"""What became of the application's own messages: the changes feed (migration 0030).

    for change in mailroom.changes(conn, cursor=last_seen):
        handle(change)                 # change.state: sent, delivered, bounced, ...
        last_seen = change.id          # the cursor: keep it, resume from it

``changes`` catches up from ``cursor`` (every change of the caller's messages after it, in
order), then waits for more: LISTEN on the caller's channel where the driver can hear it
(psycopg 3 or psycopg2, directly or under SQLAlchemy or Django, on a connection in autocommit
mode), a read every ``poll`` seconds otherwise and as a backstop. A notification carries
nothing; the rows come from ``mailroom.changes_since``, which decides whose they are from
the login role (session_user), never from an argument. ``follow=False`` stops once caught
up (cron); ``stop`` (a callable) is asked at least once a second while waiting.

``changes_async`` is the same over a psycopg ``AsyncConnection``. Both share the pure parts
here (rows -> ``Change``, what to do next); only the waiting differs.

Nothing is committed here. Give the feed a connection of its own in autocommit mode: a
connection in a transaction cannot hear a NOTIFY (PostgreSQL delivers them between
transactions), so the feed polls on it, and its transaction stays open while it waits.
A stored cursor per consumer: :func:`stored_cursor` and :func:`ack` (forward only).
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailroom.client import Rows, kind_of, run_query, run_query_async

STATES = ("sent", "delivered", "bounced", "complained", "dead", "cancelled")
BATCH = 100  # changes read per round trip
POLL = 30.0  # seconds between reads when nothing woke the feed
SLICE = 1.0  # the longest single wait: stop() is asked at least this often


@dataclass(frozen=True)
class Change:
    """One change of one of the application's messages.

    ``id`` is the cursor (increasing; resume after it). ``state`` is one of
    :data:`STATES`. ``reason``: a dead or cancelled message's last error, a bounce's SMTP
    diagnostic, a delivery's SMTP response, a complaint's feedback type. ``bounce_type``
    (Permanent, Transient, Undetermined) and ``bounce_subtype`` for a bounce; ``recipient``
    for the per-recipient events (delivered, bounced, complained). ``at``: when mailroom
    recorded it."""

    id: int
    message_id: int
    state: str
    reason: str | None
    bounce_type: str | None
    bounce_subtype: str | None
    recipient: str | None
    at: datetime


def to_changes(rows: Rows) -> list[Change]:
    """changes_since()'s rows as Change values (by column name: a later migration may add
    columns, which are ignored until Change has them)."""
    columns, found = rows
    names = set(Change.__dataclass_fields__)
    return [
        Change(**{c: v for c, v in zip(columns, row, strict=True) if c in names}) for row in found
    ]


def next_step(read: int, batch: int, *, follow: bool, listening: bool | None) -> str:
    """After a read of ``read`` changes: "read" again (the batch was full, or LISTEN was
    just issued: a change committed before it took effect was not announced), "listen"
    (caught up for the first time), "wait", or "stop" (caught up, not following)."""
    if read >= batch:
        return "read"
    if not follow:
        return "stop"
    if listening is None:
        return "listen"
    return "wait"


def _check(cursor: int, batch: int, poll: float) -> None:
    if not isinstance(cursor, int) or cursor < 0:
        raise ValueError(f"cursor must be a change id, 0 or more, not {cursor!r}")
    if not 1 <= batch <= 10000:
        raise ValueError(f"batch must be 1 to 10000, not {batch!r}")
    if not poll > 0:
        raise ValueError(f"poll must be a positive number of seconds, not {poll!r}")


def _driver(conn: Any) -> tuple[str, Any] | None:
    """The DB-API connection under ``conn`` and its driver, when it can hear a NOTIFY."""
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        if kind_of(conn) == "sqlalchemy-session":
            conn = conn.connection()
        conn = conn.connection.driver_connection
    elif module.startswith("django."):
        conn.ensure_connection()
        conn = conn.connection
    module = type(conn).__module__
    if module.startswith("psycopg2"):
        idle = conn.get_transaction_status() == 0  # TRANSACTION_STATUS_IDLE
        return ("psycopg2", conn) if idle else None
    if module == "psycopg" or module.startswith("psycopg."):
        idle = int(conn.info.transaction_status) == 0  # TransactionStatus.IDLE
        return ("psycopg", conn) if idle else None
    return None


def _wait(driver: tuple[str, Any] | None, poll: float, stop: Callable[[], bool] | None) -> None:
    """Until a notification, ``poll`` seconds, or stop()."""
    deadline = time.monotonic() + poll
    while (left := deadline - time.monotonic()) > 0 and not (stop and stop()):
        wait = min(SLICE, left)
        if driver is None:
            time.sleep(wait)
        elif driver[0] == "psycopg":
            for _ in driver[1].notifies(timeout=wait, stop_after=1):
                return
        else:
            raw = driver[1]
            if not raw.notifies and select.select([raw], [], [], wait)[0]:
                raw.poll()
            if raw.notifies:
                raw.notifies.clear()
                return


def changes(
    conn: Any,
    cursor: int = 0,
    *,
    batch: int = BATCH,
    follow: bool = True,
    poll: float = POLL,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Change]:
    """The caller's changes after ``cursor``, then (``follow``) those to come, for ever or
    until ``stop()`` is true. ``conn``: any connection :mod:`mailroom.client` takes."""
    _check(cursor, batch, poll)
    if kind_of(conn) == "psycopg-async":
        raise TypeError("an async connection: use mailroom.changes_async")
    listening: bool | None = None
    driver: tuple[str, Any] | None = None
    while True:
        found = to_changes(run_query(conn, "changes_since", {"cursor": cursor, "max": batch}))
        for change in found:
            yield change
            cursor = change.id
        step = next_step(len(found), batch, follow=follow, listening=listening)
        if step == "stop" or (stop and stop()):
            return
        if step == "listen":
            run_query(conn, "changes_listen", {})
            driver = _driver(conn)
            listening = driver is not None
        elif step == "wait":
            _wait(driver, poll, stop)


async def changes_async(
    conn: Any,
    cursor: int = 0,
    *,
    batch: int = BATCH,
    follow: bool = True,
    poll: float = POLL,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[Change]:
    """:func:`changes` over a psycopg ``AsyncConnection``."""
    _check(cursor, batch, poll)
    listening: bool | None = None
    while True:
        rows = await run_query_async(conn, "changes_since", {"cursor": cursor, "max": batch})
        found = to_changes(rows)
        for change in found:
            yield change
            cursor = change.id
        step = next_step(len(found), batch, follow=follow, listening=listening)
        if step == "stop" or (stop and stop()):
            return
        if step == "listen":
            await run_query_async(conn, "changes_listen", {})
            listening = int(conn.info.transaction_status) == 0  # idle: it can hear
        elif step == "wait":
            deadline = time.monotonic() + poll
            while (left := deadline - time.monotonic()) > 0 and not (stop and stop()):
                if not listening:
                    await asyncio.sleep(min(SLICE, left))
                    continue
                heard = False
                async for _ in conn.notifies(timeout=min(SLICE, left), stop_after=1):
                    heard = True
                if heard:
                    break


def stored_cursor(conn: Any, consumer: str) -> int:
    """The caller's stored cursor for ``consumer`` (0 when none was stored)."""
    return int(run_query(conn, "changes_cursor", {"consumer": consumer})[1][0][0])


def ack(conn: Any, consumer: str, upto: int) -> int:
    """Store ``upto`` as ``consumer``'s cursor (forward only: an older one is ignored);
    returns the stored cursor. In the caller's transaction: commit it."""
    return int(run_query(conn, "changes_ack", {"consumer": consumer, "upto": upto})[1][0][0])
