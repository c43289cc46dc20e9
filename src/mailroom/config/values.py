"""How each MAILROOM_* variable's text becomes a value: the parsers that settings.py's
table of settings names. Pure functions, no I/O; a ValueError's message says, in the
operator's words, what is wrong (settings.py prefixes the variable's name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def _number(text: str, kind: type[int] | type[float], problem: str) -> float:
    # int()/float() would answer "invalid literal for int() with base 10": say it our way
    try:
        return kind(text.strip())
    except ValueError:
        raise ValueError(problem) from None


def milliseconds(text: str) -> float:
    problem = "must be a positive whole number of milliseconds, such as 5000"
    value = _number(text, int, problem)
    if value <= 0:
        raise ValueError(problem)
    return value / 1000.0


def positive_int(text: str) -> int:
    problem = "must be a positive whole number, such as 10"
    value = int(_number(text, int, problem))
    if value <= 0:
        raise ValueError(problem)
    return value


AUTO_RATE = -1.0  # MAILROOM_SEND_RATE=auto


def send_rate(text: str) -> float:
    if text.strip().lower() == "auto":
        return AUTO_RATE
    try:
        return rate(text)
    except ValueError:
        raise ValueError(
            "must be auto (follow the SES account's quota) or a number of recipients per "
            "second, 0 for no limit"
        ) from None


def percent(text: str) -> float:
    value = _number(text.strip().removesuffix("%"), float, "must be a percentage from 0 to 50")
    if not 0 <= value <= 50:
        raise ValueError("must be a percentage from 0 to 50")
    return value / 100


def interval(text: str) -> float:
    value = period(text)
    if value < 10:
        raise ValueError("must be at least 10 s (10000 ms or 10s)")
    return value


def rate(text: str) -> float:
    value = _number(text, float, "must be a number of recipients per second, 0 for no limit")
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number of recipients per second, 0 for no limit")
    return value


def port(text: str) -> int:
    problem = "must be a TCP port, 0 to 65535 (0 turns the HTTP endpoints off)"
    value = int(_number(text, int, problem))
    if not 0 <= value <= 65535:
        raise ValueError(problem)
    return value


def batch_limit(text: str) -> int:
    value = positive_int(text)
    if value > 10_000:
        raise ValueError("must be a positive whole number, at most 10000")
    return value


_PERIOD = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_PERIOD_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def period(text: str) -> float:
    """Milliseconds like every interval, or for long periods a number with a unit
    (``90s``, ``12h``, ``7d``); 0 means for ever. Returns seconds."""
    match = _PERIOD.match(text.strip().lower())
    if not match:
        raise ValueError(
            "must be milliseconds, or a whole number with a unit: 90s, 30m, 12h, 7d "
            "(0: keep for ever)"
        )
    return int(match[1]) * _PERIOD_UNITS[match[2] or "ms"]


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def identifier(text: str) -> str:
    if not _IDENTIFIER.match(text):
        raise ValueError("must be a PostgreSQL identifier: letters, digits, _ and $, 1-63 chars")
    return text


def name(text: str) -> str:
    if not 1 <= len(text) <= 63:
        raise ValueError("must be 1 to 63 characters")
    return text


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return text.lower()

    return parse


def secret_keys(text: str) -> tuple[bytes, ...]:
    # Key rotation: a comma-separated list; the first key signs, every key verifies.
    keys = []
    for position, entry in enumerate(text.split(","), start=1):
        part = entry.strip()
        if len(part) != 64:
            raise ValueError(
                f"key {position} must be 64 hexadecimal characters (32 bytes), "
                f"got {len(part)} characters"
            )
        if not re.fullmatch(r"[0-9a-fA-F]{64}", part):
            # the key itself is never shown, nor the offending character
            raise ValueError(
                f"key {position} is not hexadecimal: only 0-9 and a-f may appear in its 64"
                " characters (generate one with: openssl rand -hex 32)"
            )
        keys.append(bytes.fromhex(part))
    return tuple(keys)


SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def queue_url(text: str) -> str:
    text = text.strip()
    if text and not re.fullmatch(r"https?://[^\s/]+/\S+", text):
        raise ValueError(
            "must be an SQS queue URL: https://sqs.<region>.amazonaws.com/<account>/<name>"
        )
    return text


def pollers(text: str) -> int:
    value = positive_int(text)
    if value > 16:
        raise ValueError("must be at most 16")
    return value


def window(text: str) -> float:
    seconds = period(text)
    if seconds <= 0:
        raise ValueError("must be a positive period: milliseconds, or 90s, 30m, 12h, 7d")
    return seconds


EVENTS_FLOOR = 7 * 86400.0  # mailroom.prune_events refuses younger events (sql/0016)


def events_period(text: str) -> float:
    seconds = period(text)
    if 0 < seconds < EVENTS_FLOOR:
        # the default transient-bounce window: pruning inside it would change suppression
        raise ValueError(
            "must be 0 (keep for ever) or at least seven days, the transient-bounce "
            "window's default: 604800000, 7d, 30d"
        )
    return seconds


CHANGES_FLOOR = 7 * 86400.0  # mailroom.prune_changes refuses younger changes (sql/0030)


def changes_period(text: str) -> float:
    seconds = period(text)
    if 0 < seconds < CHANGES_FLOOR:
        # an application down for a week must find its changes when it comes back
        raise ValueError(
            "must be 0 (keep for ever) or at least seven days, so that an application down"
            " for a week loses no change: 604800000, 7d, 30d"
        )
    return seconds


def source(text: str) -> str:
    # lazy: only this setting needs it, and config is imported by every command
    from mailroom.addresses import is_valid, ses_address  # noqa: PLC0415

    converted = ses_address(text)
    # the outbox's rule for a From: a domain with a dot, as SES can verify (not "localhost")
    if not is_valid(converted):
        raise ValueError(
            "must be an address such as noreply@example.com or Shop <shop@example.com>"
            " (a domain with a dot; a display name without line breaks; an internationalised"
            " domain that converts to punycode unchanged)"
        )
    return converted


def database_url(text: str) -> str:
    """A libpq connection string, checked here so that a typo is one line at start-up.

    libpq's own parse errors quote the string around the fault, password included, so
    none of their text is shown: each problem is described in our words instead.
    """
    import psycopg  # noqa: PLC0415 -- config loads without the driver until a DSN is read
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 -- as above

    text = text.strip()
    if not text:
        raise ValueError("must not be empty")
    scheme, sep, _ = text.partition("://")
    if sep and scheme not in ("postgresql", "postgres"):
        raise ValueError(f"unknown scheme {scheme[:20]!r}: use postgresql://user@host/dbname")
    if not sep and "=" not in text:
        raise ValueError(
            "neither a URL (postgresql://user@host:5432/dbname) nor key=value pairs "
            "(host=... dbname=...)"
        )
    try:
        params = conninfo_to_dict(text)
    except psycopg.ProgrammingError:  # its text quotes the string, password included
        what = "URL" if sep else "key=value string"
        hint = (
            "brackets around an IPv6 host, percent-encoding of @ : / in the password"
            if sep
            else "quoting of values with spaces, unknown keywords"
        )
        raise ValueError(f"malformed {what}: check {hint}") from None
    # none of the parsed parts is quoted: with an unencoded "/", "@" or ":" in a password,
    # libpq reads a piece of it as the port or the host
    encode = "percent-encode @ : / ? in a password as %40 %3A %2F %3F"
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSLMODES:
        raise ValueError(f"sslmode is not one of {', '.join(SSLMODES)}")
    port = params.get("port")
    if port is not None and not all(
        p.isdigit() and 0 < int(p) < 65536 for p in str(port).split(",")
    ):
        raise ValueError(f"the port is not a number from 1 to 65535 ({encode})")
    if any(c in str(params.get("host") or "") for c in "@/?") or "@" in str(
        params.get("dbname") or ""
    ):
        raise ValueError(f"the host or database name holds '@', '/' or '?' ({encode})")
    return text


# arn:<partition>:sns:<region>:<account>:<topic> (names: letters, digits, - and _; .fifo)
_TOPIC_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov)?:sns:[a-z]{2}(?:-[a-z]+)+-[0-9]:[0-9]{12}:[A-Za-z0-9_-]{1,256}"
    r"(?:\.fifo)?"
)


def topic_arns(text: str) -> frozenset[str]:
    """A comma-separated list of SNS topic ARNs; empty: any topic."""
    arns = frozenset(part.strip() for part in text.split(",") if part.strip())
    for arn in sorted(arns):
        if not _TOPIC_ARN.fullmatch(arn):
            raise ValueError(
                f"{arn[:80]!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)"
            )
    return arns


# -- per-recipient caps (MAILROOM_RECIPIENT_CAP, MAILROOM_RECIPIENT_CAP_TEMPLATES) -------
# The daemon's cap step (mailroom.daemon.caps) decides with these; they live here so that
# the settings need nothing from the daemon.

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


# -- templates and the smtp transport (docs/templates.md) ---------------------------------


def templates_dir(text: str) -> Path | None:
    if not text.strip():
        return None
    path = Path(text)
    if not path.is_dir():
        raise ValueError("must be an existing directory")
    return path


def smtp_url(text: str) -> str:
    """smtp://host[:port] (port 25 by default), returned as written."""
    parts = urlsplit(text)
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError("must be smtp://host:port")
    try:
        parts.port  # noqa: B018 -- raises for a port out of range or not a number
    except ValueError:
        raise ValueError("must be smtp://host:port with a port 1-65535") from None
    if parts.username or parts.password or parts.path.strip("/") or parts.query:
        raise ValueError("must be smtp://host:port (no credentials, path or query)")
    return text
