"""The per-recipient cap as a step of the sender's plan: one query for the recent sends
of a batch's recipients, the decision (mailroom.daemon.caps, pure), one insert for the messages
let through. Only in use when caps are configured."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import structlog

from mailroom import metrics
from mailroom.config.values import Caps
from mailroom.daemon.caps import Candidate, decide
from mailroom.outbox import UNAVAILABLE, Message, Outbox, query
from mailroom.transports import Result
from mailroom.transports.classify import Verdict

log = structlog.get_logger("mailroom.caps")

CODE = "capped"  # the error code of a capped message: last_error "capped: 3 per 15m ..."
PRUNE_INTERVAL = 60.0  # seconds between deletions of rows older than every window
PRUNE_BATCH = 5000


# Between the enqueuing role and the address in a counting key: no valid address holds it,
# so the last one in a key always separates the two.
SCOPE_SEPARATOR = "\x1f"


def candidate(message: Message, *, per_application: bool = True) -> Candidate:
    """The message as the caps see it. Its "recipients" are counting keys: with caps per
    application, the enqueuing login role and the address (another application's mail to
    the same person counts apart); otherwise the address alone."""
    template = metrics.template_label(message.template, message.raw_mime is not None)
    prefix = (message.enqueued_by or "") + SCOPE_SEPARATOR if per_application else ""
    recipients = tuple(prefix + a.lower() for a in (*message.to, *message.cc, *message.bcc))
    return Candidate(message.id, template, recipients)


class CapStep:
    def __init__(self, caps: Caps, outbox: Outbox) -> None:
        self.caps = caps
        self.outbox = outbox

    async def apply(
        self, messages: Sequence[Message]
    ) -> tuple[list[Message], list[tuple[Message, Result]]]:
        """Split a batch into the messages to send and the capped ones with their result.
        Database errors propagate (the caller releases the batch: nothing is lost)."""
        per_application = self.caps.per_application
        candidates = [candidate(m, per_application=per_application) for m in messages]
        subject = [c for c in candidates if self.caps.applies(c.template)]
        if not subject:
            return list(messages), []
        addresses = sorted({a for c in subject for a in c.recipients})
        params = {
            "addresses": addresses,
            "ids": [c.id for c in subject],
            "horizon": float(self.caps.horizon),
        }
        recent: dict[str, list[tuple[str, float]]] = {}
        async with self.outbox.connection() as conn, conn.transaction():
            await conn.execute(query("caps_lock"), {"addresses": addresses})
            cur = await conn.execute(query("caps_recent"), params)
            for address, template, age in await cur.fetchall():
                recent.setdefault(address, []).append((template, float(age)))
            capped = decide(self.caps, subject, recent)
            rows = [(a, c.id, c.template) for c in subject if c.id not in capped
                    for a in c.recipients]  # fmt: skip
            if rows:
                log_params = {
                    "addresses": [r[0] for r in rows],
                    "ids": [r[1] for r in rows],
                    "templates": [r[2] for r in rows],
                }
                await conn.execute(query("caps_log"), log_params)
        send: list[Message] = []
        stopped: list[tuple[Message, Result]] = []
        by_id = {c.id: c for c in candidates}
        for message in messages:
            cap = capped.get(message.id)
            if cap is None:
                send.append(message)
                continue
            template = by_id[message.id].template
            metrics.CAPPED.labels(template).inc()
            log.info("message_capped", message_id=message.id, template=template, cap=cap.text)
            detail = cap.reason().removeprefix(CODE + ": ")
            stopped.append((message, Result(Verdict.DEAD, code=CODE, detail=detail)))
        return send, stopped

    async def prune(self) -> None:
        """Delete rows older than every window, in small batches, for ever."""
        params = {"horizon": float(self.caps.horizon), "limit": PRUNE_BATCH}
        while True:
            try:
                async with self.outbox.connection() as conn:
                    cur = await conn.execute(query("caps_prune"), params)
                    deleted = cur.rowcount
            except UNAVAILABLE as exc:  # the database may be away: try again later
                log.warning("caps_prune_failed", error=type(exc).__name__)
                deleted = 0
            await anyio.sleep(0.5 if deleted == PRUNE_BATCH else PRUNE_INTERVAL)
