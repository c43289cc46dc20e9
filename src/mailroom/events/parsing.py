"""SES events as they arrive in SQS, turned into one record per event and recipient.

Pure: no I/O. Accepts every envelope a real set-up produces:

- SNS → SQS: ``{"Type": "Notification", "MessageId": ..., "Message": "<the event as a
  JSON string>"}``; other SNS types (``SubscriptionConfirmation`` ...) are *ignored*;
- SNS raw message delivery: the event itself;
- EventBridge → SQS: ``{"source": "aws.ses", "detail-type": "Email Bounced", "detail":
  {the event}}``;
- the older identity notifications: ``notificationType`` instead of ``eventType``.

Anything else raises :class:`Malformed` with a short, PII-free ``reason`` for metrics.
Records carry no body, link, IP address or user agent: only who, what, when and why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailroom.addresses import normalize_address

EVENT_TYPES = frozenset(
    {"Send", "Delivery", "Bounce", "Complaint", "Reject", "DeliveryDelay",
     "RenderingFailure", "Open", "Click", "Subscription"}
)  # fmt: skip
# Spellings seen in the wild: configuration-set events say "Rendering Failure" in the
# developer guide's examples, EventBridge detail says "RenderingFailure".
_ALIASES = {"Rendering Failure": "RenderingFailure"}
# Notifications that are not events: SNS's own, and the one SES sends on subscribing.
_IGNORED_TYPES = frozenset({"AmazonSnsSubscriptionSucceeded"})
_IGNORED_SNS = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})
MALFORMED_REASONS = (
    "not_json", "no_event", "unknown_type", "missing_field", "bad_field", "too_long", "refused"
)  # fmt: skip
MAX_DETAIL = 500  # characters of a diagnostic kept: enough to act on, bounded in storage
# SES's own bounds (RFC 5321's 64 + 1 + 255 for an address). Longer values are hostile:
# they would also exceed PostgreSQL's btree entry limit (about 2,700 bytes) in the events
# and suppressions indexes, refusing the whole batch they came in.
MAX_ADDRESS = 320
MAX_MESSAGE_ID = 256
# SES sends a message to at most 50 recipients: an event naming more is not SES's. The
# first 50 are kept; the rest are dropped and counted (DROPPED_REASONS).
MAX_RECIPIENTS = 50
DROPPED_REASONS = ("too_many_recipients", "too_long")
# What PostgreSQL text cannot hold (NUL) and what cannot be encoded as UTF-8 (a surrogate
# code point: json.loads joins valid pairs, so any left is a lone one, and psycopg would
# raise UnicodeEncodeError on it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Malformed(ValueError):
    """An SQS message that holds no usable SES event; ``reason`` is one of
    MALFORMED_REASONS (a metric label), the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Event:
    key: str  # identifies the event itself, whatever envelope carried it
    provider_message_id: str | None  # SES MessageId: outbox.provider_message_id
    recipient: str  # normalized address
    type: str
    subtype: str  # "Permanent/General", a complaint's feedback type, a delay's type...
    detail: str | None  # diagnostic code, SMTP response, reject reason: no bodies
    occurred_at: datetime
    # A bounce's or complaint's key by the formula used before it covered the bounce type
    # and feedback id: a redelivery of an event stored then is recognised by it (with the
    # same subtype); None for the types whose key did not change.
    legacy_key: str | None = None

    @property
    def bounce_type(self) -> str:
        return self.subtype.partition("/")[0] if self.type == "Bounce" else ""


