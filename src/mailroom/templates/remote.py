"""SES v2's stored templates: ListEmailTemplates, GetEmailTemplate, CreateEmailTemplate,
UpdateEmailTemplate and TestRenderEmailTemplate, over a boto3 ``sesv2`` client handed in
(mailroom.daemon.preflight.client: the daemon's region, endpoint and credentials)."""

from __future__ import annotations

from typing import Any

from mailroom.templates.files import Template

PAGE_SIZE = 100  # SES's largest ListEmailTemplates page
MAX_PAGES = 1000  # 100,000 templates: more than an account may hold (20,000 per region)


class RemoteError(Exception):
    """An SES call that failed: ``code`` is SES's error code (or the exception's type)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation} failed: {code}: {message}".rstrip(": "))
        self.operation, self.code, self.message = operation, code, message


def _failure(operation: str, exc: Exception) -> RemoteError:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return RemoteError(operation, str(error.get("Code") or ""), str(error.get("Message") or ""))
    return RemoteError(operation, type(exc).__name__, str(exc)[:300])


def list_names(ses: Any) -> list[str]:
    names: list[str] = []
    token: str | None = None
    for _ in range(MAX_PAGES):  # bounded: a server repeating its token cannot loop us
        args: dict[str, Any] = {"PageSize": PAGE_SIZE}
        if token:
            args["NextToken"] = token
        try:
            page = ses.list_email_templates(**args)
        except Exception as exc:  # botocore's ClientError and connection errors alike
            raise _failure("ListEmailTemplates", exc) from None
        names += [str(t["TemplateName"]) for t in page.get("TemplatesMetadata", [])]
        token = page.get("NextToken")
        if not token:
            return sorted(set(names))
    raise RemoteError("ListEmailTemplates", "TooManyPages", f"still paging after {MAX_PAGES} pages")


def get(ses: Any, name: str) -> Template | None:
    """SES's copy of ``name``; None when SES has no such template."""
    try:
        answer = ses.get_email_template(TemplateName=name)
    except Exception as exc:
        failure = _failure("GetEmailTemplate", exc)
        if failure.code == "NotFoundException":
            return None
        raise failure from None
    content = answer.get("TemplateContent") or {}
    return Template(
        name, str(content.get("Subject") or ""), content.get("Html"), content.get("Text")
    )


def put(ses: Any, template: Template, *, exists: bool) -> None:
    """Create or replace the template in SES (a part the files lack is removed)."""
    content = {"Subject": template.subject}
    if template.html is not None:
        content["Html"] = template.html
    if template.text is not None:
        content["Text"] = template.text
    operation = "UpdateEmailTemplate" if exists else "CreateEmailTemplate"
    call = ses.update_email_template if exists else ses.create_email_template
    try:
        call(TemplateName=template.name, TemplateContent=content)
    except Exception as exc:
        raise _failure(operation, exc) from None


def test_render(ses: Any, name: str, data: str) -> str:
    """SES's rendering of its stored template ``name``: the MIME message as text."""
    try:
        answer = ses.test_render_email_template(TemplateName=name, TemplateData=data)
    except Exception as exc:
        raise _failure("TestRenderEmailTemplate", exc) from None
    return str(answer.get("RenderedTemplate") or "")
