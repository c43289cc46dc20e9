"""A Django email backend that enqueues into mailroom's outbox, in the caller's transaction.

    EMAIL_BACKEND = "mailroom.django.EmailBackend"   # pip install 'mailroom[django]'

``send_mail``, ``send_mass_mail``, ``EmailMessage`` and ``EmailMultiAlternatives`` become
outbox rows through Django's own database connection (``MAILROOM_DATABASE``, default
``"default"``): inside ``transaction.atomic()`` a rollback means no mail. A message SES
simple content can carry (subject, text and/or one HTML alternative, To/Cc/Bcc/Reply-To)
is stored as such; anything else (attachments, custom headers, other alternatives, no To)
as the raw MIME Django itself builds (``message.message().as_bytes()``).

Per-message options: a ``mailroom`` dict on the message, e.g.
``msg.mailroom = {"priority": 5, "not_before": dt, "idempotency_key": "welcome:42",
"queue": "user_action_queue", "config_set": "...", "max_attempts": 3}``, and for an SES
stored template ``{"template": "welcome", "data": {...}}`` (the subject and bodies are then
not sent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.core.mail.backends.base import BaseEmailBackend  # type: ignore[import-untyped]
from django.core.mail.message import BadHeaderError  # type: ignore[import-untyped]
from django.db import DEFAULT_DB_ALIAS, connections, transaction  # type: ignore[import-untyped]

from mailroom.client import enqueue

OPTIONS = frozenset(
    {"priority", "not_before", "idempotency_key", "queue", "config_set", "max_attempts",
     "template", "data"}
)  # fmt: skip


def fields(message: Any) -> dict[str, Any]:
    """enqueue()'s arguments for one Django EmailMessage."""
    options = dict(getattr(message, "mailroom", None) or {})
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown mailroom options {sorted(unknown)}: known are {sorted(OPTIONS)}")
    subject = str(message.subject or "")
    if "\n" in subject or "\r" in subject:
        raise BadHeaderError(f"Header values can't contain newlines (got {subject!r})")
    common: dict[str, Any] = {
        "from_address": message.from_email or settings.DEFAULT_FROM_EMAIL,
        "to": list(message.to),
        "cc": list(message.cc),
        "bcc": list(message.bcc),
        "reply_to": list(message.reply_to),
        **{k: v for k, v in options.items() if k not in ("template", "data")},
    }
    if "template" in options:
        return {**common, "template": options["template"], "data": options.get("data") or {}}
    alternatives: Sequence[Any] = getattr(message, "alternatives", ())
    html_alternatives = [a for a in alternatives if a[1] == "text/html"]
    simple = (
        message.to
        and not message.attachments
        and not message.extra_headers
        and len(alternatives) == len(html_alternatives) <= 1
        and message.content_subtype in ("plain", "html")
        and subject
    )
    if not simple:
        if not message.to:
            # SES needs a To: the envelope's recipients go there, the MIME headers
            # (which Django writes without Bcc) decide what readers see
            common["to"], common["cc"], common["bcc"] = [*message.cc, *message.bcc], [], []
        return {**common, "raw": message.message().as_bytes()}
    text = message.body if message.content_subtype == "plain" else None
    html = message.body if message.content_subtype == "html" else None
    if html_alternatives:
        html = str(html_alternatives[0][0])
    if not text and not html:
        text = ""  # an empty body is still a body
    return {**common, "subject": subject, "text": text, "html": html}


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]  # Django has no type stubs
    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.using = getattr(settings, "MAILROOM_DATABASE", DEFAULT_DB_ALIAS)

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Enqueue each message; returns how many were. Each in a savepoint of the caller's
        transaction (its own transaction in autocommit mode), so that one refused message
        does not poison the caller's transaction when fail_silently is set."""
        count = 0
        connection = connections[self.using]
        for message in email_messages or ():
            if not message.recipients():
                continue
            try:
                with transaction.atomic(using=self.using):
                    enqueue(connection, **fields(message))
            except Exception:
                if not self.fail_silently:
                    raise
                continue
            count += 1
        return count