def sanitize(value: Any) -> Any:
    """A decoded JSON value with NUL and lone surrogates replaced by U+FFFD in every string,
    object keys included: what reaches the database can be stored."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    if isinstance(value, dict):
        return {sanitize(k): sanitize(v) for k, v in value.items()}
    return value


def parse(body: str) -> list[Event]:
    """The events of one SQS message body ([] for a notification that is no event)."""
    return parse_counted(body)[0]


def parse_counted(body: str) -> tuple[list[Event], dict[str, int]]:
    """:func:`parse`, and how many recipients were dropped by reason (DROPPED_REASONS)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Malformed("not_json", "the message body is not JSON") from None
    dropped: dict[str, int] = {}
    try:
        document = sanitize(document)
        event = _unwrap(document)
        return ([] if event is None else _records(event, dropped)), dropped
    except Malformed:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise Malformed("bad_field", f"unexpected event structure ({type(exc).__name__})") from None


def _unwrap(document: Any) -> dict[str, Any] | None:
    if not isinstance(document, dict):
        raise Malformed("no_event", "the message body is not a JSON object")
    kind = document.get("Type")
    if kind in _IGNORED_SNS:
        return None
    if kind == "Notification" and "Message" in document:  # SNS envelope
        message = document["Message"]
        if not isinstance(message, str):
            raise Malformed("bad_field", "SNS Message is not a string")
        try:
            document = json.loads(message)
        except (ValueError, RecursionError):
            raise Malformed("not_json", "SNS Message is not JSON") from None
        document = sanitize(document)
        if not isinstance(document, dict):
            raise Malformed("no_event", "SNS Message is not a JSON object")
    if "detail-type" in document and "detail" in document:  # EventBridge envelope
        document = document["detail"]
        if not isinstance(document, dict):
            raise Malformed("no_event", "EventBridge detail is not a JSON object")
    if document.get("notificationType") in _IGNORED_TYPES:
        return None
    if "eventType" not in document and "notificationType" not in document:
        raise Malformed("no_event", "neither eventType nor notificationType")
    return document


