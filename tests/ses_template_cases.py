"""The conformance table: how SES renders a template part, case by case, and on what
authority each case rests.

- ``moto``: checked against moto's server (SES v1 TestRenderTemplate over HTTP, the only
  template rendering moto implements: its SES v2 has no templates) by
  tests/test_templates_conformance.py. moto's renderer knows variables, ``#if``/``else``
  and ``#each`` over objects, nothing more, so only such cases carry this tag.
- ``ses-docs``: a rule of the SES developer guide ("Advanced email personalization",
  "Using templates to send personalized email", the TestRenderTemplate API reference, the
  knowledge-center article on rendering failures), which moto cannot check.
- ``handlebars``: SES documents its templates as Handlebars and points to handlebarsjs.com
  for the rest; these cases follow handlebars.js where SES says nothing more. Run
  `mailroom templates render NAME --remote` against a real account to see SES's answer.

``expected`` is the rendered text, or ``Missing("name")`` when SES refuses to render
(MissingRenderingAttribute: "Attribute 'name' is not present in the rendering data.").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Missing:
    attribute: str


@dataclass(frozen=True)
class Case:
    id: str
    template: str
    data: dict[str, Any]
    expected: str | Missing
    source: str  # moto | ses-docs | handlebars


CASES: list[Case] = [
    # -- variables ---------------------------------------------------------------------
    Case("variable", "Hello {{name}}!", {"name": "Ann"}, "Hello Ann!", "moto"),
    Case("spaces-in-tag", "Hello {{ name }}!", {"name": "Ann"}, "Hello Ann!", "moto"),
    Case("unicode", "Grüße, {{name}} ✓", {"name": "Zoë 山田"}, "Grüße, Zoë 山田 ✓", "moto"),
    Case("extra-data-ignored", "{{a}}", {"a": "x", "unused": "y"}, "x", "moto"),
    Case("missing-variable", "Hi {{name}}, {{color}}", {"name": "Jane"}, Missing("color"), "moto"),
    Case("case-sensitive", "{{Name}}", {"name": "Ann"}, Missing("Name"), "ses-docs"),
    Case("null-is-missing", "{{a}}", {"a": None}, Missing("a"), "moto"),
    Case(
        "nested-path",
        "Hello {{contact.firstName}}!",
        {"contact": {"firstName": "Anaya"}},
        "Hello Anaya!",
        "ses-docs",
    ),
    Case("deep-path", "{{a.b.c.d}}", {"a": {"b": {"c": {"d": "deep"}}}}, "deep", "ses-docs"),
    Case(
        "missing-nested",
        "{{contact.lastName}}",
        {"contact": {"firstName": "A"}},
        Missing("contact.lastName"),
        "ses-docs",
    ),
    Case("empty-string-prints", "[{{a}}]", {"a": ""}, "[]", "moto"),
    # -- escaping: "SES doesn't escape HTML content when rendering" ----------------------
    Case("no-html-escaping", "<p>{{a}}</p>", {"a": "<b>&\"'</b>"}, "<p><b>&\"'</b></p>", "moto"),
    Case("triple-stash-raw", "<p>{{{a}}}</p>", {"a": "<b>&</b>"}, "<p><b>&</b></p>", "ses-docs"),
    Case("ampersand-raw", "{{&a}}", {"a": "<i>"}, "<i>", "handlebars"),
    # -- values as handlebars.js prints them --------------------------------------------
    Case("integer", "{{n}}", {"n": 3}, "3", "handlebars"),
    Case("float-whole", "{{n}}", {"n": 3.0}, "3", "handlebars"),
    Case("float", "{{n}}", {"n": 2.5}, "2.5", "handlebars"),
    Case("zero-prints", "{{n}}", {"n": 0}, "0", "handlebars"),
    Case("boolean", "{{t}}/{{f}}", {"t": True, "f": False}, "true/false", "handlebars"),
    Case("array-joined", "{{a}}", {"a": [1, "b", [2, 3]]}, "1,b,2,3", "handlebars"),
    Case("object-prints", "{{o}}", {"o": {"k": 1}}, "[object Object]", "handlebars"),
    # -- conditionals -------------------------------------------------------------------
    Case("if-true", "{{#if a}}yes{{/if}}", {"a": "x"}, "yes", "moto"),
    Case("if-missing", "{{#if a}}yes{{/if}}!", {}, "!", "moto"),
    Case("if-else", "{{#if a}}yes{{else}}no{{/if}}", {"a": ""}, "no", "moto"),
    Case(
        "if-else-true", "{{#if a}}yes {{b}}{{else}}no{{/if}}", {"a": "1", "b": "B"}, "yes B", "moto"
    ),
    Case("if-zero-false", "{{#if n}}y{{else}}n{{/if}}", {"n": 0}, "n", "handlebars"),
    Case("if-empty-list-false", "{{#if l}}y{{else}}n{{/if}}", {"l": []}, "n", "handlebars"),
    Case("if-empty-object-true", "{{#if o}}y{{else}}n{{/if}}", {"o": {}}, "y", "handlebars"),
    Case(
        "if-nested-path", "{{#if user.vip}}VIP{{/if}}", {"user": {"vip": True}}, "VIP", "ses-docs"
    ),
    Case("else-if", "{{#if a}}A{{else if b}}B{{else}}C{{/if}}", {"b": 1}, "B", "handlebars"),
    Case(
        "unless-else-if",
        "{{#unless a}}A{{else if b}}B{{/unless}}",
        {"a": 1, "b": 1},
        "B",
        "handlebars",
    ),
    Case("unless", "{{#unless a}}none{{/unless}}", {"a": False}, "none", "handlebars"),
    Case("skipped-branch-not-checked", "{{#if a}}{{missing}}{{/if}}ok", {}, "ok", "moto"),
    # -- lists ------------------------------------------------------------------------
    Case(
        "each-objects",
        "{{#each items}}<li>{{name}}</li>{{/each}}",
        {"items": [{"name": "a"}, {"name": "b"}]},
        "<li>a</li><li>b</li>",
        "moto",
    ),
    # moto answers 500 here (its #each leaves the body unread when the list is empty)
    Case("each-missing-list", "[{{#each items}}x{{/each}}]", {}, "[]", "handlebars"),
    Case(
        "each-item-missing-field",
        "{{#each items}}{{name}}{{/each}}",
        {"items": [{"n": 1}]},
        Missing("name"),
        "moto",
    ),
    Case(
        "each-interest",
        "{{#each subscription}}{{interest}}, {{/each}}",
        {"subscription": [{"interest": "Sports"}, {"interest": "Travel"}]},
        "Sports, Travel, ",
        "ses-docs",
    ),
    Case("each-this", "{{#each l}}[{{this}}]{{/each}}", {"l": ["a", 2]}, "[a][2]", "handlebars"),
    Case(
        "each-index",
        "{{#each l}}{{@index}}={{this}} {{/each}}",
        {"l": ["a", "b"]},
        "0=a 1=b ",
        "handlebars",
    ),
    Case(
        "each-first-last",
        "{{#each l}}{{#if @first}}<{{/if}}{{this}}{{#if @last}}>{{/if}}{{/each}}",
        {"l": [1, 2, 3]},
        "<123>",
        "handlebars",
    ),
    Case("each-else-empty", "{{#each l}}x{{else}}none{{/each}}", {"l": []}, "none", "handlebars"),
    Case(
        "each-object-key",
        "{{#each o}}{{@key}}:{{this}};{{/each}}",
        {"o": {"a": 1, "b": 2}},
        "a:1;b:2;",
        "handlebars",
    ),
    Case(
        "each-object-key-order",
        "{{#each o}}{{@key}} {{/each}}",
        {"o": {"b": 1, "10": 2, "2": 3, "01": 4}},
        "2 10 b 01 ",
        "handlebars",
    ),
    Case(
        "each-parent",
        "{{#each l}}{{../greeting}} {{this}};{{/each}}",
        {"greeting": "hi", "l": ["a"]},
        "hi a;",
        "handlebars",
    ),
    Case(
        "each-root",
        "{{#each l}}{{@root.greeting}}{{/each}}",
        {"greeting": "hi", "l": [1]},
        "hi",
        "handlebars",
    ),
    Case(
        "each-no-outer-scope",
        "{{#each l}}{{greeting}}{{/each}}",
        {"greeting": "hi", "l": [{}]},
        Missing("greeting"),
        "handlebars",
    ),
    Case(
        "nested-each",
        "{{#each rows}}{{#each cells}}{{this}}{{/each}};{{/each}}",
        {"rows": [{"cells": [1, 2]}, {"cells": [3]}]},
        "12;3;",
        "handlebars",
    ),
    # -- with, partials, comments, whitespace --------------------------------------------
    Case(
        "with",
        "{{#with contact}}{{firstName}} {{lastName}}{{/with}}",
        {"contact": {"firstName": "A", "lastName": "I"}},
        "A I",
        "handlebars",
    ),
    Case(
        "inline-partial",
        '{{#*inline "sig"}}-- {{team}}{{/inline}}Hi{{> sig}}',
        {"team": "Support"},
        "Hi-- Support",
        "ses-docs",
    ),
    Case("comment", "a{{! a note }}b{{!-- {{not}} a tag --}}c", {}, "abc", "handlebars"),
    Case("whitespace-control", "a  {{~b~}}  c", {"b": "B"}, "aBc", "handlebars"),
    Case("block-lines-kept", "a\n{{#if t}}\nb\n{{/if}}\nc", {"t": True}, "a\n\nb\n\nc", "moto"),
]
