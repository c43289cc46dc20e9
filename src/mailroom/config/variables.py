"""Every MAILROOM_* variable in one table: its name, the Config attribute it sets, the
parser that checks its value and the line `mailroom config --describe` and the docs show.

Kept apart from settings.py so that adding a variable is one row here and one field there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailroom.config import values


@dataclass(frozen=True, slots=True)
class Setting:
    variable: str
    attribute: str
    parse: Callable[[str], Any]
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "MAILROOM_DATABASE_URL",
        "database_url",
        values.database_url,
        "PostgreSQL connection string (URL or key=value). Required.",
    ),
    Setting(
        "MAILROOM_SECRET_KEY",
        "secret_keys",
        values.secret_keys,
        "64 hex characters; a comma-separated list rotates keys (first signs).",
    ),
    Setting(
        "MAILROOM_CHANNEL_NAME",
        "channel_name",
        values.identifier,
        "NOTIFY channel the outbox trigger signals and the daemon LISTENs on.",
    ),
    Setting(
        "MAILROOM_QUEUE_NAME",
        "queue_name",
        values.name,
        "Queue (outbox.queue value) this daemon serves.",
    ),
    Setting(
        "MAILROOM_HEALTHCHECK_INTERVAL",
        "healthcheck_interval",
        values.milliseconds,
        "LISTEN connection heartbeat, milliseconds.",
    ),
    Setting(
        "MAILROOM_BATCH_TIMEOUT",
        "batch_timeout",
        values.milliseconds,
        "Longest wait to fill a batch while others are in flight, milliseconds.",
    ),
    Setting(
        "MAILROOM_BATCH_LIMIT",
        "batch_limit",
        values.batch_limit,
        "Notifications that flush a batch; its size unless backlogged (then claims grow "
        "to what free SES call slots carry).",
    ),
    Setting(
        "MAILROOM_DEBUG",
        "debug",
        values.boolean,
        "Send nothing: write what would be sent to MAILROOM_SES_OUTPUT_PATH.",
    ),
    Setting(
        "MAILROOM_SES_CONFIG_SET",
        "ses_config_set",
        str,
        "SES configuration set for messages that name none (empty: none).",
    ),
    Setting(
        "MAILROOM_SES_SOURCE",
        "ses_source",
        values.source,
        "From address for messages that name none.",
    ),
    Setting(
        "MAILROOM_SES_OUTPUT_PATH",
        "ses_output_path",
        Path,
        "Directory the debug transport writes requests to.",
    ),
    Setting(
        "MAILROOM_TEMPLATES_DIR",
        "templates_dir",
        values.templates_dir,
        "Directory of SES templates as files (docs/templates.md); empty: none.",
    ),
    Setting(
        "MAILROOM_TRANSPORT",
        "transport",
        values.choice("ses", "smtp"),
        "ses, or smtp: deliver rendered mail to MAILROOM_SMTP_URL (development catchers).",
    ),
    Setting(
        "MAILROOM_SMTP_URL",
        "smtp_url",
        values.smtp_url,
        "smtp://host:port of the SMTP server the smtp transport delivers to.",
    ),
    Setting(
        "MAILROOM_LEASE_DURATION",
        "lease",
        values.milliseconds,
        "How long a claimed batch is reserved, milliseconds.",
    ),
    Setting(
        "MAILROOM_POLL_INTERVAL",
        "poll_interval",
        values.milliseconds,
        "Backstop poll when no notification arrives, milliseconds.",
    ),
    Setting(
        "MAILROOM_SHUTDOWN_TIMEOUT",
        "shutdown_timeout",
        values.milliseconds,
        "Deadline to finish in-flight sends on SIGTERM, milliseconds.",
    ),
    Setting(
        "MAILROOM_SES_CONCURRENCY",
        "ses_concurrency",
        values.positive_int,
        "SES calls in flight at once.",
    ),
    Setting(
        "MAILROOM_SES_CONNECT_TIMEOUT",
        "ses_connect_timeout",
        values.milliseconds,
        "SES connect timeout, milliseconds.",
    ),
    Setting(
        "MAILROOM_SES_READ_TIMEOUT",
        "ses_read_timeout",
        values.milliseconds,
        "SES timeout for sending a request and reading its answer, milliseconds.",
    ),
    Setting(
        "MAILROOM_RETRY_BASE",
        "retry_base",
        values.milliseconds,
        "First retry backoff ceiling, milliseconds (doubles per attempt).",
    ),
    Setting(
        "MAILROOM_RETRY_CAP",
        "retry_cap",
        values.milliseconds,
        "Largest retry backoff, milliseconds.",
    ),
    Setting(
        "MAILROOM_PAUSE_DURATION",
        "pause_duration",
        values.milliseconds,
        "How long sending pauses after an account-level stop, milliseconds.",
    ),
    Setting(
        "MAILROOM_LOG_FORMAT",
        "log_format",
        values.choice("auto", "json", "console"),
        "auto: readable on a terminal, JSON lines otherwise.",
    ),
    Setting(
        "MAILROOM_LOG_LEVEL",
        "log_level",
        values.choice("debug", "info", "warning", "error"),
        "Least severe level logged.",
    ),
    Setting(
        "MAILROOM_LOG_REVEAL_ADDRESSES",
        "reveal_addresses",
        values.boolean,
        "Log recipient addresses unmasked.",
    ),
    Setting(
        "MAILROOM_WORKER_NAME",
        "worker_name",
        values.name,
        "Name recorded as lease owner (default: host:pid).",
    ),
    Setting(
        "MAILROOM_DB_TIMEOUT",
        "db_timeout",
        values.milliseconds,
        "Longest a database round trip may take before its connection counts as dead, ms.",
    ),
    Setting(
        "MAILROOM_SEND_RATE",
        "send_rate",
        values.send_rate,
        "Recipients per second for all replicas together; auto: SES GetAccount's "
        "MaxSendRate, pausing before Max24HourSend; 0: no limit.",
    ),
    Setting(
        "MAILROOM_SEND_BURST",
        "send_burst",
        values.rate,
        "Recipients that may go at once after a quiet spell (default: one second's worth).",
    ),
    Setting(
        "MAILROOM_HTTP_HOST",
        "http_host",
        str,
        "Address of the /metrics, /healthz and /readyz endpoints.",
    ),
    Setting(
        "MAILROOM_HTTP_PORT",
        "http_port",
        values.port,
        "Port of the /metrics, /healthz and /readyz endpoints (0: off).",
    ),
    Setting(
        "MAILROOM_RETENTION_ENABLED",
        "retention_enabled",
        values.boolean,
        "The daemon prunes old sent and dead messages (false: keep everything).",
    ),
    Setting(
        "MAILROOM_RETENTION_SENT",
        "retention_sent",
        values.period,
        "Keep sent messages this long after sending, milliseconds or 7d-style (0: for ever).",
    ),
    Setting(
        "MAILROOM_RETENTION_DEAD",
        "retention_dead",
        values.period,
        "Keep dead letters this long after dying, milliseconds or 30d-style (0: for ever).",
    ),
    Setting(
        "MAILROOM_RETENTION_BATCH",
        "retention_batch",
        values.batch_limit,
        "Messages deleted per pruning statement (one every 2 s while there is backlog).",
    ),
    Setting(
        "MAILROOM_SEND_QUOTA_MARGIN",
        "send_quota_margin",
        values.percent,
        "With MAILROOM_SEND_RATE=auto: percent of Max24HourSend left unused; sending pauses "
        "at the rest.",
    ),
    Setting(
        "MAILROOM_ACCOUNT_POLL_INTERVAL",
        "account_poll_interval",
        values.interval,
        "With MAILROOM_SEND_RATE=auto: how often SES GetAccount is read, ms or 5m-style.",
    ),
    Setting(
        "MAILROOM_RECIPIENT_CAP",
        "recipient_cap",
        values.parse_cap,
        "Most messages to one recipient per window, e.g. 5/1h (unset: no cap).",
    ),
    Setting(
        "MAILROOM_RECIPIENT_CAP_TEMPLATES",
        "recipient_cap_templates",
        values.parse_template_caps,
        "Per-template caps per recipient, e.g. passwordrecoveryv1:3/15m,activationv1:2/1h.",
    ),
    Setting(
        "MAILROOM_RECIPIENT_CAP_SCOPE",
        "recipient_cap_scope",
        values.choice("application", "global"),
        "What the caps count per recipient: each application's mail apart (its enqueuing "
        "login role; the default) or all applications' mail together (global).",
    ),
    Setting(
        "MAILROOM_EVENTS_QUEUE_URL",
        "events_queue_url",
        values.queue_url,
        "SQS queue URL the SES events arrive in (via SNS or EventBridge); empty: off.",
    ),
    Setting(
        "MAILROOM_EVENTS_POLLERS",
        "events_pollers",
        values.pollers,
        "SQS long polls in flight at once (each takes up to 10 messages).",
    ),
    Setting(
        "MAILROOM_EVENTS_UNKNOWN",
        "events_unknown",
        values.choice("suppress", "ignore"),
        "Events naming a message mailroom did not send: suppress their bounced and "
        "complaining addresses (mail other systems send through the account) or ignore them.",
    ),
    Setting(
        "MAILROOM_SUPPRESS_TRANSIENT_COUNT",
        "suppress_transient_count",
        values.positive_int,
        "Transient bounces of one address within the window that suppress it.",
    ),
    Setting(
        "MAILROOM_SUPPRESS_TRANSIENT_WINDOW",
        "suppress_transient_window",
        values.window,
        "The window transient bounces are counted in, milliseconds or 7d-style.",
    ),
    Setting(
        "MAILROOM_RETENTION_EVENTS",
        "retention_events",
        values.events_period,
        "Keep SES events this long after they occurred, milliseconds or 30d-style (0: for "
        "ever; at least 7d and the transient-bounce window).",
    ),
    Setting(
        "MAILROOM_RETENTION_CHANGES",
        "retention_changes",
        values.changes_period,
        "Keep the applications' changes feed this long, milliseconds or 30d-style (0: for "
        "ever; at least 7d, so that an application down for a week loses nothing).",
    ),
    Setting(
        "MAILROOM_EVENTS_REQUIRE_SIGNATURE",
        "events_require_signature",
        values.boolean,
        "true: read only validly signed SNS envelopes from the events queue (raw delivery "
        "and EventBridge refused); false: a signature present must verify.",
    ),
    Setting(
        "MAILROOM_EVENTS_SNS_TOPICS",
        "events_sns_topics",
        values.topic_arns,
        "Comma-separated SNS topic ARNs whose signed messages are read (others refused); "
        "empty: any topic's.",
    ),
)
