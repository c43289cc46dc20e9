"""Settings from the environment.

The seed's variable names keep their meaning, defaults and units (intervals in
milliseconds). Every problem is reported at once, naming the variable; values of secret
variables are never echoed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailroom.config import dsn as dsn_text
from mailroom.config import values
from mailroom.config.variables import SETTINGS

PREFIX = "MAILROOM_"
# values never echoed in an error (an SMTP URL may carry a password it must not have)
SECRET_VARIABLES = frozenset({"MAILROOM_DATABASE_URL", "MAILROOM_SECRET_KEY", "MAILROOM_SMTP_URL"})


class ConfigError(ValueError):
    """Invalid configuration; the message lists each variable and what is wrong with it."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))  # one line per problem


@dataclass(frozen=True, slots=True)
class Config:
    database_url: str = field(repr=False)
    secret_keys: tuple[bytes, ...] = field(default=(), repr=False)
    channel_name: str = "token_insert"
    queue_name: str = "user_action_queue"
    healthcheck_interval: float = 270.0
    batch_timeout: float = 5.0
    batch_limit: int = 10
    debug: bool = False
    ses_config_set: str = "default"
    # example.com (RFC 2606): an address every validator takes and no one owns. The seed's
    # noreply@localhost is one the outbox refuses and SES cannot verify (no DNS for it)
    ses_source: str = "noreply@example.com"
    ses_output_path: Path = Path("./output")
    templates_dir: Path | None = None  # SES templates as files (mailroom.templates.files)
    transport: str = "ses"  # or "smtp" (mailroom.transports.smtp)
    smtp_url: str = ""
    lease: float = 60.0
    poll_interval: float = 30.0
    shutdown_timeout: float = 25.0
    ses_concurrency: int = 16  # 16 x 50-entry calls hide 50 ms of SES latency (BENCHMARKS.md)
    ses_connect_timeout: float = 3.0
    ses_read_timeout: float = 10.0
    retry_base: float = 2.0
    retry_cap: float = 3600.0
    pause_duration: float = 60.0
    log_format: str = "auto"
    log_level: str = "info"
    reveal_addresses: bool = False
    worker_name: str = ""
    db_timeout: float = 10.0
    send_rate: float = 0.0
    send_burst: float = 0.0
    http_host: str = "0.0.0.0"  # noqa: S104 -- probes and scrapes come from outside the pod
    http_port: int = 9765
    retention_enabled: bool = True
    retention_sent: float = 7 * 86400.0  # seconds; 0 keeps sent messages for ever
    retention_dead: float = 30 * 86400.0  # seconds; 0 keeps dead letters for ever
    retention_batch: int = 500
    send_quota_margin: float = 0.05  # share of Max24HourSend never used (send rate auto)
    account_poll_interval: float = 300.0  # seconds between GetAccount reads (auto)
    recipient_cap: values.Cap | None = None
    recipient_cap_templates: dict[str, values.Cap] = field(default_factory=dict)
    recipient_cap_scope: str = "application"  # or "global": one count across applications

    @property
    def sends_to_ses(self) -> bool:
        """False in debug mode and with the smtp transport: no SES account is used."""
        return not self.debug and self.transport == "ses"

    @property
    def send_rate_auto(self) -> bool:
        """MAILROOM_SEND_RATE=auto: the rate follows the SES account's quota."""
        return self.send_rate == values.AUTO_RATE

    @property
    def caps(self) -> values.Caps:
        per_application = self.recipient_cap_scope == "application"
        return values.Caps(self.recipient_cap, self.recipient_cap_templates, per_application)

    events_queue_url: str = ""  # SQS queue of SES events; empty: no event ingestion
    # Each poller waits for two SQS round trips per 10 events: at 10 ms a call, 4 pollers
    # stored 1,400 events/s and 8 stored 2,200 (docs/BENCHMARKS.md, "SES event ingestion")
    events_pollers: int = 8
    # events naming a messageId mailroom did not send: "suppress" (mail other systems send
    # through the same account) or "ignore" (docs/deliverability.md, "Trust")
    events_unknown: str = "suppress"
    suppress_transient_count: int = 3
    suppress_transient_window: float = 7 * 86400.0  # seconds
    retention_events: float = 30 * 86400.0  # seconds; 0 keeps SES events for ever
    # the changes feed (sql/0030): at least 7 days, however long an application is down
    retention_changes: float = 30 * 86400.0  # seconds; 0 keeps changes for ever
    # true: every SQS message must be a validly signed SNS envelope (mailroom.events.sns_certs)
    events_require_signature: bool = False
    # the SNS topics whose signed messages are read; empty: any topic (SNS signs them all)
    events_sns_topics: frozenset[str] = frozenset()


