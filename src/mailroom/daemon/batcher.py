"""When to claim a batch, and how big: on size, on age, or at once when nothing is in
flight; bigger while a backlog lasts. No I/O.

Notifications carry no rows, only "something changed"; the batcher counts them the way
the seed's listener did and decides when a claim is worth a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailroom.transports import BULK_MAX_ENTRIES


@dataclass(slots=True)
class Batcher:
    limit: int  # notifications that fill a batch (MAILROOM_BATCH_LIMIT)
    timeout: float  # seconds the first waiting notification may be held (MAILROOM_BATCH_TIMEOUT)
    waiting: int = 0
    first_at: float | None = None

    def notified(self, now: float, count: int = 1) -> None:
        if self.waiting == 0:
            self.first_at = now
        self.waiting += count

    def due(self, now: float, in_flight: int) -> bool:
        """True when the waiting notifications should be claimed now.

        With nothing in flight there is no batch to join, so waiting only adds latency: a
        lone password-reset email goes out at once. Under load, batches fill up.
        """
        if self.waiting == 0:
            return False
        if in_flight == 0 or self.waiting >= self.limit:
            return True
        return self.first_at is not None and now - self.first_at >= self.timeout

    def deadline(self) -> float | None:
        """When the oldest waiting notification must be claimed at the latest."""
        return None if self.first_at is None else self.first_at + self.timeout

    def flushed(self) -> None:
        self.waiting = 0
        self.first_at = None


def claim_size(
    limit: int,
    *,
    backlogged: bool,
    free_calls: int,
    want_calls: int,
    simple_share: float,
    room: int,
) -> int:
    """How many messages the next claim asks for; 0: not now, wait for free calls.

    Not backlogged (a wake-up, the first claim after an idle spell): ``limit``
    (MAILROOM_BATCH_LIMIT), the seed's batch. Backlogged (the last claim came back full):
    what ``want_calls`` SES calls carry, given the share of simple messages (one SendEmail
    each) in the last batch; templated ones ride SendBulkEmail, up to BULK_MAX_ENTRIES per
    call. Never less than ``limit``, never more than ``room`` (messages the daemon may
    still lease: the bound on what one crash can duplicate). While fewer than
    ``want_calls`` are free and that would make the claim smaller, wait: a claim per
    freed slot would cost a round trip (and a record) per call.
    """
    if not backlogged:
        return max(0, min(limit, room))
    share = min(max(simple_share, 0.0), 1.0)
    calls_per_message = share + (1.0 - share) / BULK_MAX_ENTRIES

    def carried(calls: int) -> int:
        return max(0, min(max(limit, int(calls / calls_per_message)), room))

    size = carried(min(free_calls, want_calls))
    return size if size >= carried(want_calls) else 0


def lease_cap(limit: int, concurrency: int) -> int:
    """Messages one daemon may hold leased at once: its calls and a queue as deep as the
    slots, full SendBulkEmail calls each (2 x 50 per slot), or the seed's batch per slot
    when that is larger. A crash can duplicate at most these."""
    return concurrency * max(limit, 2 * BULK_MAX_ENTRIES)
