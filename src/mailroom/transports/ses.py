"""AWS SES API v2 through one shared boto3 client.

botocore's own retries are off (one attempt per call): every retry is the daemon's, with
backoff and jitter, an attempt row and a lease that bounds how long a call may run. Two
retry layers would multiply (5 x 10 tries) and hide tries from the attempt log.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailroom.classify import ENTRY_STATUS, Verdict, classify_entry, classify_error
from mailroom.outbox import Message
from mailroom.transports import Defaults, Result

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client


def _destination(message: Message) -> dict[str, list[str]]:
    destination = {"ToAddresses": message.to}
    if message.cc:
        destination["CcAddresses"] = message.cc
    if message.bcc:
        destination["BccAddresses"] = message.bcc
    return destination


def _common(message: Message, defaults: Defaults) -> dict[str, Any]:
    request: dict[str, Any] = {"FromEmailAddress": message.from_address or defaults.source}
    config_set = message.config_set or defaults.config_set
    if config_set:
        request["ConfigurationSetName"] = config_set
    if message.reply_to:
        request["ReplyToAddresses"] = message.reply_to
    return request


def bulk_request(messages: Sequence[Message], defaults: Defaults) -> dict[str, Any]:
    """SendBulkEmail parameters for messages that share a bulk key."""
    first = messages[0]
    request = _common(first, defaults)
    request["DefaultContent"] = {"Template": {"TemplateName": first.template, "TemplateData": "{}"}}
    request["BulkEmailEntries"] = [
        {
            "Destination": _destination(m),
            "ReplacementEmailContent": {
                "ReplacementTemplate": {"ReplacementTemplateData": m.template_data or "{}"}
            },
        }
        for m in messages
    ]
    return request


def single_request(message: Message, defaults: Defaults) -> dict[str, Any]:
    """SendEmail parameters for a simple or raw message."""
    request = _common(message, defaults)
    request["Destination"] = _destination(message)
    if message.raw_mime is not None:
        request["Content"] = {"Raw": {"Data": message.raw_mime}}
        return request
    body: dict[str, Any] = {}
    if message.body_text is not None:
        body["Text"] = {"Data": message.body_text, "Charset": "UTF-8"}
    if message.body_html is not None:
        body["Html"] = {"Data": message.body_html, "Charset": "UTF-8"}
    request["Content"] = {
        "Simple": {"Subject": {"Data": message.subject, "Charset": "UTF-8"}, "Body": body}
    }
    return request


def failure(exc: Exception) -> Result:
    """A failed call as a Result, whatever botocore raised."""
    from botocore import exceptions as bx  # noqa: PLC0415 -- keep boto out of start-up

    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        detail = str(error.get("Message", ""))
    elif isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        code, detail = "NoCredentials", str(exc)
    elif isinstance(exc, bx.ParamValidationError):
        code, detail = "InvalidParameterValue", str(exc)
    elif isinstance(exc, bx.BotoCoreError | OSError):
        code, detail = "NetworkError", f"{type(exc).__name__}: {exc}"
    else:
        raise exc
    return Result(classify_error(code, detail), code=code, detail=detail, whole_call=True)


class SesTransport:
    def __init__(
        self,
        defaults: Defaults,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        import boto3  # noqa: PLC0415 -- boto3 costs ~100 ms and ~20 MB; only senders pay
        from botocore.config import Config  # noqa: PLC0415

        self.defaults = defaults
        # One client for the process: clients are thread-safe, sessions per call leak.
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what other AWS SDKs and
        # Lambda set, so honour it when the former is absent.
        session = boto3.session.Session()
        region = session.region_name or os.environ.get("AWS_REGION") or None
        self.client: SESV2Client = session.client(
            "sesv2",
            region_name=region,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                max_pool_connections=concurrency,
                tcp_keepalive=True,
                # the requests are built here from validated rows; botocore's check of
                # every parameter costs more CPU per bulk call than building it
                parameter_validation=False,
            ),
        )

    def send_bulk(self, messages: Sequence[Message]) -> list[Result]:
        try:
            response = self.client.send_bulk_email(**bulk_request(messages, self.defaults))
        except Exception as exc:  # failure() re-raises what it cannot classify
            return [failure(exc)] * len(messages)
        entries = response.get("BulkEmailEntryResults", [])
        results = []
        for position in range(len(messages)):
            if position >= len(entries):
                results.append(Result(Verdict.RETRY, code="MissingEntryResult"))
                continue
            entry = entries[position]
            status = str(entry.get("Status", "FAILED"))
            verdict = classify_entry(status)
            code = status if status in ENTRY_STATUS else "FAILED"
            if verdict is Verdict.SENT:
                results.append(Result(verdict, provider_id=entry.get("MessageId")))
            else:
                results.append(Result(verdict, code=code, detail=str(entry.get("Error", ""))))
        return results

    def send_one(self, message: Message) -> Result:
        try:
            response = self.client.send_email(**single_request(message, self.defaults))
        except Exception as exc:  # failure() re-raises what it cannot classify
            return failure(exc)
        return Result(Verdict.SENT, provider_id=response.get("MessageId"))

    def close(self) -> None:
        self.client.close()
