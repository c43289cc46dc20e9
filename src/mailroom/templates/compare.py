"""What `mailroom templates push` would change in SES, and `diff` shows. Pure."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailroom.templates.files import Template

CREATE, UPDATE, SAME, REMOTE_ONLY = "create", "update", "same", "remote-only"
PARTS = ("subject", "html", "text")


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    action: str  # create | update | same | remote-only
    parts: tuple[str, ...] = ()  # the parts that differ
    diff: list[str] = field(default_factory=list)  # unified diff, SES (-) to files (+)

    @property
    def pushes(self) -> bool:
        """A push would write this template."""
        return self.action in (CREATE, UPDATE)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "action": self.action,
            "parts": list(self.parts),
            "diff": self.diff,
        }


def _lines(text: str | None) -> list[str]:
    return (
        []
        if text is None
        else (text + "\n" if not text.endswith("\n") else text).splitlines(keepends=True)
    )


def change(name: str, local: Template | None, remote: Template | None) -> Change:
    if local is None:
        return Change(name, REMOTE_ONLY)
    differ = tuple(p for p in PARTS if local.parts()[p] != (remote.parts()[p] if remote else None))
    if remote is not None and not differ:
        return Change(name, SAME)
    diff: list[str] = []
    for part in differ:
        before = remote.parts()[part] if remote is not None else None
        diff += [
            line.rstrip("\n")
            for line in difflib.unified_diff(
                _lines(before),
                _lines(local.parts()[part]),
                fromfile=f"ses/{name}/{part}",
                tofile=f"files/{name}/{part}",
                lineterm="\n",
            )
        ]
        if (
            before is not None
            and local.parts()[part] is not None
            and _lines(before) == _lines(local.parts()[part])
        ):
            diff.append(f"  ({part}: only the final newline differs)")
    return Change(name, CREATE if remote is None else UPDATE, differ, diff)


def plan(local: Mapping[str, Template], remote: Mapping[str, Template | None]) -> list[Change]:
    """One change per template in either place, by name. ``remote`` maps a name to SES's
    copy or None (no such template in SES)."""
    every = sorted(set(local) | set(remote))
    return [change(n, local.get(n), remote.get(n)) for n in every]
