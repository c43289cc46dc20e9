"""The Handlebars subset SES documents for stored templates, rendered locally. Pure.

Why not a library: pybars3 (last release 2019) and its fork pybars4 (2021) are LGPL,
unmaintained, and compile templates to Python source that is exec'd; ``handlebars`` on
PyPI is handlebars.js transpiled through js2py; python-handlebars is a 0.0.x release;
chevron and pystache are Mustache, which has no ``else``, ``@index`` or ``../``.

What SES documents (developer guide, "Advanced email personalization" and the
TestRenderTemplate reference) and what this follows:

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
from dataclasses import dataclass, field
from typing import Any, Union

MAX_TEMPLATE = 512 * 1024  # characters; SES stores at most 500 KB per template
MAX_DATA = 262_144  # characters of TemplateData (the SES API's limit)
MAX_DATA_DEPTH = 64
MAX_NESTING = 24  # blocks inside blocks
MAX_PARTIAL_DEPTH = 4  # partials calling partials
MAX_STEPS = 2_000_000  # nodes evaluated in one render
MAX_OUTPUT = 10 * 1024 * 1024  # characters of one rendered part


class TemplateError(ValueError):
    """A template that cannot be parsed, data SES would refuse, or a limit reached."""


class MissingAttribute(TemplateError):
    """A variable the data does not hold: SES's MissingRenderingAttribute."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Attribute '{name}' is not present in the rendering data.")
        self.name = name


# -- the tree -------------------------------------------------------------------------------


@dataclass(slots=True)
class Var:
    path: str


@dataclass(slots=True)
class Partial:
    name: str


@dataclass(slots=True)
class Block:
    helper: str  # if | unless | each | with
    path: str
    body: list[Node] = field(default_factory=list)
    inverse: list[Node] = field(default_factory=list)


Node = Union[str, Var, Block, Partial]  # noqa: UP007 -- a runtime alias; mypy reads it


@dataclass(slots=True)
class Template:
    nodes: list[Node]
    partials: dict[str, list[Node]]


# -- parsing --------------------------------------------------------------------------------

_HELPERS = frozenset({"if", "unless", "each", "with"})
_PATH = re.compile(r"^(?:@root|@index|@first|@last|@key|this|\.|(?:\.\./)+)?[\w.@/\-\[\]]*$")
_SEGMENT = re.compile(r"^[^\s.!\"#%&'()*+,;<=>@\[\\\]^`{|}~/]+$|^\[[^\]]+\]$")


@dataclass(slots=True)
class _Tag:
    kind: str  # var | open | close | else | partial | inline
    name: str  # helper, partial or inline name; else's helper ("" or "if"...)
    arg: str  # the path
    line: int


def _scan(source: str) -> list[str | _Tag]:
    """Text and tags in order, whitespace control applied to the text."""
    out: list[str | _Tag] = []
    pos = 0
    strip_next = False
    line, counted = 1, 0  # line numbers counted as the scan goes: linear, not quadratic
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if strip_next:
            text = text.lstrip()
        if start < 0:
            if text:
                out.append(text)
            return out
        line += source.count("\n", counted, start)
        counted = start
        if source.startswith(("{{!--", "{{~!--"), start):
            after = _close_comment(source, start, line)
            tag_text, inner = source[start:after], ""
        elif source.startswith("{{{", start):
            end = source.find("}}}", start + 3)
            if end < 0:
                raise TemplateError(f"line {line}: '{{{{{{' is never closed by '}}}}}}'")
            after = end + 3
            tag_text, inner = source[start:after], source[start + 3 : end]
        else:
            end = source.find("}}", start + 2)
            if end < 0:
                raise TemplateError(f"line {line}: '{{{{' is never closed by '}}}}'")
            after = end + 2
            tag_text, inner = source[start:after], source[start + 2 : end]
        left_trim = tag_text.startswith("{{~")
        right_trim = tag_text.endswith("~}}")
        if left_trim:
            text = text.rstrip()
        if text:
            out.append(text)
        strip_next = right_trim
        pos = after
        inner = inner.strip().removeprefix("~").removesuffix("~").strip()
        if tag_text.startswith(("{{!", "{{~!")):
            continue  # a comment
        if tag_text.startswith("{{{"):
            out.append(_Tag("var", "", _check_path(inner, line), line))
            continue
        out.append(_classify(inner, line))


def _close_comment(source: str, start: int, line: int) -> int:
    end = source.find("--}}", start + 5)
    end_trim = source.find("--~}}", start + 5)
    candidates = [e + 4 for e in (end,) if e >= 0] + [e + 5 for e in (end_trim,) if e >= 0]
    if not candidates:
        raise TemplateError(f"line {line}: '{{{{!--' is never closed by '--}}}}'")
    return min(candidates)


