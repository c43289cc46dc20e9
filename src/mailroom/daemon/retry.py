"""Retry policy: from a verdict to the row's next state. No I/O.

Attempts are counted when a batch is claimed, so a message whose send crashes the
daemon still runs out of attempts. Pauses, deferrals and releases refund that attempt:
they say nothing about the message.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mailroom.outbox import Disposition
from mailroom.transports.classify import Verdict


@dataclass(frozen=True, slots=True)
class Policy:
    base: float = 2.0  # seconds: ceiling of the first backoff
    cap: float = 3600.0  # seconds: largest backoff
    pause: float = 60.0  # seconds to wait after an account-level stop

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
        exponent = min(max(attempt - 1, 0), 62)
        ceiling = min(self.cap, self.base * (2.0**exponent))
        return ceiling * rand()


def dispose(
    verdict: Verdict,
    attempts: int,
    max_attempts: int,
    policy: Policy,
    *,
    provider_id: str | None = None,
    error: str | None = None,
    rand: Callable[[], float] = random.random,
) -> Disposition:
    """Next state of a message whose try number ``attempts`` ended with ``verdict``."""
    if verdict is Verdict.SENT:
        return Disposition("sent", 0, 0.0, "sent", provider_id=provider_id)
    if verdict is Verdict.DEAD:
        return Disposition("dead", 0, 0.0, "dead", error=error)
    if verdict is Verdict.RETRY:
        if attempts >= max_attempts:
            reason = f"gave up after {attempts} attempts: {error}"
            return Disposition("dead", 0, 0.0, "dead", error=reason)
        return Disposition("retrying", 0, policy.backoff(attempts, rand), "retry", error=error)
    # PAUSE or DEFER: the same for this message; only a PAUSE also stops the daemon
    return Disposition("retrying", 1, policy.pause, "paused", error=error)


def released() -> Disposition:
    """A claimed message that was never handed to SES (shutdown, lease running out)."""
    return Disposition("pending", 1, 0.0, None)
