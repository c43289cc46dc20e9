"""The package's import contract (issue 20): every import in src/mailroom points down or
sideways in the layer order below, which the package docstrings state in words; an
upward import fails here unless it is one of the known ones still to be cut."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Lower layers first. A module may import its own folder, its layer and the layers below.
# A folder (config, daemon, ...) is one unit; a top-level module is a unit of its own.
LAYERS: list[set[str]] = [
    {"addresses", "logs", "metrics", "embedded", "config"},
    {"health", "tokens", "outbox", "migrate"},
    {"client", "lifecycle", "django", "__init__"},
    {"transports", "events"},
    {"daemon"},
    {"operator"},
    {"web", "demo"},
    {"cli"},
    {"__main__"},
]
RANK = {unit: n for n, layer in enumerate(LAYERS) for unit in layer}

# Upward imports that exist today, each to be cut by a later step of issue 20. The test
# fails when one disappears too, so that this list only shrinks.
KNOWN = {
    ("daemon", "cli"),  # presence formats with cli.output
    ("operator", "cli"),  # the verbs print through cli.output, take cli.args' types
    ("web", "cli"),  # the console takes cli.output and cli.args
}


def _unit(dotted: str) -> str:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mailroom":  # `from mailroom import x`: x is the module
                found += [f"mailroom.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
    return [name for name in found if name == "mailroom" or name.startswith("mailroom.")]


def upward(src: Path) -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> 'module imports name' for each upward import."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted((src / "mailroom").rglob("*.py")):
        here = _module(path, src)
        unit = _unit(here)
        for name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            there = _unit(name)
            if there == unit or name == "mailroom":
                continue
            if there not in RANK or unit not in RANK:
                out.setdefault((unit, there), []).append(f"{here} imports {name} (no layer)")
            elif RANK[there] > RANK[unit]:
                out.setdefault((unit, there), []).append(f"{here} imports {name}")
    return out


def test_every_unit_has_a_layer() -> None:
    units = {_unit(_module(p, SRC)) for p in (SRC / "mailroom").rglob("*.py")}
    assert units - set(RANK) == set(), "add the new module or folder to LAYERS"


def test_imports_point_down_or_sideways() -> None:
    found = upward(SRC)
    new = {pair: where for pair, where in found.items() if pair not in KNOWN}
    assert new == {}, "upward imports (see the package docstrings)"
    assert set(found) == KNOWN, "a known upward import is gone: remove it from KNOWN"


@pytest.mark.parametrize(
    ("path", "code", "pair"),
    [
        ("mailroom/config/bad.py", "from mailroom.web import app\n", ("config", "web")),
        ("mailroom/daemon/bad.py", "import mailroom.operator.admin\n", ("daemon", "operator")),
        ("mailroom/outbox.py", "from mailroom import client\n", ("outbox", "client")),
        (
            "mailroom/events/bad.py",
            "def f() -> None:\n    from mailroom.cli import commands\n",
            ("events", "cli"),
        ),
    ],
)
def test_a_deliberate_upward_import_fails(
    tmp_path: Path, path: str, code: str, pair: tuple[str, str]
) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(code, encoding="utf-8")
    assert upward(tmp_path) == {pair: [f"{_module(target, tmp_path)} imports " + _name(code)]}


def test_down_and_sideways_imports_pass(tmp_path: Path) -> None:
    target = tmp_path / "mailroom" / "cli" / "fine.py"
    target.parent.mkdir(parents=True)
    target.write_text(
        "from mailroom import outbox\nfrom mailroom.web import app\nfrom mailroom.cli import ops\n",
        encoding="utf-8",
    )
    assert upward(tmp_path) == {}


def _name(code: str) -> str:
    return _imports(ast.parse(code))[0]
