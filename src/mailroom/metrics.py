"""Prometheus metrics. Labels carry template names, statuses and error codes only: never
an address, a token or anything else from a message body."""

from __future__ import annotations

from importlib import metadata

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

OUTBOX_MESSAGES = Gauge(
    "mailroom_outbox_messages", "Messages in the outbox by status (sent not counted).",
    ["status"], registry=REGISTRY,
)  # fmt: skip
OLDEST_DUE_AGE = Gauge(
    "mailroom_oldest_due_message_age_seconds",
    "How long the oldest due, unsent message has been due.", registry=REGISTRY,
)  # fmt: skip
SENT = Counter(
    "mailroom_messages_sent", "Messages accepted by SES.", ["template"], registry=REGISTRY
)
RETRIED = Counter(
    "mailroom_messages_retried", "Tries that failed transiently and will be retried.",
    ["template", "reason"], registry=REGISTRY,
)  # fmt: skip
DEAD = Counter(
    "mailroom_messages_dead", "Messages dead-lettered.", ["template", "reason"], registry=REGISTRY
)
SES_CALL_SECONDS = Histogram(
    "mailroom_ses_call_duration_seconds", "Duration of SES API calls.",
    ["operation", "outcome"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
SES_ERRORS = Counter(
    "mailroom_ses_errors", "SES calls that failed as a whole, by error code.",
    ["operation", "code"], registry=REGISTRY,
)  # fmt: skip
SENDING_PAUSED = Gauge(
    "mailroom_sending_paused", "1 while sending is paused after an account-level stop.",
    registry=REGISTRY,
)  # fmt: skip
QUEUE_PAUSED = Gauge(
    "mailroom_queue_paused",
    "1 while an operator has paused this daemon's queue (`mailroom queue pause`): nothing "
    "is claimed from it.", registry=REGISTRY,
)  # fmt: skip
SENDING_PAUSE_REASON = Gauge(
    "mailroom_sending_pause_reason",
    "1 for the reason of the current pause: cause (credentials, permissions, proxy, tls, "
    "account) and the error code.", ["cause", "code"], registry=REGISTRY,
)  # fmt: skip
BATCH_SIZE = Histogram(
    "mailroom_batch_size", "Messages per claimed batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=REGISTRY,
)  # fmt: skip
ENQUEUE_TO_SEND = Histogram(
    "mailroom_enqueue_to_send_seconds", "From enqueue commit to SES acceptance.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY,
)  # fmt: skip
IN_FLIGHT = Gauge(
    "mailroom_in_flight_messages", "Messages claimed and not yet recorded.", registry=REGISTRY
)
LISTEN_RECONNECTS = Counter(
    "mailroom_listen_reconnects", "Times the LISTEN connection was replaced.", registry=REGISTRY
)
LISTEN_CONNECTED = Gauge(
    "mailroom_listen_connected", "1 while the LISTEN connection is up.", registry=REGISTRY
)
LISTEN_HEARTBEAT = Gauge(
    "mailroom_listen_last_heartbeat_timestamp_seconds",
    "Unix time of the last successful LISTEN heartbeat.", registry=REGISTRY,
)  # fmt: skip
BUILD_INFO = Gauge("mailroom_build_info", "Version of mailroom.", ["version"], registry=REGISTRY)


def version() -> str:
    try:
        return metadata.version("mailroom")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(version()).set(1)


def template_label(template: str | None, raw: bool) -> str:
    return template if template is not None else ("raw" if raw else "simple")


RATE_LIMIT_WAITS = Counter(
    "mailroom_rate_limit_waits", "SES calls that waited for the shared send-rate budget.",
    registry=REGISTRY,
)  # fmt: skip
RATE_LIMIT_WAIT_SECONDS = Counter(
    "mailroom_rate_limit_wait_seconds", "Time SES calls spent waiting for the send-rate budget.",
    registry=REGISTRY,
)  # fmt: skip
LEASES_EXPIRED = Counter(
    "mailroom_leases_expired", "Leases reclaimed from a worker that died.", registry=REGISTRY
)

PRUNED = Counter(
    "mailroom_pruned_messages", "Sent and dead messages deleted by retention.", ["status"],
    registry=REGISTRY,
)  # fmt: skip
PRUNED_EVENTS = Counter(
    "mailroom_pruned_events", "SES events deleted by retention (MAILROOM_RETENTION_EVENTS).",
    registry=REGISTRY,
)  # fmt: skip
PRUNED_CHANGES = Counter(
    "mailroom_pruned_changes",
    "Rows of the applications' changes feed deleted by retention (MAILROOM_RETENTION_CHANGES).",
    registry=REGISTRY,
)

# -- account health and per-recipient caps (issue 13) --------------------------------------
CAPPED = Counter(
    "mailroom_capped", "Messages not sent because a recipient reached its per-recipient cap.",
    ["template"], registry=REGISTRY,
)  # fmt: skip
ACCOUNT_PROBLEM = Gauge(
    "mailroom_account_problem",
    "1 while sending is paused by an SES account set-up problem (configuration set or "
    "sender identity missing), by problem.", ["problem"], registry=REGISTRY,
)  # fmt: skip
for _problem in ("configuration_set_missing", "sender_not_verified"):  # see mailroom.daemon.account
    ACCOUNT_PROBLEM.labels(_problem).set(0)  # exported from the start: alerts can see a 0
SEND_RATE_LIMIT = Gauge(
    "mailroom_send_rate_limit", "Shared send rate now in force, recipients per second "
    "(quota or MAILROOM_SEND_RATE, times the throttling back-off factor).", registry=REGISTRY,
)  # fmt: skip
SEND_RATE_FACTOR = Gauge(
    "mailroom_send_rate_factor", "Throttling back-off factor of the shared rate (1: none).",
    registry=REGISTRY,
)  # fmt: skip
SEND_QUOTA = Gauge(
    "mailroom_ses_send_quota", "SES GetAccount SendQuota, by field (max_24_hour_send, "
    "max_send_rate, sent_last_24_hours).", ["field"], registry=REGISTRY,
)  # fmt: skip
RATE_BACKOFFS = Counter(
    "mailroom_send_rate_backoffs", "Multiplicative cuts of the shared rate after throttling.",
    registry=REGISTRY,
)  # fmt: skip
QUOTA_PAUSES = Counter(
    "mailroom_daily_quota_pauses", "Pauses taken before the SES daily quota would be exceeded.",
    registry=REGISTRY,
)  # fmt: skip
# -- deliverability (SES events, suppression list, reputation) --------------------------------
EVENTS = Counter(
    "mailroom_events", "SES events stored (per recipient; redeliveries not counted).",
    ["type", "subtype"], registry=REGISTRY,
)  # fmt: skip
EVENTS_DUPLICATE = Counter(
    "mailroom_events_duplicate", "SES events received again and skipped (already stored).",
    registry=REGISTRY,
)  # fmt: skip
EVENTS_MALFORMED = Counter(
    "mailroom_events_malformed", "SQS messages holding no usable SES event, or refused for "
    "their SNS signature (deleted after counting).", ["reason"], registry=REGISTRY,
)  # fmt: skip
EVENTS_DROPPED = Counter(
    "mailroom_events_dropped", "SES events (per recipient) not stored: not_a_recipient of "
    "the message named, unknown_message (MAILROOM_EVENTS_UNKNOWN=ignore), "
    "too_many_recipients (over 50 in one event), too_long (an address over 320 characters).",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
EVENTS_IGNORED = Counter(
    "mailroom_events_ignored", "SQS messages that are notifications, not events (SNS "
    "subscription confirmations).", registry=REGISTRY,
)  # fmt: skip
EVENTS_READER_ERRORS = Counter(
    "mailroom_events_reader_errors", "Failed SQS or database steps of event ingestion.",
    ["stage"], registry=REGISTRY,
)  # fmt: skip
EVENTS_READER_RESTARTS = Counter(
    "mailroom_events_reader_restarts", "Restarts of the SES events reader after a crash "
    "(sending goes on meanwhile).", registry=REGISTRY,
)  # fmt: skip
SUPPRESSIONS_ADDED = Counter(
    "mailroom_suppressions_added", "Addresses added to the suppression list by the daemon.",
    ["reason"], registry=REGISTRY,
)  # fmt: skip
RECIPIENTS_SUPPRESSED = Counter(
    "mailroom_recipients_suppressed", "Recipients taken out of a message before sending.",
    registry=REGISTRY,
)  # fmt: skip
BOUNCE_RATE = Gauge(
    "mailroom_bounce_rate", "Permanent bounces per recipient over the reputation window.",
    registry=REGISTRY,
)  # fmt: skip
COMPLAINT_RATE = Gauge(
    "mailroom_complaint_rate", "Complaints per recipient over the reputation window.",
    registry=REGISTRY,
)  # fmt: skip
REPUTATION_RECIPIENTS = Gauge(
    "mailroom_reputation_window_recipients",
    "Recipients (delivered or bounced) the reputation rates are computed over.",
    registry=REGISTRY,
)  # fmt: skip
# events.MALFORMED_REASONS, spelled out: metrics imports no other module of mailroom's
for _reason in (
    "not_json",
    "no_event",
    "unknown_type",
    "missing_field",
    "bad_field",
    "too_long",
    "refused",
):
    EVENTS_MALFORMED.labels(_reason)  # exported at 0: an alert must see the series exist
# sns.REASONS, spelled out: messages refused for their SNS signature (or its absence)
for _reason in ("bad_signature", "bad_cert_url", "unsupported_version", "cert_unavailable",
                "unsigned", "unknown_topic"):  # fmt: skip
    EVENTS_MALFORMED.labels(_reason)
for _reason in ("not_a_recipient", "unknown_message", "too_many_recipients", "too_long"):
    EVENTS_DROPPED.labels(_reason)  # exported at 0, as above
# Which mode a daemon runs in, for dashboards and the MailroomDebugMode alert: a daemon left
# in debug mode (MAILROOM_DEBUG: sends nothing) must not look healthy. Set by Daemon.run.
INFO = Gauge(
    "mailroom_info", "1, labelled with the daemon's mode (ses | debug) and version.",
    ["mode", "version"], registry=REGISTRY,
)  # fmt: skip


def created_series(environ: dict[str, str] | None = None) -> None:
    """No ``*_created`` series (one per counter, histogram and label set: noise on every
    scrape) unless MAILROOM_METRICS_CREATED_SERIES=true asks for them."""
    import os  # noqa: PLC0415

    import prometheus_client  # noqa: PLC0415

    env = os.environ if environ is None else environ
    if env.get("MAILROOM_METRICS_CREATED_SERIES", "").lower() == "true":
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
    else:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


created_series()
