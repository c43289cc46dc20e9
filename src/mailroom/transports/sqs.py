"""The events reader's two SQS calls in SQS's AWS JSON 1.0 protocol, built and read here.
No I/O (the calls ride transports/exchange.py: mailroom.events.sqsclient).

ReceiveMessage and DeleteMessageBatch are all the reader makes. botocore's sqs client and
session cost the events daemon ~17 MiB (docs/BENCHMARKS.md) for these two shapes. Every
answer is a peer's bytes: read field by field, a message lacking what the reader needs is
left out of the batch (and counted by the caller), never a reason to stop reading.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailroom.transports.ses import error_of as rest_error_of

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
MAX_ATTEMPTS = 3  # botocore's standard retry mode, as the reader's botocore client had it
BACKOFF_BASE = 1.0  # botocore standard mode: random(0, 1) * 2**attempt, capped
BACKOFF_CAP = 20.0
# codes botocore's standard mode retries (botocore.retries.standard): throttling and
# transient service errors
THROTTLING = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException", "RequestTimeout", "RequestTimeoutException",
    "KMSThrottled", "AWS.SimpleQueueService.RequestThrottled",
})  # fmt: skip
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})


class SqsError(Exception):
    """An SQS call failed: ``code`` as botocore's ClientError would carry it (SQS's own
    query-protocol codes where the answer gives them, e.g.
    ``AWS.SimpleQueueService.NonExistentQueue``), NetworkError or InvalidResponse."""

    def __init__(self, code: str, message: str, operation: str, status: int = 0) -> None:
        super().__init__(
            f"An error occurred ({code}) when calling the {operation} operation: {message}"
        )
        self.code = code
        self.message = message
        self.operation = operation
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    operation: str
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        # x-amzn-query-mode: SQS then names errors with the query protocol's codes, as
        # botocore asks (the codes a botocore ClientError carried before)
        return {"X-Amz-Target": TARGET_PREFIX + self.operation, "x-amzn-query-mode": "true"}


def _request(operation: str, params: Mapping[str, Any]) -> Request:
    return Request(operation, json.dumps(params, separators=(",", ":")).encode("utf-8"))


def receive_request(queue_url: str, max_messages: int, wait_seconds: int) -> Request:
    return _request(
        "ReceiveMessage",
        {"QueueUrl": queue_url, "MaxNumberOfMessages": max_messages,
         "WaitTimeSeconds": wait_seconds},
    )  # fmt: skip


def delete_request(queue_url: str, entries: Sequence[Mapping[str, str]]) -> Request:
    return _request("DeleteMessageBatch", {"QueueUrl": queue_url, "Entries": list(entries)})


def error_of(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """(code, message) of an error answer as botocore reads it for SQS (a JSON protocol
    service that is query-compatible): the ``x-amzn-query-error`` header's code when
    present, else the JSON ``__type`` (namespace dropped) or ``x-amzn-errortype``."""
    code, message = rest_error_of(status, headers, body)
    query = headers.get("x-amzn-query-error", "").split(";", 1)[0].strip()
    return (query[:200] or code[:200]), message[:1000]


def answer_of(
    operation: str, status: int, headers: Mapping[str, str], body: bytes
) -> dict[str, Any]:
    """The JSON object of a 2xx answer; raises SqsError for anything else."""
    if status >= 300:
        code, message = error_of(status, headers, body)
        raise SqsError(code, message, operation, status)
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise SqsError("InvalidResponse", f"HTTP {status}: not a JSON object", operation, status)
    return parsed


@dataclass(frozen=True, slots=True)
class Received:
    messages: list[dict[str, Any]]  # MessageId, ReceiptHandle and Body: all str
    unusable: int  # entries without a ReceiptHandle (or not objects): left out


def messages_of(answer: Mapping[str, Any]) -> Received:
    """ReceiveMessage's messages, each holding str MessageId, ReceiptHandle and Body (a
    Body of another type becomes "", which the reader counts as malformed and deletes).
    An entry without a usable ReceiptHandle cannot be deleted: it is left out and
    counted; SQS hands it out again and its redrive policy ends it."""
    raw = answer.get("Messages")
    if not isinstance(raw, list):
        return Received([], 0 if raw is None else 1)
    messages, unusable = [], 0
    for entry in raw:
        handle = entry.get("ReceiptHandle") if isinstance(entry, dict) else None
        if not isinstance(handle, str) or not handle or len(handle) > 4096:
            unusable += 1
            continue
        message_id, body = entry.get("MessageId"), entry.get("Body")
        messages.append({
            # logged with every warning about the message: SQS's are 36 characters
            "MessageId": message_id[:100] if isinstance(message_id, str) else None,
            "ReceiptHandle": handle,
            "Body": body if isinstance(body, str) else "",
        })  # fmt: skip
    return Received(messages, unusable)


def failed_of(answer: Mapping[str, Any], sent: int) -> list[Any]:
    """DeleteMessageBatch's failed entries; an answer that accounts for fewer than it was
    sent counts the missing ones as failed."""
    failed = answer.get("Failed")
    ok = answer.get("Successful")
    failed = failed if isinstance(failed, list) else []
    ok = ok if isinstance(ok, list) else []
    missing = max(0, sent - len(failed) - len(ok))
    return failed + [{"Id": "?", "Code": "MissingEntry"}] * missing


def retryable(error: SqsError) -> bool:
    """Whether botocore's standard mode would try the call again. Pure."""
    return (
        error.code in THROTTLING or error.code == "NetworkError" or error.status in TRANSIENT_STATUS
    )


def backoff(attempt: int, rand: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1`` (1-based ``attempt``): botocore's standard
    mode, full jitter."""
    r = random.random() if rand is None else rand  # noqa: S311 -- jitter, not a secret
    return float(min(BACKOFF_CAP, r * BACKOFF_BASE * 2**attempt))
