"""Transports hand messages to a provider. Calls are coroutines on the daemon's event loop,
several at once; one that blocks must hand its work to a thread itself. Each result carries
a Verdict from classify, which says what a provider's answer means for the message.

May import the top-level foundations (outbox, metrics, logs, config, addresses); never
daemon, events, operator, cli or web.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailroom.outbox import Message
from mailroom.transports.classify import Verdict

BULK_MAX_ENTRIES = 50  # SendBulkEmail accepts at most 50 entries per call


class SetupError(Exception):
    """A transport cannot be set up from the environment (no region, a bad endpoint)."""


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    provider_id: str | None = None
    code: str = ""  # provider error code or entry status: a PII-free label
    detail: str = ""  # provider's message, for last_error
    whole_call: bool = False  # the call failed as a whole, not this entry alone


@dataclass(frozen=True, slots=True)
class Defaults:
    source: str
    config_set: str | None


class Transport(Protocol):
    async def send_bulk(self, messages: Sequence[Message]) -> list[Result]:
        """Send templated messages sharing template, sender, reply-to and configuration
        set; one result per message, in order."""
        ...

    async def send_one(self, message: Message) -> Result:
        """Send one simple or raw message."""
        ...

    async def aclose(self) -> None: ...


def bulk_key(message: Message) -> tuple[object, ...]:
    """Messages with equal keys can share one SendBulkEmail call."""
    return (message.template, message.from_address, message.config_set, tuple(message.reply_to))
