"""A claimed message as the email a recipient would read: what the debug transport writes
beside each request (.eml) and the SMTP transport delivers. Templated messages are
rendered from the local template (MAILROOM_TEMPLATES_DIR) with their data, as SES would
render its stored copy (mailroom.templates.handlebars)."""

from __future__ import annotations

from pathlib import Path

from mailroom.outbox import Message
from mailroom.templates import files, handlebars, mime
from mailroom.transports import Defaults


class ComposeError(Exception):
    """The message cannot become an email here: ``code`` is the dead-letter label SES
    would give (TemplateDoesNotExist, RenderingFailure)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


def compose(message: Message, defaults: Defaults, templates: Path | None) -> bytes:
    """The message's MIME bytes (CRLF line ends), or ComposeError."""
    if message.raw_mime is not None:
        return message.raw_mime
    if message.template is None:
        rendered = mime.Rendered(message.subject or "", message.body_html, message.body_text)
        return _email(message, defaults, rendered)
    if templates is None:
        raise ComposeError(
            "TemplateDoesNotExist",
            "MAILROOM_TEMPLATES_DIR is not set: "
            f"template {message.template} cannot be rendered here",
        )
    try:
        template = files.load(templates, message.template)
    except files.TemplateFileError as exc:
        raise ComposeError("TemplateDoesNotExist", str(exc)) from None
    if template is None:
        raise ComposeError(
            "TemplateDoesNotExist", f"template {message.template} is not in {templates}"
        )
    try:
        data = handlebars.load_data(message.template_data or "{}")
        rendered = mime.render(template, data)
    except handlebars.TemplateError as exc:
        raise ComposeError("RenderingFailure", str(exc)) from None
    return _email(message, defaults, rendered)


def _email(message: Message, defaults: Defaults, rendered: mime.Rendered) -> bytes:
    sender = message.from_address or defaults.source
    try:
        email = mime.message(
            rendered, sender=sender, to=message.to, cc=message.cc, reply_to=message.reply_to
        )
        return email.as_bytes()
    except Exception as exc:  # a header the email package refuses: this message's problem
        detail = f"cannot build the email: {type(exc).__name__}"
        raise ComposeError("MessageRejected", detail) from None
