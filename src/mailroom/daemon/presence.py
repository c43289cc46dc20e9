"""Daemons visible in the database (``mailroom.daemons``, migration 0013).

Each daemon writes one row about itself: at start, at every gauge refresh and (deleted) on
a clean shutdown. ``mailroom status`` and the console's overview read the rows, so that a
daemon left in debug mode, or paused after an account-level stop, is seen by operators
who never look at its logs or metrics. A row not refreshed for ``STALE_AFTER`` seconds is
shown as stale (the daemon died or lost the database); after ``FORGET_AFTER`` the next
heartbeat of any daemon deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from mailroom.outbox import query
from mailroom.text import age, masker

if TYPE_CHECKING:
    import psycopg

    from mailroom.config.settings import Config
    from mailroom.outbox import Outbox

STALE_AFTER = 120.0  # seconds without a heartbeat (8 missed refreshes of 15 s): stale
FORGET_AFTER = 86400.0  # seconds: a stale row is deleted by another daemon's heartbeat
LEAVE_TIMEOUT = 2.0  # seconds a clean shutdown spends at most on deleting its row


def public_endpoint(url: str) -> str:
    """An endpoint URL fit to show: without user info, query or fragment (an endpoint
    configured as ``https://user:secret@host/`` keeps its secret)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "SES v2"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def send_rate_setting(config: Config) -> str:
    """MAILROOM_SEND_RATE as an operator reads it."""
    if config.send_rate_auto:
        return "auto"
    return f"{config.send_rate:g}/s" if config.send_rate else "unlimited"


@dataclass(frozen=True, slots=True)
class Identity:
    """What a daemon says about itself that does not change while it runs."""

    worker: str
    queue: str
    version: str
    mode: str  # "ses" | "debug"
    transport: str  # the SES endpoint, or the debug output path
    started_at: datetime
    send_rate: str

    @classmethod
    def of(cls, config: Config, *, endpoint: str, version: str, started_at: datetime) -> Identity:
        return cls(
            worker=config.worker_name,
            queue=config.queue_name,
            version=version,
            # the smtp transport (a development catcher) sends nothing to SES: "debug" too
            mode="ses" if config.sends_to_ses else "debug",
            transport=_transport_shown(config, endpoint),
            started_at=started_at,
            send_rate=send_rate_setting(config),
        )


def _transport_shown(config: Config, endpoint: str) -> str:
    """Where this daemon's mail goes: the debug output path, the smtp transport's URL (it
    cannot hold credentials: config refuses them), or the SES endpoint without secrets."""
    if config.debug:
        return str(config.ses_output_path)
    if config.transport == "smtp":
        return config.smtp_url
    return public_endpoint(endpoint)


def heartbeat_params(
    me: Identity, *, pause_seconds: float, pause_reason: str, rate_in_force: float | None,
    reveal: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The daemon_heartbeat query's parameters. A pause's reason is SES's message, which
    may name an address (the From identity): masked like the logs."""
    return {
        "worker": me.worker[:200],
        "queue": me.queue,
        "version": me.version,
        "mode": me.mode,
        "transport": me.transport[:500],
        "started_at": me.started_at,
        "pause_seconds": max(0.0, pause_seconds),
        "pause_reason": masker(reveal)(pause_reason[:300]) or None,
        "send_rate": me.send_rate,
        "send_rate_in_force": rate_in_force,
        "forget_seconds": FORGET_AFTER,
    }


async def heartbeat(outbox: Outbox, params: dict[str, Any]) -> None:
    async with outbox.connection() as conn:
        await conn.execute(query("daemon_heartbeat"), params)


async def leave(outbox: Outbox, me: Identity) -> None:
    async with outbox.connection() as conn:
        await conn.execute(
            query("daemon_leave"), {"worker": me.worker[:200], "started_at": me.started_at}
        )


# -- the operators' side ---------------------------------------------------------------------

_COLUMNS = [
    "worker", "queue", "version", "mode", "transport", "started_at", "seen_at",
    "seen_seconds_ago", "pause_seconds_left", "paused_until", "pause_reason", "send_rate",
    "send_rate_in_force",
]  # fmt: skip


def listing(conn: psycopg.Connection[Any], queue: str | None) -> list[dict[str, Any]]:
    """The daemons of ``queue`` (None: all), as ``status --json`` shows them."""
    rows = conn.execute(query("status_daemons"), {"queue": queue}).fetchall()
    out = []
    for row in rows:
        d = dict(zip(_COLUMNS, row, strict=True))
        d["seen_seconds_ago"] = round(max(0.0, float(d["seen_seconds_ago"])), 3)
        d["stale"] = d["seen_seconds_ago"] > STALE_AFTER
        left = d.pop("pause_seconds_left")
        d["paused"] = left is not None and not d["stale"]
        d["pause_seconds_left"] = round(float(left), 3) if left is not None else None
        out.append(d)
    return out


def describe(d: dict[str, Any]) -> str:
    """One line about one daemon, loudest news first."""
    head = f"{d['worker']}  (queue {d['queue']}, v{d['version']})"
    if d["stale"]:
        return (
            f"{head}  STALE: not seen for {age(d['seen_seconds_ago'])}: dead, or cut off "
            "from the database"
        )
    parts = []
    if d["mode"] == "debug":
        parts.append(f"DEBUG MODE: sends nothing (writes to {d['transport']})")
    else:
        parts.append(f"ses {d['transport']}")
    if d["paused"]:
        parts.append(
            f"SENDING PAUSED for {age(d['pause_seconds_left'])} more: {d['pause_reason'] or '?'}"
        )
    rate = d["send_rate"]
    if d["send_rate_in_force"] is not None:
        rate += f" (now {d['send_rate_in_force']:g}/s)"
    parts.append(f"rate {rate}")
    parts.append(f"seen {age(d['seen_seconds_ago'])} ago")
    return f"{head}  " + ", ".join(parts)


def summary(daemons: list[dict[str, Any]], queue: str) -> list[str]:
    """The lines of ``mailroom status`` about the daemons of ``queue``."""
    live = [d for d in daemons if not d["stale"]]
    if not live:
        lines = [
            f"daemons: NONE running for queue {queue} (none reported in the last "
            f"{age(STALE_AFTER)}): nothing is being sent"
        ]
    else:
        debug = sum(d["mode"] == "debug" for d in live)
        paused = sum(d["paused"] for d in live)
        notes = ([f"{debug} in DEBUG MODE"] if debug else []) + (
            [f"{paused} PAUSED"] if paused else []
        )
        extra = f" ({', '.join(notes)})" if notes else ""
        lines = [f"daemons: {len(live)} running{extra}:"]
    lines += [f"  {describe(d)}" for d in daemons]
    return lines
