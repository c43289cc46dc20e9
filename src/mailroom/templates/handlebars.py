"""The Handlebars subset SES documents for stored templates, rendered locally. Pure.

Why not a library: pybars3 (last release 2019) and its fork pybars4 (2021) are LGPL,
unmaintained, and compile templates to Python source that is exec'd; ``handlebars`` on
PyPI is handlebars.js transpiled through js2py; python-handlebars is a 0.0.x release;
chevron and pystache are Mustache, which has no ``else``, ``@index`` or ``../``.

What this follows: what SES documents (developer guide, "Advanced email personalization",
the TestRenderTemplate reference, the knowledge-center article on rendering failures), and
handlebars.js where SES says only "Handlebars" (tests/ses_template_cases.py names the
authority of each case, and checks those moto can render against moto's server):

- ``{{a.b.c}}`` nested paths; ``{{this}}`` / ``{{.}}``, ``../`` (parent context),
  ``@root``; ``{{#each list}}`` with ``@index``, ``@first``, ``@last`` (``@key`` over an
  object) and ``{{else}}`` for an empty list; ``{{#if}}`` / ``{{else}}`` /
  ``{{else if x}}``, ``{{#unless}}``, ``{{#with}}``; inline partials
  (``{{#*inline "name"}}…{{/inline}}`` and ``{{> name}}``); comments ``{{! }}``,
  ``{{!-- --}}``; whitespace control ``{{~ … ~}}``.
- A variable that is missing (or null) fails the render, as SES's
  MissingRenderingAttribute does: ``Attribute 'x' is not present in the rendering data.``
  A condition (``#if x``) or a list (``#each x``) may be missing: false, empty.
- SES does not escape HTML when it renders ("SES doesn't escape HTML content"):
  ``{{x}}`` and ``{{{x}}}`` insert the value as it is, in every part.
- Values print as handlebars.js prints them: true/false, 1 not 1.0, a list joined by
  commas, an object as ``[object Object]``.

Hostile templates and data cannot make it loop or recurse without bound: the template's
size, the nesting of blocks and partials, the data's depth, the work done and the output's
size are all capped, and every failure is a TemplateError.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mailroom.templates.syntax import (
    MAX_NESTING,
    MAX_TEMPLATE,
    Block,
    MissingAttribute,
    Node,
    Partial,
    Template,
    TemplateError,
    Var,
    parse,
)

__all__ = [
    "MAX_NESTING",
    "MAX_TEMPLATE",
    "MissingAttribute",
    "Template",
    "TemplateError",
    "check_data",
    "load_data",
    "parse",
    "render",
    "to_text",
    "truthy",
]

MAX_DATA = 262_144  # characters of TemplateData (the SES API's limit)
MAX_DATA_DEPTH = 64
MAX_PARTIAL_DEPTH = 4  # partials calling partials
MAX_STEPS = 2_000_000  # nodes evaluated in one render
MAX_OUTPUT = 10 * 1024 * 1024  # characters of one rendered part


# -- data -----------------------------------------------------------------------------------


def load_data(text: str) -> dict[str, Any]:
    """TemplateData as SES reads it: a JSON object of at most MAX_DATA characters."""
    if len(text) > MAX_DATA:
        raise TemplateError(f"template data longer than {MAX_DATA} characters")
    try:
        data = json.loads(text)
    except RecursionError:
        raise TemplateError(f"template data nested deeper than {MAX_DATA_DEPTH}") from None
    except ValueError as exc:
        raise TemplateError(f"template data is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TemplateError("template data must be a JSON object")
    check_data(data)
    return data


def check_data(data: object) -> None:
    """Refuse data nested deeper than MAX_DATA_DEPTH (walked without recursion)."""
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            raise TemplateError(f"template data nested deeper than {MAX_DATA_DEPTH}")
        if isinstance(value, Mapping):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


# -- rendering ------------------------------------------------------------------------------

_MISSING = object()


@dataclass(slots=True)
class _Frame:
    context: Any
    data: dict[str, Any]  # @index, @first, @last, @key


@dataclass(slots=True)
class _Run:
    partials: dict[str, list[Node]]
    root: Any
    steps: int = 0
    size: int = 0
    partial_depth: int = 0


def render(template: Template | str, data: Mapping[str, Any]) -> str:
    """The text SES would produce for ``data``; TemplateError when SES would fail."""
    tree = parse(template) if isinstance(template, str) else template
    if not isinstance(data, Mapping):
        raise TemplateError("template data must be a JSON object")
    check_data(data)
    run = _Run(dict(tree.partials), data)
    out: list[str] = []
    _render(tree.nodes, [_Frame(data, {})], run, out)
    return "".join(out)


def _emit(run: _Run, out: list[str], text: str) -> None:
    run.size += len(text)
    if run.size > MAX_OUTPUT:
        raise TemplateError(f"rendered text longer than {MAX_OUTPUT} characters")
    out.append(text)


def _render(nodes: Sequence[Node], stack: list[_Frame], run: _Run, out: list[str]) -> None:
    for node in nodes:
        _step(run)
        if isinstance(node, str):
            _emit(run, out, node)
        elif isinstance(node, Var):
            value = _lookup(node.path, stack, run)
            if value is _MISSING or value is None:
                raise MissingAttribute(node.path)
            _emit(run, out, to_text(value))
        elif isinstance(node, Partial):
            body = run.partials.get(node.name)
            if body is None:
                raise TemplateError(f"partial '{node.name}' is not defined")
            if run.partial_depth >= MAX_PARTIAL_DEPTH:
                raise TemplateError(f"partials nested deeper than {MAX_PARTIAL_DEPTH}")
            run.partial_depth += 1
            _render(body, stack, run, out)
            run.partial_depth -= 1
        else:
            _block(node, stack, run, out)


def _step(run: _Run) -> None:
    run.steps += 1
    if run.steps > MAX_STEPS:
        raise TemplateError(f"rendering took more than {MAX_STEPS} steps")


def _block(node: Block, stack: list[_Frame], run: _Run, out: list[str]) -> None:
    value = _lookup(node.path, stack, run)
    if node.helper in ("if", "unless"):
        chosen = truthy(value) != (node.helper == "unless")
        _render(node.body if chosen else node.inverse, stack, run, out)
    elif node.helper == "with":
        if truthy(value):
            _render(node.body, [*stack, _Frame(value, {})], run, out)
        else:
            _render(node.inverse, stack, run, out)
    else:
        _each(node, value, stack, run, out)


def _each(node: Block, value: Any, stack: list[_Frame], run: _Run, out: list[str]) -> None:
    if isinstance(value, list):
        pairs: list[tuple[Any, Any]] = list(enumerate(value))
    elif isinstance(value, Mapping):
        pairs = _js_order(value)
    else:
        pairs = []
    if not pairs:
        _render(node.inverse, stack, run, out)
        return
    last = len(pairs) - 1
    for position, (key, item) in enumerate(pairs):
        _step(run)  # an empty body costs its iterations too
        data = {"index": position, "first": position == 0, "last": position == last}
        if isinstance(value, Mapping):
            data["key"] = key
        _render(node.body, [*stack, _Frame(item, data)], run, out)


def _js_order(value: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """An object's keys in JavaScript's order, which #each follows: keys that are array
    indices (canonical non-negative integers) ascending first, then the others as written."""
    index = [
        k for k in value if k.isascii() and k.isdigit() and (k == "0" or not k.startswith("0"))
    ]
    others = [k for k in value if k not in set(index)]
    return [(k, value[k]) for k in sorted(index, key=int) + others]


def _lookup(path: str, stack: list[_Frame], run: _Run) -> Any:  # noqa: PLR0912 -- path forms
    """The value a path names, or _MISSING."""
    frame = len(stack) - 1
    rest = path
    while rest.startswith("../"):
        frame = max(frame - 1, 0)
        rest = rest[3:]
    if rest.startswith("@"):
        name, _, rest = rest[1:].partition(".")
        if name == "root":
            current: Any = run.root
        else:
            for candidate in reversed(stack[: frame + 1]):
                if name in candidate.data:
                    current = candidate.data[name]
                    break
            else:
                return _MISSING
    else:
        current = stack[frame].context
        if rest in ("this", ".", ""):
            return current
        for prefix in ("this.", "./"):
            if rest.startswith(prefix):
                rest = rest[len(prefix) :]
    if not rest:
        return current
    for segment in rest.replace("/", ".").split("."):
        key = segment[1:-1] if segment.startswith("[") and segment.endswith("]") else segment
        if isinstance(current, Mapping):
            current = current.get(key, _MISSING)
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


def truthy(value: Any) -> bool:
    """Handlebars' truth: false, null, missing, "", 0 and [] are false; {} is true."""
    if value is _MISSING or value is None or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str | list):
        return len(value) > 0
    return True


def to_text(value: Any) -> str:
    """A value as handlebars.js prints it (JavaScript's String(value))."""
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:  # a nested list is joined without recursion
        item = stack.pop()
        if isinstance(item, _Sep):
            parts.append(",")
        elif isinstance(item, list):
            for position in range(len(item) - 1, -1, -1):
                stack.append(item[position])
                if position:
                    stack.append(_SEP)
        else:
            parts.append(_scalar(item))
    return "".join(parts)


class _Sep:
    pass


_SEP = _Sep()


def _scalar(value: Any) -> str:  # noqa: PLR0911 -- one answer per JSON type, as JavaScript
    if value is None:
        return ""  # null inside a list prints as nothing, as in JavaScript
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        text = repr(value)
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", text)  # 1e-07 -> 1e-7, as JavaScript
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "[object Object]"
    return str(value)
