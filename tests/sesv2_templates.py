"""SES v2 stored templates for the tests, kept in moto's SES v1 template store.

moto (5.2) implements the SES v1 template calls (CreateTemplate, UpdateTemplate,
GetTemplate, ListTemplates, TestRenderTemplate) but none of SES v2's: its sesv2 backend
answers "Template functionality not ready". So the v2 operations mailroom calls are
answered on the SES v2 stand-in (tests/sesv2_standin.py, ``extra_api``) by forwarding each
to moto's server over HTTP: the templates live in moto and TestRenderEmailTemplate is
moto's own renderer, not mailroom's. Paging is the stand-in's (moto lists everything).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import boto3
from botocore.exceptions import ClientError

from sesv2_standin import ApiError, SesStandin

PREFIX = "/v2/email/templates"


class TemplateApi:
    """``standin.extra_api`` answering the SES v2 template operations from moto."""

    def __init__(self, moto_url: str) -> None:
        self.ses = boto3.client(
            "ses",
            endpoint_url=moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        self.calls: list[str] = []

    def install(self, standin: SesStandin) -> TemplateApi:
        standin.extra_api = self
        return self

    def reset(self) -> None:
        for name in self.names():
            self.ses.delete_template(TemplateName=name)
        self.calls.clear()

    def names(self) -> list[str]:
        return sorted(t["Name"] for t in self.ses.list_templates()["TemplatesMetadata"])

    def __call__(self, method: str, path: str, query: str, body: bytes) -> dict[str, Any] | None:
        if not path.startswith(PREFIX):
            return None
        rest = [urllib.parse.unquote(p) for p in path[len(PREFIX) :].strip("/").split("/") if p]
        request = json.loads(body) if body else {}
        try:
            return self._answer(method, rest, urllib.parse.parse_qs(query), request)
        except ClientError as exc:
            raise _v2_error(exc) from None

    def _answer(
        self, method: str, rest: list[str], query: dict[str, list[str]], request: dict[str, Any]
    ) -> dict[str, Any]:
        if method == "GET" and not rest:
            self.calls.append("ListEmailTemplates")
            return self._list(query)
        if method == "POST" and not rest:
            self.calls.append("CreateEmailTemplate")
            self.ses.create_template(Template=_v1(request["TemplateName"], request))
            return {}
        name = rest[0]
        if method == "GET" and len(rest) == 1:
            self.calls.append("GetEmailTemplate")
            found = self.ses.get_template(TemplateName=name)["Template"]
            content = {"Subject": found.get("SubjectPart", "")}
            for v1, v2 in (("HtmlPart", "Html"), ("TextPart", "Text")):
                if found.get(v1) is not None:
                    content[v2] = found[v1]
            return {"TemplateName": name, "TemplateContent": content}
        if method == "PUT" and len(rest) == 1:
            self.calls.append("UpdateEmailTemplate")
            self.ses.update_template(Template=_v1(name, request))
            return {}
        if method == "POST" and rest[1:] == ["render"]:
            self.calls.append("TestRenderEmailTemplate")
            answer = self.ses.test_render_template(
                TemplateName=name, TemplateData=request["TemplateData"]
            )
            return {"RenderedTemplate": answer["RenderedTemplate"]}
        raise ApiError(404, "NotFoundException", f"No operation for {method} {PREFIX}/{name}.")

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        names = self.names()
        size = int(query.get("PageSize", ["10"])[0])
        start = int(query.get("NextToken", ["0"])[0])
        page = names[start : start + size]
        answer: dict[str, Any] = {"TemplatesMetadata": [{"TemplateName": n} for n in page]}
        if start + size < len(names):
            answer["NextToken"] = str(start + size)
        return answer


def _v1(name: str, request: dict[str, Any]) -> dict[str, str]:
    content = request.get("TemplateContent") or {}
    template = {"TemplateName": name, "SubjectPart": content.get("Subject", "")}
    if "Html" in content:
        template["HtmlPart"] = content["Html"]
    if "Text" in content:
        template["TextPart"] = content["Text"]
    return template


def _v2_error(exc: ClientError) -> ApiError:
    """moto's v1 error as SES v2 names it (the v2 API reference's error list)."""
    code = exc.response["Error"]["Code"]
    message = exc.response["Error"].get("Message", "")
    if code == "TemplateDoesNotExist":
        return ApiError(404, "NotFoundException", message)
    if code in ("AlreadyExists", "TemplateNameAlreadyExists"):
        return ApiError(400, "AlreadyExistsException", message)
    return ApiError(400, "BadRequestException", f"{code}: {message}")
