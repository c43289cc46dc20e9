"""The conformance table (tests/ses_template_cases.py) against mailroom's renderer, and
its ``moto`` cases against moto's server (SES v1 TestRenderTemplate over real HTTP); the
renderer against hostile templates and data (hypothesis): a TemplateError or text, never
another exception, never unbounded work."""

from __future__ import annotations

import contextlib
import time
from email import policy
from email.parser import Parser
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroom.templates import handlebars
from ses_template_cases import CASES, Case, Missing

MOTO_CASES = [c for c in CASES if c.source == "moto"]


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def test_every_case_names_its_authority() -> None:
    assert {c.source for c in CASES} <= {"moto", "ses-docs", "handlebars"}
    assert len({c.id for c in CASES}) == len(CASES)
    assert len(MOTO_CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_mailroom_renders_as_the_table_says(case: Case) -> None:
    if isinstance(case.expected, Missing):
        with pytest.raises(handlebars.MissingAttribute) as caught:
            handlebars.render(case.template, case.data)
        assert caught.value.name == case.expected.attribute
        assert str(caught.value) == (
            f"Attribute '{case.expected.attribute}' is not present in the rendering data."
        )
    else:
        assert handlebars.render(case.template, case.data) == case.expected


@pytest.fixture(scope="module")
def moto_ses(moto_url: str) -> Any:
    return boto3.client(
        "ses",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_moto_agrees_with_the_table(moto_ses: Any) -> None:
    """One round trip per case: moto's TestRenderTemplate renders the case's template as the
    text part; its answer (or its refusal) must be the table's, and so mailroom's."""
    import json  # noqa: PLC0415

    disagreements = []
    for n, case in enumerate(MOTO_CASES):
        name = f"case{n}"
        moto_ses.create_template(
            Template={
                "TemplateName": name,
                "SubjectPart": "s",
                "TextPart": case.template,
                "HtmlPart": "h",
            }
        )
        try:
            answer = moto_ses.test_render_template(
                TemplateName=name, TemplateData=json.dumps(case.data)
            )["RenderedTemplate"]
        except ClientError as exc:
            got: str | Missing = Missing(exc.response["Error"]["Message"])
        except ResponseParserError:  # moto's own 500 page: it cannot render this case
            got = "moto failed"
        else:
            mail = Parser(policy=policy.default).parsestr(answer)
            text = next(p for p in mail.walk() if p.get_content_type() == "text/plain")
            got = text.get_payload(decode=True).decode("utf-8")
        if isinstance(case.expected, Missing):
            message = f"Attribute '{case.expected.attribute}' is not present in the rendering data."
            ok = isinstance(got, Missing) and got.attribute == message
        else:
            ok = got == case.expected
        if not ok:
            disagreements.append((case.id, got))
    assert disagreements == []


# -- hostile templates and data -----------------------------------------------------------

_PIECES = [
    "{{",
    "}}",
    "{{{",
    "}}}",
    "{{#if a}}",
    "{{#each l}}",
    "{{/if}}",
    "{{/each}}",
    "{{else}}",
    "{{else if b}}",
    "{{#with o}}",
    "{{/with}}",
    "{{#unless a}}",
    "{{/unless}}",
    "{{> p}}",
    '{{#*inline "p"}}',
    "{{/inline}}",
    "{{this}}",
    "{{@index}}",
    "{{../a}}",
    "{{a.b}}",
    "{{!",
    "--}}",
    "{{!--",
    "~",
    "a",
    " ",
    "\n",
    "{{@root.a}}",
    "{{lookup a b}}",
    "{{^}}",
    "é",
    "{{.}}",
    "{{a}}",
]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from("ablo"), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_PIECES), max_size=40),
    st.dictionaries(st.sampled_from("ablo"), _JSON, max_size=4),
)
def test_hostile_templates_fail_only_as_template_errors(
    pieces: list[str], data: dict[str, Any]
) -> None:
    try:
        out = handlebars.render("".join(pieces), data)
    except handlebars.TemplateError:
        return
    assert isinstance(out, str)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_fails_only_as_a_template_error(source: str) -> None:
    with contextlib.suppress(handlebars.TemplateError):
        handlebars.render(source, {"a": "x", "l": [1, 2]})


@pytest.mark.parametrize(
    ("template", "data"),
    [
        ("{{#if a}}" * 5000 + "x" + "{{/if}}" * 5000, {"a": 1}),  # nesting
        ('{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}', {}),  # a partial calling itself
        ('{{#*inline "p"}}{{> p}}{{> p}}{{/inline}}{{> p}}', {}),
        ("{{#each @root.l}}" * 12 + "{{/each}}" * 12, {"l": list(range(30))}),  # 30^12
        ("{{a}}" * 100_000, {"a": "x" * 200}),  # 20 MB of output
        ("{{" + "a." * 100_000 + "b}}", {}),  # a long path
    ],
    ids=["nesting", "self-partial", "partial-fork", "nested-each", "output", "long-path"],
)
def test_hostile_work_is_bounded(template: str, data: dict[str, Any]) -> None:
    started = time.monotonic()
    with pytest.raises(handlebars.TemplateError):
        handlebars.render(template, data)
    assert time.monotonic() - started < 10


def test_hostile_data_is_bounded() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(handlebars.TemplateError):
        handlebars.load_data('{"a": ' + deep + "}")
    nested: Any = "x"
    for _ in range(200):
        nested = [nested]
    with pytest.raises(handlebars.TemplateError, match="nested deeper"):
        handlebars.render("{{a}}", {"a": nested})
    with pytest.raises(handlebars.TemplateError, match="JSON object"):
        handlebars.load_data("[1]")
    with pytest.raises(handlebars.TemplateError, match="longer"):
        handlebars.load_data('{"a": "' + "x" * 300_000 + '"}')
