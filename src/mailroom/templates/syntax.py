"""Handlebars templates as SES takes them, parsed into a tree (mailroom.templates.handlebars
renders it): the tags SES documents and their errors, with line numbers. Pure.

A template longer than MAX_TEMPLATE or nested deeper than MAX_NESTING is refused, so a
hostile one cannot make the parser (or the renderer after it) recurse without bound.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

MAX_TEMPLATE = 512 * 1024  # characters; SES stores at most 500 KB per template
MAX_NESTING = 24  # blocks inside blocks


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


def _scan(source: str) -> list[str | _Tag]:  # noqa: PLR0912 -- one branch per kind of tag
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


def _classify(inner: str, line: int) -> _Tag:  # noqa: PLR0911, PLR0912 -- one per sigil
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
        first = path.split(maxsplit=1)[0] if path.split() else path
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
    items: Sequence[str | _Tag],
    pos: int,
    tag: _Tag,
    partials: dict[str, list[Node]],
    depth: int,
    *,
    opener: _Tag | None = None,
) -> tuple[Block, int]:
    """A block from after its open tag; ``opener``: the block an ``{{else if}}`` chain
    started with, whose close tag ends the chain."""
    opener = opener or tag
    block = Block(tag.name, tag.arg)
    body, pos, end = _parse_until(items, pos, tag, partials, depth)
    block.body = body
    if end is None:  # pragma: no cover -- _parse_until raises for an unclosed block
        raise TemplateError(f"line {tag.line}: '{{{{#{tag.name}}}}}' is never closed")
    if end.kind == "else" and end.name:  # {{else if x}}: the rest is a nested block
        if tag.name not in ("if", "unless"):
            raise TemplateError(f"line {end.line}: '{{{{else {end.name}}}}}' inside #{tag.name}")
        chained = _Tag("open", end.name, end.arg, end.line)
        inner, pos = _parse_block(items, pos, chained, partials, depth + 1, opener=opener)
        block.inverse = [inner]
        return block, pos  # the chained block consumed the close tag
    if end.kind == "else":
        block.inverse, pos, end = _parse_until(items, pos, tag, partials, depth)
        if end is None:  # pragma: no cover -- as above
            raise TemplateError(f"line {tag.line}: '{{{{#{tag.name}}}}}' is never closed")
        if end.kind == "else":
            raise TemplateError(f"line {end.line}: a second '{{{{else}}}}' in one block")
    if end.kind != "close" or end.name != opener.name:
        raise TemplateError(
            f"line {end.line}: '{{{{/{end.name}}}}}' closes '{{{{#{opener.name}}}}}' "
            f"(opened on line {opener.line})"
        )
    return block, pos