def _classify(inner: str, line: int) -> _Tag:
    if not inner:
        raise TemplateError(f"line {line}: empty tag '{{{{}}}}'")
    sigil = inner[0]
    if sigil == "#":
        if inner.startswith("#*inline"):
            name = inner[len("#*inline") :].strip()
            if len(name) < 2 or name[0] not in "\"'" or name[-1] != name[0]:
                raise TemplateError(f"line {line}: inline partials are named in quotes")
            return _Tag("inline", name[1:-1], "", line)
        helper, _, arg = inner[1:].strip().partition(" ")
        if helper not in _HELPERS:
            raise TemplateError(f"line {line}: helper '#{helper}' is not supported")
        if not arg.strip():
            raise TemplateError(f"line {line}: '#{helper}' needs a value")
        return _Tag("open", helper, _check_path(arg.strip(), line), line)
    if sigil == "/":
        return _Tag("close", inner[1:].strip(), "", line)
    if sigil == ">":
        name = inner[1:].strip().strip("\"'")
        if not name or " " in name:
            raise TemplateError(f"line {line}: partial '{inner}' takes a name only")
        return _Tag("partial", name, "", line)
    if sigil == "^":
        if inner.strip() != "^":
            raise TemplateError(f"line {line}: inverse blocks ('{{{{^…}}}}') are not supported")
        return _Tag("else", "", "", line)
    if inner == "else":
        return _Tag("else", "", "", line)
    if inner.startswith("else "):
        helper, _, arg = inner[5:].strip().partition(" ")
        if helper not in ("if", "unless") or not arg.strip():
            raise TemplateError(f"line {line}: '{{{{else {helper}}}}}' is not supported")
        return _Tag("else", helper, _check_path(arg.strip(), line), line)
    if sigil == "&":
        return _Tag("var", "", _check_path(inner[1:].strip(), line), line)
    return _Tag("var", "", _check_path(inner, line), line)


def _check_path(path: str, line: int) -> str:
    if " " in path or not _PATH.match(path):
        first = path.split()[0] if path.split() else path
        raise TemplateError(
            f"line {line}: '{path}' is not a variable (helper '{first}' is not supported)"
        )
    return path


def parse(source: str) -> Template:
    """The template's tree; TemplateError for a syntax SES would refuse or mailroom lacks."""
    if not isinstance(source, str):
        raise TemplateError("a template is text")
    if len(source) > MAX_TEMPLATE:
        raise TemplateError(f"template longer than {MAX_TEMPLATE} characters")
    items = _scan(source)
    partials: dict[str, list[Node]] = {}
    nodes, pos, closer = _parse_until(items, 0, None, partials, 0)
    if closer is not None:  # pragma: no cover -- only blocks return on a closer
        raise TemplateError(f"line {closer.line}: unexpected '{{{{/{closer.name}}}}}'")
    del pos
    return Template(nodes, partials)


def _parse_until(
    items: Sequence[str | _Tag],
    pos: int,
    opened: _Tag | None,
    partials: dict[str, list[Node]],
    depth: int,
) -> tuple[list[Node], int, _Tag | None]:
    """Nodes from ``pos`` up to the ``else`` or close tag ending ``opened`` (returned with
    the position after it), or to the end of the template when ``opened`` is None."""
    if depth > MAX_NESTING:
        raise TemplateError(f"blocks nested deeper than {MAX_NESTING}")
    nodes: list[Node] = []
    while pos < len(items):
        item = items[pos]
        pos += 1
        if isinstance(item, str):
            nodes.append(item)
        elif item.kind == "var":
            nodes.append(Var(item.arg))
        elif item.kind == "partial":
            nodes.append(Partial(item.name))
        elif item.kind == "open":
            block, pos = _parse_block(items, pos, item, partials, depth + 1)
            nodes.append(block)
        elif item.kind == "inline":
            body, pos, end = _parse_until(items, pos, item, partials, depth + 1)
            if end is None or end.kind != "close" or end.name != "inline":
                raise TemplateError(f"line {item.line}: '{{{{#*inline}}}}' is never closed")
            partials[item.name] = body
        elif opened is None:
            what = "{{else}}" if item.kind == "else" else f"{{{{/{item.name}}}}}"
            raise TemplateError(f"line {item.line}: '{what}' closes no block")
        else:
            return nodes, pos, item
    if opened is not None:
        shown = "*inline" if opened.kind == "inline" else opened.name
        raise TemplateError(f"line {opened.line}: '{{{{#{shown}}}}}' is never closed")
    return nodes, pos, None


def _parse_block(
    items: Sequence[str | _Tag], pos: int, tag: _Tag, partials: dict[str, list[Node]], depth: int
) -> tuple[Block, int]:
    block = Block(tag.name, tag.arg)
    body, pos, end = _parse_until(items, pos, tag, partials, depth)
    block.body = body
    assert end is not None  # _parse_until raised otherwise
    if end.kind == "else" and end.name:  # {{else if x}}: the rest is a nested block
        if tag.name not in ("if", "unless"):
            raise TemplateError(f"line {end.line}: '{{{{else {end.name}}}}}' inside #{tag.name}")
        chained = _Tag("open", end.name, end.arg, end.line)
        inner, pos = _parse_block(items, pos, chained, partials, depth + 1)
        block.inverse = [inner]
        return block, pos  # the chained block consumed the close tag
    if end.kind == "else":
        block.inverse, pos, end = _parse_until(items, pos, tag, partials, depth)
        assert end is not None
        if end.kind == "else":
            raise TemplateError(f"line {end.line}: a second '{{{{else}}}}' in one block")
    if end.kind != "close" or end.name != tag.name:
        raise TemplateError(
            f"line {end.line}: '{{{{/{end.name}}}}}' closes '{{{{#{tag.name}}}}}' "
            f"(opened on line {tag.line})"
        )
    return block, pos


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
        pairs = list(value.items())
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


def _lookup(path: str, stack: list[_Frame], run: _Run) -> Any:
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


def _scalar(value: Any) -> str:
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
