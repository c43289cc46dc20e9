"""Firing the signals of mailroom.djangoapp from the changes feed: at least once, the
stored cursor moved only after every receiver of a change ran without raising.

A receiver that raises is logged (logger ``mailroom.djangoapp``, with its traceback) and
its change is retried, never skipped: the feed stops at that change, waits (1 s, doubling
up to 60 s; ``--once`` returns instead, exit 1, for the next cron run), and starts again
from the stored cursor, so the change's receivers, those that succeeded included, run
again. A change whose receiver keeps raising therefore holds back the ones after it: fix
the receiver (or catch in it what it means to skip). Make receivers idempotent
(``change.id`` is unique): a crash between a receiver and the cursor's store repeats it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections  # type: ignore[import-untyped]

from mailroom.djangoapp.signals import BY_STATE
from mailroom.feed import Change, ack, changes, stored_cursor

log = logging.getLogger("mailroom.djangoapp")

RETRY_FIRST = 1.0  # seconds before the first retry of a failed change
RETRY_CAP = 60.0  # and at most between retries
SLICE = 1.0  # a wait is cut in slices this long, so that SIGTERM is seen within one


@dataclass
class Outcome:
    """What a run did: changes whose receivers all ran, the stored cursor, and the change
    it stopped at because a receiver raised (None when none did)."""

    fired: int = 0
    cursor: int = 0
    failed: int | None = None


def retry_delay(failures: int) -> float:
    """Seconds before the next try after ``failures`` failures in a row (1, 2, 4 ... 60)."""
    return min(RETRY_CAP, RETRY_FIRST * 2.0 ** max(0, failures - 1))


def fire(change: Change) -> list[tuple[Any, BaseException]]:
    """Send the change's signal to every receiver; the receivers that raised."""
    results = BY_STATE[change.state].send_robust(
        sender=Change, message_id=change.message_id, change=change
    )
    return [(receiver, error) for receiver, error in results if isinstance(error, BaseException)]


def _pause(seconds: float, stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(SLICE, left))


def _run_once(
    connection: Any, consumer: str, outcome: Outcome, *, once: bool, batch: int, poll: float,
    stop: Callable[[], bool],
) -> bool:  # fmt: skip
    """Fire from the stored cursor until caught up (``once``), stopped, or a receiver
    raised; whether it stopped on a failure."""
    feed = changes(connection, outcome.cursor, batch=batch, follow=not once, poll=poll,
                   stop=stop)  # fmt: skip
    for change in feed:
        errors = fire(change)
        for receiver, error in errors:
            log.error(
                "mailroom_events: receiver %s of email_%s raised for change %d (message %d);"
                " the change will be retried, the cursor stays at %d",
                getattr(receiver, "__qualname__", repr(receiver)), change.state, change.id,
                change.message_id, outcome.cursor, exc_info=error,
            )  # fmt: skip
        if errors:
            outcome.failed = change.id
            return True
        outcome.cursor = ack(connection, consumer, change.id)
        outcome.fired += 1
        outcome.failed = None
        if stop():
            break
    return False


def deliver(
    using: str, consumer: str, *, once: bool, batch: int, poll: float, stop: Callable[[], bool]
) -> Outcome:
    """Run the feed for ``consumer`` on database ``using`` and fire the signals."""
    connection = connections[using]
    outcome = Outcome()
    loaded = False  # the stored cursor is read again after a lost connection
    failures = 0
    # Django wraps what its cursors raise; waiting for a NOTIFY uses the driver's own
    # connection, whose errors are the driver's (psycopg or psycopg2, whichever it is)
    lost = (DatabaseError, connection.Database.Error)
    while not stop():
        before = outcome.fired
        try:
            if not loaded:
                outcome.cursor = stored_cursor(connection, consumer)
                loaded = True
            failed = _run_once(connection, consumer, outcome, once=once, batch=batch,
                               poll=poll, stop=stop)  # fmt: skip
        except lost as exc:
            if once:
                raise
            failures = failures + 1 if outcome.fired == before else 1
            log.warning("mailroom_events: database error (%s: %s), reconnecting in %.0f s",
                        type(exc).__name__, str(exc)[:200], retry_delay(failures))  # fmt: skip
            connection.close()
            loaded = False
            _pause(retry_delay(failures), stop)
            continue
        if not failed or once:
            break
        # a change that fails again waits longer; one that moved on starts at 1 s again
        failures = failures + 1 if outcome.fired == before else 1
        _pause(retry_delay(failures), stop)
    return outcome
