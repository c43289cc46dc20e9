"""Per-recipient caps, the storm dampener: at most N messages to one recipient per window,
overall and per template. No I/O: the daemon reads the recent sends of a batch's
recipients in one query and this module decides.

A message is capped when any of its recipients (To, Cc, Bcc) has reached a cap that
applies to it; it is then not sent at all (dropping only that recipient would send a
different message than the one enqueued). What counts towards a cap: messages handed to
SES (claimed and not capped) within the window, by every replica, each message once
however often it is retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*([smhd])\s*$")
_TEMPLATE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_WINDOW = 30 * 86400  # seconds: longer windows would outlive any sensible retention


@dataclass(frozen=True, slots=True)
class Cap:
    limit: int  # messages allowed within the window
    window: int  # seconds
    text: str  # as configured, e.g. "3/15m", for the reason

    def reason(self) -> str:
        limit, _, window = self.text.partition("/")
        return f"capped: {limit} per {window} to this recipient"


@dataclass(frozen=True, slots=True)
class Caps:
    overall: Cap | None = None
    templates: Mapping[str, Cap] = field(default_factory=dict)
    # Count per application (enqueuing login role) and recipient, so that one application
    # cannot use up the caps of another's users; False: one count per recipient for all.
    per_application: bool = True

    def __bool__(self) -> bool:
        return self.overall is not None or bool(self.templates)

    @property
    def horizon(self) -> int:
        """The longest window: how far back the counts must reach."""
        windows = [c.window for c in self.templates.values()]
        if self.overall is not None:
            windows.append(self.overall.window)
        return max(windows, default=0)

    def applies(self, template: str) -> bool:
        return self.overall is not None or template in self.templates


def parse_cap(text: str) -> Cap:
    """``LIMIT/WINDOW``: 5/1h, 3/15m, 10/1d, 2/30s."""
    match = _SPEC.match(text)
    if not match:
        raise ValueError(f"{text.strip()!r} is not LIMIT/WINDOW such as 5/1h or 3/15m")
    limit, amount, unit = int(match[1]), int(match[2]), match[3]
    window = amount * _UNITS[unit]
    if limit < 1:
        raise ValueError(f"{text.strip()!r}: the limit must be at least 1")
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"{text.strip()!r}: the window must be 1s to 30d")
    return Cap(limit, window, f"{limit}/{amount}{unit}")


def parse_template_caps(text: str) -> dict[str, Cap]:
    """``TEMPLATE:LIMIT/WINDOW,...``, e.g. ``passwordrecoveryv1:3/15m,activationv1:2/1h``."""
    caps: dict[str, Cap] = {}
    for entry in (e for e in text.split(",") if e.strip()):
        name, colon, spec = entry.partition(":")
        name = name.strip()
        if not colon or not _TEMPLATE.match(name):
            raise ValueError(f"{entry.strip()!r} is not TEMPLATE:LIMIT/WINDOW")
        if name in caps:
            raise ValueError(f"template {name} is given twice")
        caps[name] = parse_cap(spec)
    return caps


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
