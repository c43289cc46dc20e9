"""A template rendered with its data, and the email a recipient would get from it. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from email.utils import formatdate, make_msgid
from typing import Any

from mailroom.templates import handlebars
from mailroom.templates.files import Template


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str | None
    text: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"subject": self.subject, "text": self.text, "html": self.html}


def render(template: Template, data: Mapping[str, Any]) -> Rendered:
    """Every part rendered; TemplateError naming the part that fails (as SES refuses the
    whole message when one part fails)."""
    out: dict[str, str | None] = {}
    for part, source in template.parts().items():
        if source is None:
            out[part] = None
            continue
        try:
            out[part] = handlebars.render(source, data)
        except handlebars.TemplateError as exc:
            raise handlebars.TemplateError(f"{template.name} {part}: {exc}") from None
    subject = out["subject"] or ""
    # a header cannot carry a line break: SES folds it away, so does this
    subject = " ".join(subject.splitlines())
    return Rendered(subject, out["html"], out["text"])


def message(
    rendered: Rendered,
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    reply_to: Sequence[str] = (),
    domain: str = "mailroom.invalid",
) -> EmailMessage:
    """The email: multipart/alternative with the text part first and the HTML part last
    (the one clients prefer), or the one part the template has."""
    mail = EmailMessage(policy=policy.SMTP)
    mail["Subject"] = rendered.subject
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    if cc:
        mail["Cc"] = ", ".join(cc)
    if reply_to:
        mail["Reply-To"] = ", ".join(reply_to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=domain)
    if rendered.text is not None:
        mail.set_content(rendered.text, subtype="plain", charset="utf-8")
        if rendered.html is not None:
            mail.add_alternative(rendered.html, subtype="html", charset="utf-8")
    else:
        mail.set_content(rendered.html or "", subtype="html", charset="utf-8")
    return mail


def parse_rendered(mime_text: str) -> Rendered:
    """SES's TestRenderEmailTemplate answer (a MIME message) as its three parts."""
    mail = Parser(policy=policy.default).parsestr(mime_text)
    subject = str(mail.get("Subject", ""))
    html = text = None
    for part in mail.walk() if mail.is_multipart() else [mail]:
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        content = part.get_content() if kind.startswith("text/") else None
        if kind == "text/html" and html is None:
            html = content
        elif kind == "text/plain" and text is None:
            text = content
    return Rendered(subject, html, text)
