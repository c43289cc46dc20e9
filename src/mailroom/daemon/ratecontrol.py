"""The shared send rate, the I/O side: one budget in PostgreSQL for all replicas
(mailroom.reserve_send, migration 0011) that follows the SES account's quota with
MAILROOM_SEND_RATE=auto, backs off on throttling (AIMD, state in the database so every
replica follows it) and pauses sending before the day's quota is exhausted.

GetAccount is read with boto3 in a worker thread: a few calls an hour, off the hot path.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import structlog

from mailroom import metrics
from mailroom.config.settings import Config
from mailroom.daemon import account
from mailroom.outbox import UNAVAILABLE, Outbox, query

log = structlog.get_logger("mailroom.rate")

BUCKET = "ses"
FALLBACK_RATE = 1.0  # recipients/s with auto until a quota is known: the sandbox's rate
RETRY_READ = 30.0  # seconds before reading GetAccount again after a failure
GAUGE_INTERVAL = 15.0


class RateControl:
    def __init__(self, config: Config, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.auto = config.send_rate_auto
        self.rate = FALLBACK_RATE if self.auto else config.send_rate
        self.burst = 0.0 if self.auto else config.send_burst  # 0: one second's worth
        self._reserve = query("reserve_send")
        self._client: Any = None
        self.next_read = 0.0  # event-loop time of the next GetAccount read (auto)
        self.in_force: float | None = None  # the shared rate last read, for mailroom.daemons

    async def reserve(self, recipients: int) -> float:
        """Seconds to wait before ``recipients`` fit the shared budget; infinity when the
        day's quota (less the margin) would be exceeded."""
        params = {
            "bucket": BUCKET, "rate": self.rate, "burst": self.burst, "wanted": recipients,
            "auto": self.auto, "margin": self.config.send_quota_margin,
            "recovery": account.RECOVERY,
        }  # fmt: skip
        async with self.outbox.connection() as conn:
            cur = await conn.execute(self._reserve, params)
            row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def throttled(self) -> None:
        """SES throttled us: cut the rate every replica uses (once per cool-down)."""
        params = {
            "bucket": BUCKET, "decrease": account.DECREASE, "floor": account.FLOOR,
            "recovery": account.RECOVERY, "cooldown": account.COOLDOWN,
        }  # fmt: skip
        async with self.outbox.connection() as conn:
            cur = await conn.execute(query("rate_throttled"), params)
            row = await cur.fetchone()
        if row and row[0] is not None:
            metrics.RATE_BACKOFFS.inc()
            log.warning("send_rate_backoff", factor=round(float(row[0]), 3))

    async def record_quota(self, max_rate: float, max_24h: float, sent_24h: float) -> None:
        params = {"bucket": BUCKET, "max_rate": max_rate, "max_24h": max_24h,
                  "sent_24h": sent_24h}  # fmt: skip
        async with self.outbox.connection() as conn:
            await conn.execute(query("rate_quota"), params)

    async def refresh_gauges(self) -> None:
        params = {"bucket": BUCKET, "recovery": account.RECOVERY}
        async with self.outbox.connection() as conn:
            cur = await conn.execute(query("rate_state"), params)
            row = await cur.fetchone()
        if row is None:
            return
        quota_rate, factor, _, _ = row
        configured = self.rate if self.auto else self.config.send_rate
        rate = account.effective_rate(
            float(quota_rate) if self.auto and quota_rate is not None else None,
            configured,
            float(factor),
        )
        metrics.SEND_RATE_FACTOR.set(float(factor))
        metrics.SEND_RATE_LIMIT.set(rate)
        self.in_force = rate

    def _get_account(self) -> dict[str, Any]:
        """GetAccount (blocking: runs in a worker thread)."""
        if self._client is None:
            from mailroom.daemon.preflight import client  # noqa: PLC0415 -- boto3 only when used

            self._client = client(self.config)
        answer: dict[str, Any] = self._client.get_account()
        return answer

    async def read_quota(self) -> bool:
        """Read the SES quota and share it through the database; False on failure (read
        again sooner)."""
        interval = self.config.account_poll_interval
        self.next_read = anyio.current_time() + min(RETRY_READ, interval)
        try:
            answer = await anyio.to_thread.run_sync(self._get_account)
        except Exception as exc:  # any boto3 or botocore failure: log it, try again later
            log.warning("get_account_failed", error=type(exc).__name__, detail=str(exc)[:300])
            return False
        quota = answer.get("SendQuota") or {}
        max_rate = float(quota.get("MaxSendRate") or 0.0)
        max_24h = float(quota.get("Max24HourSend") or 0.0)
        sent = float(quota.get("SentLast24Hours") or 0.0)
        metrics.SEND_QUOTA.labels("max_send_rate").set(max_rate)
        metrics.SEND_QUOTA.labels("max_24_hour_send").set(max_24h)
        metrics.SEND_QUOTA.labels("sent_last_24_hours").set(sent)
        try:
            await self.record_quota(max_rate, max_24h, sent)
        except UNAVAILABLE as exc:
            log.warning("quota_not_recorded", error=type(exc).__name__)
            return False
        self.next_read = anyio.current_time() + interval
        log.info("send_quota", max_send_rate=max_rate, max_24_hour_send=max_24h,
                 sent_last_24_hours=sent, sending_enabled=answer.get("SendingEnabled"))  # fmt: skip
        if answer.get("SendingEnabled") is False:
            log.warning("ses_sending_disabled", detail="GetAccount says SendingEnabled=false")
        return True

    async def run(self, paused: Any) -> None:
        """For ever: read the quota (auto) and refresh the gauges. While paused for the
        day's quota, the quota is read at every gauge refresh to see when room is back."""
        while True:
            now = anyio.current_time()
            if self.auto and now >= self.next_read:
                await self.read_quota()
            elif self.auto and paused():
                self.next_read = min(self.next_read, now + GAUGE_INTERVAL)
            with contextlib.suppress(*UNAVAILABLE):
                await self.refresh_gauges()
            await anyio.sleep(GAUGE_INTERVAL)
