"""The SES mailbox simulator and account-level suppression list, on top of the SES v2
stand-in (tests/sesv2_standin.py).

Attached to a stand-in, every accepted message produces the events SES would publish for
the simulator's addresses, in the SNS-envelope shape, sent to an SQS queue (moto's server
over real HTTP):

- ``success@simulator.amazonses.com`` (and any other address): Send, Delivery;
- ``bounce@``: Send, Bounce Permanent/General;
- ``ooto@``: Send, Delivery (the auto-reply is mail to the sender, not an event);
- ``complaint@``: Send, Delivery, Complaint (abuse);
- ``suppressionlist@``: Send, Bounce Permanent/OnAccountSuppressionList.

It also serves ``ListSuppressedDestinations`` (paginated) and ``PutSuppressedDestination``,
which moto does not implement.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from sesv2_standin import ApiError, Json, SesStandin

SIMULATOR = "simulator.amazonses.com"
SUPPRESSION_PATH = "/v2/email/suppression/addresses"


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event: Json) -> str:
    """An SES event as SNS delivers it to SQS (raw message delivery off), unsigned: a
    signature present must verify (mailroom.events.sns), and only AWS's key makes one that does
    (tests/test_sns.py signs envelopes with a key of its own)."""
    return json.dumps({
        "Type": "Notification", "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": json.dumps(event), "Timestamp": _stamp(datetime.now(UTC)),
    })  # fmt: skip


def events_for(rec: Json, now: datetime | None = None) -> list[Json]:
    """The events SES publishes for one accepted message (a stand-in record)."""
    at = now or datetime.now(UTC)
    recipients = [*rec["to"], *rec["cc"], *rec["bcc"]]
    mail = {
        "timestamp": _stamp(at), "source": rec["from"], "messageId": rec["message_id"],
        "destination": recipients, "sendingAccountId": "123456789012",
        "tags": {"ses:configuration-set": [rec.get("configuration_set") or "default"]},
    }  # fmt: skip
    later = _stamp(at + timedelta(seconds=1))
    out: list[Json] = [{"eventType": "Send", "mail": mail, "send": {}}]
    delivered = []
    for address in recipients:
        local, _, domain = address.lower().partition("@")
        kind = local if domain == SIMULATOR else "success"
        if kind in ("bounce", "suppressionlist"):
            sub = "General" if kind == "bounce" else "OnAccountSuppressionList"
            diagnostic = "smtp; 550 5.1.1 user unknown" if kind == "bounce" else None
            recipient = {"emailAddress": address, "action": "failed", "status": "5.1.1"}
            if diagnostic:
                recipient["diagnosticCode"] = diagnostic
            out.append({"eventType": "Bounce", "mail": mail, "bounce": {
                "bounceType": "Permanent", "bounceSubType": sub,
                "bouncedRecipients": [recipient], "timestamp": later,
                "feedbackId": str(uuid.uuid4()), "reportingMTA": "dsn; " + SIMULATOR,
            }})  # fmt: skip
        else:
            delivered.append(address)
        if kind == "complaint":
            out.append({"eventType": "Complaint", "mail": mail, "complaint": {
                "complainedRecipients": [{"emailAddress": address}], "timestamp": later,
                "feedbackId": str(uuid.uuid4()), "complaintFeedbackType": "abuse",
            }})  # fmt: skip
    if delivered:
        out.insert(1, {"eventType": "Delivery", "mail": mail, "delivery": {
            "timestamp": later, "processingTimeMillis": 1000, "recipients": delivered,
            "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a1." + SIMULATOR,
        }})  # fmt: skip
    return out


class MailboxSimulator:
    """Publishes the simulator's events for every message the stand-in accepts."""

    def __init__(self, standin: SesStandin, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self._lock = threading.Lock()
        self.published = 0
        # the account-level suppression list: address -> (reason, last update)
        self.account_list: dict[str, tuple[str, datetime]] = {}
        self.list_calls = 0
        # a hostile list: "repeat" answers NextToken "0" for ever, "fresh" a new token each time
        self.endless: str | None = None
        standin.on_sent = self.on_sent
        standin.extra_api = self.api

    def on_sent(self, rec: Json) -> None:
        for event in events_for(rec):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=envelope(event))
            with self._lock:
                self.published += 1

    def api(self, method: str, path: str, query: str, body: bytes) -> Json | None:
        if path != SUPPRESSION_PATH:
            return None
        if method == "PUT":
            request = json.loads(body)
            if request.get("Reason") not in ("BOUNCE", "COMPLAINT"):
                raise ApiError(400, "BadRequestException", "Reason must be BOUNCE or COMPLAINT.")
            with self._lock:
                self.account_list[request["EmailAddress"]] = (request["Reason"], datetime.now(UTC))
            return {}
        if method != "GET":
            return None
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        size = int(params.get("PageSize", "100"))
        start = int(params.get("NextToken", "0"))
        with self._lock:
            self.list_calls += 1
            items = sorted(self.account_list.items())
        page = items[start : start + size]
        answer: Json = {"SuppressedDestinationSummaries": [
            {"EmailAddress": a, "Reason": r, "LastUpdateTime": t.timestamp()} for a, (r, t) in page
        ]}  # fmt: skip
        if start + size < len(items) or self.endless == "fresh":
            answer["NextToken"] = str(start + size)
        if self.endless == "repeat":
            answer["NextToken"] = "0"
        return answer
