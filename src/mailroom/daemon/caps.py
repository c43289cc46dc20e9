"""Per-recipient caps, the storm dampener: at most N messages to one recipient per window,
overall and per template. No I/O: the daemon reads the recent sends of a batch's
recipients in one query and this module decides (the caps themselves, Cap and Caps, and
their parsers are configuration: mailroom.config.values).

A message is capped when any of its recipients (To, Cc, Bcc) has reached a cap that
applies to it; it is then not sent at all (dropping only that recipient would send a
different message than the one enqueued). What counts towards a cap: messages handed to
SES (claimed and not capped) within the window, by every replica, each message once
however often it is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# What a cap is and how MAILROOM_RECIPIENT_CAP* text becomes one live with the settings'
# value parsers (config.values), which the configuration must not take from the daemon.
from mailroom.config.values import Cap, Caps


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a cap needs to know of a claimed message."""

    id: int
    template: str  # template name, or simple / raw
    recipients: tuple[str, ...]  # lower-cased


def _caps_for(caps: Caps, template: str) -> list[tuple[Cap, str | None]]:
    """The caps a message of ``template`` is subject to, each with its scope: None counts
    every message to the recipient, a name only that template's."""
    found: list[tuple[Cap, str | None]] = []
    if caps.overall is not None:
        found.append((caps.overall, None))
    if template in caps.templates:
        found.append((caps.templates[template], template))
    return found


def decide(
    caps: Caps,
    batch: Sequence[Candidate],
    recent: Mapping[str, Iterable[tuple[str, float]]],
) -> dict[int, Cap]:
    """The capped messages of a batch (id -> the cap reached), in batch order.

    ``recent``: per lower-cased address, (template, age in seconds) of each message sent
    to it within the horizon, this batch's own messages excluded. Messages of the batch
    that are let through count against the ones after them.
    """
    seen: dict[str, list[tuple[str, float]]] = {a: list(v) for a, v in recent.items()}
    capped: dict[int, Cap] = {}
    for message in batch:
        applicable = _caps_for(caps, message.template)
        if not applicable:
            continue
        hit = _reached(applicable, message.recipients, seen)
        if hit is not None:
            capped[message.id] = hit
            continue
        for address in set(message.recipients):
            seen.setdefault(address, []).append((message.template, 0.0))
    return capped


def _reached(
    applicable: list[tuple[Cap, str | None]],
    recipients: Iterable[str],
    seen: Mapping[str, list[tuple[str, float]]],
) -> Cap | None:
    for address in recipients:
        history = seen.get(address)
        if not history:
            continue
        for cap, scope in applicable:
            count = sum(
                1
                for template, age in history
                if age < cap.window and (scope is None or template == scope)
            )
            if count >= cap.limit:
                return cap
    return None
