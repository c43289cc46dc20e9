"""A Django email backend that enqueues into mailroom's outbox, in the caller's transaction.

    EMAIL_BACKEND = "mailroom.django.EmailBackend"   # pip install 'mailroom[django]'

``send_mail``, ``send_mass_mail``, ``EmailMessage`` and ``EmailMultiAlternatives`` become
outbox rows through Django's own database connection (``MAILROOM_DATABASE``, default
``"default"``): inside ``transaction.atomic()`` a rollback means no mail. A message SES
simple content can carry (subject, text and/or one HTML alternative, To/Cc/Bcc/Reply-To)
is stored as such; anything else (attachments, custom headers, other alternatives, no To)
as the raw MIME Django itself builds (``message.message().as_bytes()``).

The sender is the message's ``from_email`` (Django fills in ``DEFAULT_FROM_EMAIL``). Left
at Django's placeholder ``webmaster@localhost`` (a new project's), a simple message names no
sender and the daemon sends it from ``MAILROOM_SES_SOURCE``; a raw one (its From is in the
MIME) is refused, asking for ``DEFAULT_FROM_EMAIL``. Every address is checked here,
as Django's SMTP backend checks them: a bad one raises ``ValueError`` naming the field and
the value (``BadHeaderError`` for a line break), a string holding several mailboxes
included. Lazy translation strings (``gettext_lazy``) are taken wherever Django takes them.

Per-message options: a ``mailroom`` dict on the message, e.g.
``msg.mailroom = {"priority": 5, "not_before": dt, "idempotency_key": "welcome:42",
"queue": "user_action_queue", "config_set": "...", "max_attempts": 3}``, and for an SES
stored template ``{"template": "welcome", "data": {...}}`` (the subject and bodies are then
not sent).

After ``send()`` each message has ``message.mailroom_id``: its outbox id (an idempotency
key already used for the same message gives the first one's), or None when it was not
enqueued (refused under ``fail_silently``, or no recipients). What became of it arrives
through the signals of ``mailroom.djangoapp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import global_settings, settings  # type: ignore[import-untyped]
from django.core.mail.backends.base import BaseEmailBackend  # type: ignore[import-untyped]
from django.core.mail.message import BadHeaderError  # type: ignore[import-untyped]
from django.db import DEFAULT_DB_ALIAS, connections, transaction  # type: ignore[import-untyped]
from django.utils.functional import Promise  # type: ignore[import-untyped]

from mailroom.addresses import holds_several_mailboxes, is_valid, ses_address
from mailroom.client import enqueue

OPTIONS = frozenset(
    {"priority", "not_before", "idempotency_key", "queue", "config_set", "max_attempts",
     "template", "data"}
)  # fmt: skip


HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "reply_to": "Reply-To"}


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, Promise) else value  # gettext_lazy and the like


def address(value: Any, field: str) -> str | tuple[str, str]:
    """One address of ``field`` (from, to, cc, bcc, reply_to), checked as the outbox will
    check it: refused in Django's words, naming the field and the value."""
    value = _text(value)
    if isinstance(value, tuple) and len(value) == 2:
        value = (str(_text(value[0])), str(_text(value[1])))
        shown = f"{value[0]} <{value[1]}>"
    elif isinstance(value, str):
        shown = value
    else:
        raise TypeError(
            f"{field}: an address must be a str or a (name, address) pair, not {value!r}"
        )
    if "\n" in shown or "\r" in shown:
        raise BadHeaderError(
            f"Header values can't contain newlines (got {shown!r} for header {HEADERS[field]!r})"
        )
    converted = ses_address(value)
    if holds_several_mailboxes(converted):
        raise ValueError(
            f"Invalid address {shown!r} in {field}: it holds more than one mailbox; give each"
            " recipient its own list entry (a display name with a comma goes in double quotes)"
        )
    if not is_valid(converted):
        raise ValueError(f"Invalid address {shown!r} in {field}")
    checked: str | tuple[str, str] = value
    return checked


def sender(message: Any) -> str | tuple[str, str] | None:
    """The message's From; None (the daemon's MAILROOM_SES_SOURCE) for Django's untouched
    placeholder, which no mail service sends from."""
    from_email = _text(message.from_email)
    if not from_email or from_email == global_settings.DEFAULT_FROM_EMAIL:
        return None
    return address(from_email, "from")


def fields(message: Any) -> dict[str, Any]:
    """enqueue()'s arguments for one Django EmailMessage."""
    options = dict(getattr(message, "mailroom", None) or {})
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown mailroom options {sorted(unknown)}: known are {sorted(OPTIONS)}")
    subject = "" if message.subject is None else str(message.subject)
    if "\n" in subject or "\r" in subject:
        raise BadHeaderError(f"Header values can't contain newlines (got {subject!r})")
    lists = {f: [address(a, f) for a in getattr(message, f)] for f in HEADERS if f != "from"}
    common: dict[str, Any] = {
        "from_address": sender(message),
        **lists,
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
        if common["from_address"] is None:
            # the From is in the MIME Django builds: it would say webmaster@localhost
            raise ValueError(
                f"Invalid address {_text(message.from_email) or ''!r} in from: a message sent"
                " as raw MIME (attachments, custom headers, other alternatives) carries its"
                " own From; set DEFAULT_FROM_EMAIL or the message's from_email"
            )
        if not message.to:
            # SES needs a To: the envelope's recipients go there, the MIME headers
            # (which Django writes without Bcc) decide what readers see
            common["to"], common["cc"], common["bcc"] = [*lists["cc"], *lists["bcc"]], [], []
        return {**common, "raw": message.message().as_bytes()}
    body = None if message.body is None else str(message.body)
    text = body if message.content_subtype == "plain" else None
    html = body if message.content_subtype == "html" else None
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
            # the outbox id, for mailroom.status/cancel and to match the signals of
            # mailroom.djangoapp; None when the message was not enqueued
            message.mailroom_id = None
            if not message.recipients():
                continue
            try:
                with transaction.atomic(using=self.using):
                    message.mailroom_id = enqueue(connection, **fields(message))
            except Exception:
                if not self.fail_silently:
                    raise
                continue
            count += 1
        return count
