"""When to claim a batch: on size, on age, or at once when nothing is in flight. No I/O.

Notifications carry no rows, only "something changed"; the batcher counts them the way
the seed's listener did and decides when a claim is worth a round trip.
"""

from __future__ import annotations

from dataclasses import dataclass


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