def _timestamp(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise Malformed("missing_field", f"{what} has no timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Malformed("bad_field", f"{what} timestamp is not ISO 8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any, limit: int = MAX_DETAIL) -> str | None:
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _addresses(items: Any, what: str, dropped: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """(normalized address, the item) for a list of recipient objects or strings."""
    if not isinstance(items, list) or not items:
        raise Malformed("missing_field", f"{what} lists no recipient")
    if len(items) > MAX_RECIPIENTS:
        dropped["too_many_recipients"] = len(items) - MAX_RECIPIENTS
        items = items[:MAX_RECIPIENTS]
    out = []
    for item in items:
        raw = item.get("emailAddress") if isinstance(item, dict) else item
        if not isinstance(raw, str) or "@" not in raw:
            raise Malformed("bad_field", f"{what}: a recipient is not an address")
        address = normalize_address(raw)
        if len(address) > MAX_ADDRESS:
            # no mailbox has it: dropped, the event's other recipients kept
            dropped["too_long"] = dropped.get("too_long", 0) + 1
            continue
        out.append((address, item if isinstance(item, dict) else {}))
    if not out:
        raise Malformed("too_long", f"{what}: every recipient is over {MAX_ADDRESS} characters")
    return out


def _records(event: dict[str, Any], dropped: dict[str, int]) -> list[Event]:
    raw_type = event.get("eventType") or event.get("notificationType")
    kind = _ALIASES.get(raw_type, raw_type) if isinstance(raw_type, str) else None
    if kind not in EVENT_TYPES:
        raise Malformed("unknown_type", f"unknown event type {str(raw_type)[:40]!r}")
    mail = event.get("mail")
    if not isinstance(mail, dict):
        raise Malformed("missing_field", f"{kind} event without a mail object")
    message_id = mail.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise Malformed("bad_field", "mail.messageId is not a string")
    if message_id is not None and len(message_id) > MAX_MESSAGE_ID:
        raise Malformed("too_long", f"mail.messageId is over {MAX_MESSAGE_ID} characters")
    body = event.get(_BODY[kind])
    if kind in _NEEDS_BODY and not isinstance(body, dict):
        raise Malformed("missing_field", f"{kind} event without its {_BODY[kind]} object")
    body = body if isinstance(body, dict) else {}
    recipients, subtype, detail, at = _fields(kind, body, mail, dropped)
    records = []
    for address, item in recipients:
        item_detail = detail
        if kind in ("Bounce", "DeliveryDelay"):
            item_detail = _text(item.get("diagnosticCode")) or _text(item.get("status"))
        # Open and Click happen many times per recipient: their own timestamp tells them
        # apart. Every other type happens once per message and recipient.
        stamp = at.isoformat() if kind in ("Open", "Click", "DeliveryDelay") else ""
        feedback = body.get("feedbackId") if kind in ("Bounce", "Complaint") else None
        parts = (kind, str(message_id or feedback or ""), address, stamp)
        key, legacy = _key(parts), None
        if kind in _DISCRIMINATED:
            # One message and recipient may have several: a Transient then a Permanent
            # bounce, two complaints. The old key (parts alone) made them collide.
            legacy = key
            key = _key((*parts, subtype if kind == "Bounce" else str(feedback or "")))
        records.append(Event(key, message_id, address, kind, subtype, item_detail, at, legacy))
    return records


_DISCRIMINATED = frozenset({"Bounce", "Complaint"})


def _key(parts: tuple[str, ...]) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _fields(
    kind: str, body: dict[str, Any], mail: dict[str, Any], dropped: dict[str, int]
) -> tuple[list[tuple[str, dict[str, Any]]], str, str | None, datetime]:
    """(recipients, subtype, detail, time) of one event by its type."""
    subtype, detail = "", None
    stamp = body.get("timestamp") or mail.get("timestamp")
    if kind == "Bounce":
        recipients = _addresses(body.get("bouncedRecipients"), "bounce", dropped)
        bounce_type = body.get("bounceType")
        if bounce_type not in ("Permanent", "Transient", "Undetermined"):
            raise Malformed("bad_field", "bounceType is not Permanent, Transient or Undetermined")
        subtype = f"{bounce_type}/{_text(body.get('bounceSubType'), 60) or 'Undetermined'}"
    elif kind == "Complaint":
        recipients = _addresses(body.get("complainedRecipients"), "complaint", dropped)
        subtype = _text(body.get("complaintFeedbackType"), 60) or ""
        sub = _text(body.get("complaintSubType"), 60)
        subtype = f"{subtype}/{sub}" if sub else subtype
    elif kind == "Delivery":
        recipients = _addresses(body.get("recipients"), "delivery", dropped)
        detail = _text(body.get("smtpResponse"))
    elif kind == "DeliveryDelay":
        recipients = _addresses(body.get("delayedRecipients"), "deliveryDelay", dropped)
        subtype = _text(body.get("delayType"), 60) or ""
    else:  # Send, Reject, RenderingFailure, Open, Click, Subscription: every destination
        recipients = _addresses(mail.get("destination"), f"{kind} mail.destination", dropped)
        if kind == "Reject":
            detail = _text(body.get("reason"))
        elif kind == "RenderingFailure":
            detail = _text(body.get("errorMessage"))
            subtype = _text(body.get("templateName"), 64) or ""
    return recipients, subtype, detail, _timestamp(stamp, kind)


_BODY = {
    "Send": "send", "Delivery": "delivery", "Bounce": "bounce", "Complaint": "complaint",
    "Reject": "reject", "DeliveryDelay": "deliveryDelay", "RenderingFailure": "failure",
    "Open": "open", "Click": "click", "Subscription": "subscription",
}  # fmt: skip
_NEEDS_BODY = frozenset({"Bounce", "Complaint", "Delivery", "DeliveryDelay"})


def suppression_reason(event: Event) -> str | None:
    """What an event alone does to the suppression list: "bounce" (a permanent bounce),
    "complaint" (any feedback but "not-spam"), or None. Transient bounces count towards
    "transient_bounces" in the database, where their history is."""
    if event.type == "Bounce" and event.bounce_type == "Permanent":
        return "bounce"
    if event.type == "Complaint" and not event.subtype.startswith("not-spam"):
        return "complaint"
    return None