def _read(environ: Mapping[str, str], variable: str) -> str | None:
    """The variable's value, or the content of the file its ``_FILE`` twin names."""
    file_variable = variable + "_FILE"
    direct = environ.get(variable)
    path = environ.get(file_variable)
    if direct is not None and path is not None:
        raise ValueError(f"set either {variable} or {file_variable}, not both")
    if path is None:
        return direct
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{file_variable}: cannot read {path}: {exc.strerror}") from None


def load(environ: Mapping[str, str] | None = None, *, require_database: bool = True) -> Config:
    """Build the configuration; raise ConfigError listing every invalid variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        try:
            raw = _read(env, setting.variable)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if raw is None:
            continue
        try:
            values[setting.attribute] = setting.parse(raw)
        except ValueError as exc:
            shown = "" if setting.variable in SECRET_VARIABLES else f" (got {raw!r})"
            problems.append(f"{setting.variable}: {exc}{shown}")
    if "database_url" not in values:
        if require_database and not any(p.startswith("MAILROOM_DATABASE_URL") for p in problems):
            problems.append("MAILROOM_DATABASE_URL: required (or MAILROOM_DATABASE_URL_FILE)")
        values["database_url"] = ""
    config = Config(**values)
    if (
        config.lease - record_margin(config.lease)
        <= config.ses_connect_timeout + config.ses_read_timeout
    ):
        problems.append(
            "MAILROOM_LEASE_DURATION: must exceed MAILROOM_SES_CONNECT_TIMEOUT + "
            "MAILROOM_SES_READ_TIMEOUT by a quarter (at most 5 s kept for recording), "
            "or no send could finish within its lease"
        )
    if config.send_rate > 0 and not config.send_burst:
        config = dataclasses.replace(config, send_burst=max(config.send_rate, 1.0))
    problems += _transport_problems(config)
    if config.retry_cap < config.retry_base:
        problems.append("MAILROOM_RETRY_CAP: must be at least MAILROOM_RETRY_BASE")
    if 0 < config.retention_events < config.suppress_transient_window:
        problems.append(
            "MAILROOM_RETENTION_EVENTS: must be at least MAILROOM_SUPPRESS_TRANSIENT_WINDOW "
            "(transient bounces are counted from the events kept), or 0"
        )
    if problems:
        raise ConfigError(problems)
    if not config.worker_name:
        config = dataclasses.replace(config, worker_name=f"{os.uname().nodename}:{os.getpid()}")
    return config


def _transport_problems(config: Config) -> list[str]:
    if config.transport != "smtp" or config.debug:
        return []
    problems = []
    if not config.smtp_url:
        problems.append("MAILROOM_SMTP_URL: required with MAILROOM_TRANSPORT=smtp")
    if config.templates_dir is None:
        problems.append(
            "MAILROOM_TEMPLATES_DIR: required with MAILROOM_TRANSPORT=smtp "
            "(templated messages are rendered from it)"
        )
    return problems


def record_margin(lease: float) -> float:
    """The end of a lease kept for recording outcomes: no SES call may start in it."""
    return min(5.0, lease / 4)


def redact_dsn(dsn: str) -> str:
    """The connection string with its passwords replaced (see mailroom.config.dsn)."""
    return dsn_text.redact(dsn)


def describe(config: Config) -> list[tuple[str, str]]:
    """Each setting with its effective value, secrets redacted, for ``mailroom config``."""
    rows = []
    for setting in SETTINGS:
        value = getattr(config, setting.attribute)
        if setting.attribute == "database_url":
            shown = redact_dsn(value) if value else "(unset)"
        elif setting.attribute == "secret_keys":
            shown = f"(set: {len(value)} key(s))" if value else "(unset)"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif setting.attribute == "send_rate" and value == values.AUTO_RATE:
            shown = "auto"
        elif setting.attribute == "recipient_cap":
            shown = value.text if value else "(unset)"
        elif setting.attribute == "recipient_cap_templates":
            shown = ",".join(f"{k}:{c.text}" for k, c in value.items()) or "(unset)"
        elif setting.attribute in ("templates_dir", "smtp_url"):
            shown = str(value) if value else "(unset)"
        elif setting.attribute == "events_sns_topics":
            shown = ",".join(sorted(value)) or "(any)"
        elif setting.attribute == "send_quota_margin":
            shown = f"{value * 100:g}%"
        elif isinstance(value, float) and setting.parse in (
            values.milliseconds,
            values.period,
            values.interval,
            values.window,
            values.events_period,
        ):
            shown = str(round(value * 1000))
        else:
            shown = str(value)
        rows.append((setting.variable, shown))
    return rows
