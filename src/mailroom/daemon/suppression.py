"""The suppression list's pure side: the sender's plan step that takes suppressed
recipients out of a claimed batch before any SES call. How addresses compare
(normalize_address) lives in mailroom.addresses, so that the event parser below the
daemon can use it too.

The list itself is the table mailroom.suppressions (sql/0009_deliverability.sql); the
daemon fetches the suppressed addresses among a batch's recipients in one query, then
:func:`strip` decides what is still sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailroom.addresses import normalize_address
from mailroom.outbox import Message


def recipients(batch: Iterable[Message]) -> list[str]:
    """Every distinct normalized recipient of a batch: the one query's parameter."""
    seen: dict[str, None] = {}
    for message in batch:
        for address in (*message.to, *message.cc, *message.bcc):
            seen[normalize_address(address)] = None
    return list(seen)


@dataclass(frozen=True, slots=True)
class Entry:
    """Why and since when an address is suppressed."""

    reason: str  # bounce, complaint, transient_bounces, manual, ses_import
    since: datetime

    def describe(self) -> str:
        since = self.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.reason} since {since}"


def strip(
    batch: Sequence[Message], suppressed: Mapping[str, Entry]
) -> tuple[list[Message], list[tuple[Message, str]], int]:
    """Take suppressed recipients out of each message.

    Returns the messages still to send (recipients removed where needed), the messages
    left with no recipient with the reason they die (``suppressed: bounce since ...``),
    and how many recipients were removed in all.
    """
    if not suppressed:
        return list(batch), [], 0
    kept: list[Message] = []
    dead: list[tuple[Message, str]] = []
    removed = 0
    for message in batch:
        lists = (message.to, message.cc, message.bcc)
        hits = [a for field in lists for a in field if normalize_address(a) in suppressed]
        if not hits:
            kept.append(message)
            continue
        removed += len(hits)
        to, cc, bcc = (
            [a for a in field if normalize_address(a) not in suppressed] for field in lists
        )
        if to or cc or bcc:
            kept.append(message._replace(to=to, cc=cc, bcc=bcc))
        else:
            reasons = sorted({suppressed[normalize_address(a)].describe() for a in hits})
            dead.append((message, "; ".join(reasons)))
    return kept, dead, removed
