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
