"""Settings from the environment.

The seed's variable names keep their meaning, defaults and units (intervals in
milliseconds). Every problem is reported at once, naming the variable; values of secret
variables are never echoed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailroom.config import dsn as dsn_text
from mailroom.config import values

PREFIX = "MAILROOM_"
SECRET_VARIABLES = frozenset({"MAILROOM_DATABASE_URL", "MAILROOM_SECRET_KEY"})


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
    ses_source: str = "noreply@localhost"
    ses_output_path: Path = Path("./output")
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
    # true: every SQS message must be a validly signed SNS envelope (mailroom.events.sns_certs)
    events_require_signature: bool = False
    # the SNS topics whose signed messages are read; empty: any topic (SNS signs them all)
    events_sns_topics: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Setting:
    variable: str
    attribute: str
    parse: Callable[[str], Any]
    doc: str


SETTINGS: tuple[_Setting, ...] = (
    _Setting(
        "MAILROOM_DATABASE_URL",
        "database_url",
        values.database_url,
        "PostgreSQL connection string (URL or key=value). Required.",
    ),
    _Setting(
        "MAILROOM_SECRET_KEY",
        "secret_keys",
        values.secret_keys,
        "64 hex characters; a comma-separated list rotates keys (first signs).",
    ),
    _Setting(
        "MAILROOM_CHANNEL_NAME",
        "channel_name",
        values.identifier,
        "NOTIFY channel the outbox trigger signals and the daemon LISTENs on.",
    ),
    _Setting(
        "MAILROOM_QUEUE_NAME",
        "queue_name",
        values.name,
        "Queue (outbox.queue value) this daemon serves.",
    ),
    _Setting(
        "MAILROOM_HEALTHCHECK_INTERVAL",
        "healthcheck_interval",
        values.milliseconds,
        "LISTEN connection heartbeat, milliseconds.",
    ),
    _Setting(
        "MAILROOM_BATCH_TIMEOUT",
        "batch_timeout",
        values.milliseconds,
        "Longest wait to fill a batch while others are in flight, milliseconds.",
    ),
    _Setting(
        "MAILROOM_BATCH_LIMIT",
        "batch_limit",
        values.batch_limit,
        "Notifications that flush a batch; its size unless backlogged (then claims grow "
        "to what free SES call slots carry).",
    ),
    _Setting(
        "MAILROOM_DEBUG",
        "debug",
        values.boolean,
        "Send nothing: write what would be sent to MAILROOM_SES_OUTPUT_PATH.",
    ),
    _Setting(
        "MAILROOM_SES_CONFIG_SET",
        "ses_config_set",
        str,
        "SES configuration set for messages that name none (empty: none).",
    ),
    _Setting(
        "MAILROOM_SES_SOURCE",
        "ses_source",
        values.source,
        "From address for messages that name none.",
    ),
    _Setting(
        "MAILROOM_SES_OUTPUT_PATH",
        "ses_output_path",
        Path,
        "Directory the debug transport writes requests to.",
    ),
    _Setting(
        "MAILROOM_LEASE_DURATION",
        "lease",
        values.milliseconds,
        "How long a claimed batch is reserved, milliseconds.",
    ),
    _Setting(
        "MAILROOM_POLL_INTERVAL",
        "poll_interval",
        values.milliseconds,
        "Backstop poll when no notification arrives, milliseconds.",
    ),
    _Setting(
        "MAILROOM_SHUTDOWN_TIMEOUT",
        "shutdown_timeout",
        values.milliseconds,
        "Deadline to finish in-flight sends on SIGTERM, milliseconds.",
    ),
    _Setting(
        "MAILROOM_SES_CONCURRENCY",
        "ses_concurrency",
        values.positive_int,
        "SES calls in flight at once.",
    ),
    _Setting(
        "MAILROOM_SES_CONNECT_TIMEOUT",
        "ses_connect_timeout",
        values.milliseconds,
        "SES connect timeout, milliseconds.",
    ),
    _Setting(
        "MAILROOM_SES_READ_TIMEOUT",
        "ses_read_timeout",
        values.milliseconds,
        "SES timeout for sending a request and reading its answer, milliseconds.",
    ),
    _Setting(
        "MAILROOM_RETRY_BASE",
        "retry_base",
        values.milliseconds,
        "First retry backoff ceiling, milliseconds (doubles per attempt).",
    ),
    _Setting(
        "MAILROOM_RETRY_CAP",
        "retry_cap",
        values.milliseconds,
        "Largest retry backoff, milliseconds.",
    ),
    _Setting(
        "MAILROOM_PAUSE_DURATION",
        "pause_duration",
        values.milliseconds,
        "How long sending pauses after an account-level stop, milliseconds.",
    ),
    _Setting(
        "MAILROOM_LOG_FORMAT",
        "log_format",
        values.choice("auto", "json", "console"),
        "auto: readable on a terminal, JSON lines otherwise.",
    ),
    _Setting(
        "MAILROOM_LOG_LEVEL",
        "log_level",
        values.choice("debug", "info", "warning", "error"),
        "Least severe level logged.",
    ),
    _Setting(
        "MAILROOM_LOG_REVEAL_ADDRESSES",
        "reveal_addresses",
        values.boolean,
        "Log recipient addresses unmasked.",
    ),
    _Setting(
        "MAILROOM_WORKER_NAME",
        "worker_name",
        values.name,
        "Name recorded as lease owner (default: host:pid).",
    ),
    _Setting(
        "MAILROOM_DB_TIMEOUT",
        "db_timeout",
        values.milliseconds,
        "Longest a database round trip may take before its connection counts as dead, ms.",
    ),
    _Setting(
        "MAILROOM_SEND_RATE",
        "send_rate",
        values.send_rate,
        "Recipients per second for all replicas together; auto: SES GetAccount's "
        "MaxSendRate, pausing before Max24HourSend; 0: no limit.",
    ),
    _Setting(
        "MAILROOM_SEND_BURST",
        "send_burst",
        values.rate,
        "Recipients that may go at once after a quiet spell (default: one second's worth).",
    ),
    _Setting(
        "MAILROOM_HTTP_HOST",
        "http_host",
        str,
        "Address of the /metrics, /healthz and /readyz endpoints.",
    ),
    _Setting(
        "MAILROOM_HTTP_PORT",
        "http_port",
        values.port,
        "Port of the /metrics, /healthz and /readyz endpoints (0: off).",
    ),
    _Setting(
        "MAILROOM_RETENTION_ENABLED",
        "retention_enabled",
        values.boolean,
        "The daemon prunes old sent and dead messages (false: keep everything).",
    ),
    _Setting(
        "MAILROOM_RETENTION_SENT",
        "retention_sent",
        values.period,
        "Keep sent messages this long after sending, milliseconds or 7d-style (0: for ever).",
    ),
    _Setting(
        "MAILROOM_RETENTION_DEAD",
        "retention_dead",
        values.period,
        "Keep dead letters this long after dying, milliseconds or 30d-style (0: for ever).",
    ),
    _Setting(
        "MAILROOM_RETENTION_BATCH",
        "retention_batch",
        values.batch_limit,
        "Messages deleted per pruning statement (one every 2 s while there is backlog).",
    ),
    _Setting(
        "MAILROOM_SEND_QUOTA_MARGIN",
        "send_quota_margin",
        values.percent,
        "With MAILROOM_SEND_RATE=auto: percent of Max24HourSend left unused; sending pauses "
        "at the rest.",
    ),
    _Setting(
        "MAILROOM_ACCOUNT_POLL_INTERVAL",
        "account_poll_interval",
        values.interval,
        "With MAILROOM_SEND_RATE=auto: how often SES GetAccount is read, ms or 5m-style.",
    ),
    _Setting(
        "MAILROOM_RECIPIENT_CAP",
        "recipient_cap",
        values.parse_cap,
        "Most messages to one recipient per window, e.g. 5/1h (unset: no cap).",
    ),
    _Setting(
        "MAILROOM_RECIPIENT_CAP_TEMPLATES",
        "recipient_cap_templates",
        values.parse_template_caps,
        "Per-template caps per recipient, e.g. passwordrecoveryv1:3/15m,activationv1:2/1h.",
    ),
    _Setting(
        "MAILROOM_RECIPIENT_CAP_SCOPE",
        "recipient_cap_scope",
        values.choice("application", "global"),
        "What the caps count per recipient: each application's mail apart (its enqueuing "
        "login role; the default) or all applications' mail together (global).",
    ),
    _Setting(
        "MAILROOM_EVENTS_QUEUE_URL",
        "events_queue_url",
        values.queue_url,
        "SQS queue URL the SES events arrive in (via SNS or EventBridge); empty: off.",
    ),
    _Setting(
        "MAILROOM_EVENTS_POLLERS",
        "events_pollers",
        values.pollers,
        "SQS long polls in flight at once (each takes up to 10 messages).",
    ),
    _Setting(
        "MAILROOM_EVENTS_UNKNOWN",
        "events_unknown",
        values.choice("suppress", "ignore"),
        "Events naming a message mailroom did not send: suppress their bounced and "
        "complaining addresses (mail other systems send through the account) or ignore them.",
    ),
    _Setting(
        "MAILROOM_SUPPRESS_TRANSIENT_COUNT",
        "suppress_transient_count",
        values.positive_int,
        "Transient bounces of one address within the window that suppress it.",
    ),
    _Setting(
        "MAILROOM_SUPPRESS_TRANSIENT_WINDOW",
        "suppress_transient_window",
        values.window,
        "The window transient bounces are counted in, milliseconds or 7d-style.",
    ),
    _Setting(
        "MAILROOM_RETENTION_EVENTS",
        "retention_events",
        values.events_period,
        "Keep SES events this long after they occurred, milliseconds or 30d-style (0: for "
        "ever; at least 7d and the transient-bounce window).",
    ),
    _Setting(
        "MAILROOM_EVENTS_REQUIRE_SIGNATURE",
        "events_require_signature",
        values.boolean,
        "true: read only validly signed SNS envelopes from the events queue (raw delivery "
        "and EventBridge refused); false: a signature present must verify.",
    ),
    _Setting(
        "MAILROOM_EVENTS_SNS_TOPICS",
        "events_sns_topics",
        values.topic_arns,
        "Comma-separated SNS topic ARNs whose signed messages are read (others refused); "
        "empty: any topic's.",
    ),
)


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
