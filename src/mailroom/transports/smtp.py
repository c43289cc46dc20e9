"""The SMTP transport (MAILROOM_TRANSPORT=smtp): each message rendered here
(transports.compose, templates from MAILROOM_TEMPLATES_DIR) and delivered to one SMTP
server, MAILROOM_SMTP_URL: a development mail catcher such as Mailpit or MailHog.

The standard library's smtplib, in worker threads: a development transport carries a few
messages a second, so a new dependency (aiosmtplib) would buy nothing here. One connection
per message, bounded by MAILROOM_SES_CONCURRENCY at once; no TLS and no authentication
(a catcher on the developer's machine or network needs neither).

Failures are classified as SES's are (transports.classify): a 5xx reply is permanent
(dead), a 4xx reply or a connection that failed or timed out is transient (retry); a
template that is not in the files or data that do not fit it is dead, as SES would
dead-letter it.
"""

from __future__ import annotations

import smtplib
from collections.abc import Sequence
from email.parser import BytesHeaderParser
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from mailroom.outbox import Message
from mailroom.transports import Defaults, Result
from mailroom.transports.classify import Verdict, smtp_reply
from mailroom.transports.compose import ComposeError, compose


class SmtpTransport:
    def __init__(
        self,
        defaults: Defaults,
        url: str,
        templates: Path | None,
        *,
        concurrency: int,
        timeout: float,
    ) -> None:
        parts = urlsplit(url)
        self.defaults = defaults
        self.url = url
        self.host, self.port = parts.hostname or "localhost", parts.port or 25
        self.templates = templates
        self.timeout = timeout
        self.concurrency = concurrency
        self._limiter: anyio.CapacityLimiter | None = None

    def _deliver(self, message: Message) -> Result:  # noqa: PLR0911 -- one per kind of failure
        """One message, in a worker thread."""
        try:
            raw = compose(message, self.defaults, self.templates)
        except ComposeError as exc:
            return Result(Verdict.DEAD, code=exc.code, detail=exc.detail)
        sender = message.from_address or self.defaults.source
        recipients = [*message.to, *message.cc, *message.bcc]
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as server:
                server.sendmail(sender, recipients, raw)
        except smtplib.SMTPNotSupportedError as exc:  # e.g. a non-ASCII address, no SMTPUTF8
            return Result(Verdict.DEAD, code="SMTPPermanentError", detail=str(exc)[:500])
        except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused
            code, reply = next(iter(exc.recipients.values()), (550, b"refused"))
            return _refused(int(code), reply)
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, ...
            return _refused(int(exc.smtp_code), exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:  # no connection, a timeout, a hang-up
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return Result(
                Verdict.RETRY, code="NetworkError", detail=f"SMTP {self.host}:{self.port}: {detail}"
            )
        except Exception as exc:  # a bug here must cost this message a try, not the batch
            return Result(Verdict.RETRY, code="InternalError", detail=type(exc).__name__)
        headers = BytesHeaderParser().parsebytes(raw)
        return Result(Verdict.SENT, provider_id=str(headers.get("Message-ID") or "") or None)

    async def _send(self, message: Message) -> Result:
        if self._limiter is None:  # made on the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        return await anyio.to_thread.run_sync(self._deliver, message, limiter=self._limiter)

    async def send_bulk(self, messages: Sequence[Message]) -> list[Result]:
        results: list[Result | None] = [None] * len(messages)

        async def one(position: int) -> None:
            results[position] = await self._send(messages[position])

        async with anyio.create_task_group() as tg:
            for position in range(len(messages)):
                tg.start_soon(one, position)
        return [
            r if r is not None else Result(Verdict.RETRY, code="InternalError") for r in results
        ]

    async def send_one(self, message: Message) -> Result:
        return await self._send(message)

    async def aclose(self) -> None:
        pass


def _refused(code: int, reply: bytes | str) -> Result:
    verdict, label = smtp_reply(code)
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return Result(verdict, code=label, detail=f"{code} {text}"[:500])
