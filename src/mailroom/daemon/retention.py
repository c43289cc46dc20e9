"""Retention: the daemon deletes old sent and dead messages (their attempts cascade), old
SES events and old rows of the applications' changes feed, a small batch at a time and at
a low rate, so that the outbox, the events and the feed stay small without pg_cron.

Each daemon prunes its own queue. While there is backlog it deletes one batch per status
every ``BATCH_PAUSE`` seconds; when a pass deletes less than a full batch it sleeps
``IDLE_INTERVAL``. Batches take their rows ``FOR UPDATE SKIP LOCKED`` in index order
(``outbox_sent_at``, ``outbox_dead``), so replicas pruning at once neither block each other
nor anything else. Events are not per queue: every daemon prunes them, through
``mailroom.prune_events`` (oldest first by ``events_occurred_at``, SKIP LOCKED as well),
and the changes feed, through ``mailroom.prune_changes`` (never younger than seven days).
See docs/cli.md, "Retention".
"""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import structlog

from mailroom import metrics
from mailroom.config.settings import Config
from mailroom.outbox import UNAVAILABLE, Outbox, query

log = structlog.get_logger("mailroom.retention")

BATCH_PAUSE = 2.0  # seconds between batches while old rows remain
IDLE_INTERVAL = 60.0  # seconds between passes once caught up (and after an error)


def periods(config: Config) -> dict[str, float]:
    """Status -> seconds to keep, for the statuses that are pruned at all."""
    if not config.retention_enabled:
        return {}
    # Cancelled messages are final like dead ones, and kept as long.
    keep = {
        "sent": config.retention_sent,
        "dead": config.retention_dead,
        "cancelled": config.retention_dead,
    }
    return {status: seconds for status, seconds in keep.items() if seconds > 0}


async def prune_batch(
    conn: psycopg.AsyncConnection[Any], status: str, *, queue: str, keep_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` ``status`` rows of ``queue`` older than ``keep_seconds``."""
    params = {"queue": queue, "keep_seconds": keep_seconds, "limit": limit}
    cur = await conn.execute(query(f"prune_{status}"), params)
    row = await cur.fetchone()
    pruned = int(row[0]) if row else 0
    if pruned:
        metrics.PRUNED.labels(status).inc(pruned)
    return pruned


def events_period(config: Config) -> float:
    """Seconds to keep SES events; 0: they are not pruned."""
    return config.retention_events if config.retention_enabled else 0.0


async def prune_events_batch(
    conn: psycopg.AsyncConnection[Any], *, keep_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` SES events that occurred longer ago than ``keep_seconds``."""
    params = {"keep_seconds": keep_seconds, "limit": limit}
    cur = await conn.execute(query("prune_events"), params)
    row = await cur.fetchone()
    pruned = int(row[0]) if row else 0
    if pruned:
        metrics.PRUNED_EVENTS.inc(pruned)
    return pruned


def changes_period(config: Config) -> float:
    """Seconds to keep the changes feed; 0: it is not pruned."""
    return config.retention_changes if config.retention_enabled else 0.0


async def prune_changes_batch(
    conn: psycopg.AsyncConnection[Any], *, keep_seconds: float, limit: int
) -> int:
    """Delete up to ``limit`` of the oldest changes recorded longer ago than
    ``keep_seconds``."""
    params = {"keep_seconds": keep_seconds, "limit": limit}
    cur = await conn.execute(query("prune_changes"), params)
    row = await cur.fetchone()
    pruned = int(row[0]) if row else 0
    if pruned:
        metrics.PRUNED_CHANGES.inc(pruned)
    return pruned


async def prune_once(conn: psycopg.AsyncConnection[Any], config: Config) -> dict[str, int]:
    """One batch for each pruned status (and "events", "changes"); the count deleted of
    each ({} when disabled)."""
    pruned = {
        status: await prune_batch(
            conn,
            status,
            queue=config.queue_name,
            keep_seconds=seconds,
            limit=config.retention_batch,
        )
        for status, seconds in periods(config).items()
    }
    if events_period(config):
        pruned["events"] = await prune_events_batch(
            conn, keep_seconds=events_period(config), limit=config.retention_batch
        )
    if changes_period(config):
        pruned["changes"] = await prune_changes_batch(
            conn, keep_seconds=changes_period(config), limit=config.retention_batch
        )
    return pruned


async def run(
    outbox: Outbox,
    config: Config,
    *,
    pause: float = BATCH_PAUSE,
    idle: float = IDLE_INTERVAL,
) -> None:
    """The daemon's background task: prune for ever (returns at once when disabled)."""
    if not periods(config) and not events_period(config) and not changes_period(config):
        log.info("retention_disabled")
        return
    totals: dict[str, int] = {}
    while True:
        try:
            async with outbox.connection() as conn:
                pruned = await prune_once(conn, config)
        except UNAVAILABLE as exc:
            log.warning("retention_failed", error=type(exc).__name__, detail=str(exc)[:200])
            await anyio.sleep(idle)
            continue
        for status, count in pruned.items():
            totals[status] = totals.get(status, 0) + count
        if any(count >= config.retention_batch for count in pruned.values()):
            await anyio.sleep(pause)  # more is old enough: next batch soon, but not at once
            continue
        if any(totals.values()):
            log.info("pruned", **totals)
        totals = {}
        await anyio.sleep(idle)
