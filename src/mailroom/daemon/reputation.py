"""The bounce and complaint rate gauges, kept current by every daemon from the events
the readers stored (mailroom.events): a daemon reads the rates whether or not it reads
events itself, so it needs nothing of the reader."""

from __future__ import annotations

import anyio
import structlog

from mailroom import metrics
from mailroom.outbox import UNAVAILABLE, Outbox

log = structlog.get_logger("mailroom.events")

WINDOW = 10_000  # recipients (delivered or bounced) the rates are computed over
INTERVAL = 15.0  # seconds between refreshes


async def refresh(outbox: Outbox, window: int = WINDOW) -> None:
    """The daemon's task keeping the bounce and complaint rate gauges current."""
    while True:
        try:
            recipients, bounces, complaints = await outbox.reputation(window)
        except UNAVAILABLE as exc:
            log.warning("reputation_failed", error=type(exc).__name__)
        else:
            metrics.REPUTATION_RECIPIENTS.set(recipients)
            metrics.BOUNCE_RATE.set(bounces / recipients if recipients else 0.0)
            metrics.COMPLAINT_RATE.set(complaints / recipients if recipients else 0.0)
        await anyio.sleep(INTERVAL)
