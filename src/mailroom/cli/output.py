"""What the operator commands share at a terminal: whether addresses are revealed, the
confirmation prompt and the progress line. The pure formatting and parsing they use is
in mailroom.text, which the daemon and the console share. No database access here."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from mailroom.config.settings import Config
from mailroom.text import CommandError


def revealed(args: argparse.Namespace, cfg: Config) -> bool:
    return bool(getattr(args, "reveal", False)) or cfg.reveal_addresses


def confirm(question: str, *, yes: bool, what: str) -> bool:
    """True to go ahead: ``--yes``, or "y" at the prompt on a terminal. Without a terminal
    and without --yes this is a usage error (a script must say it on purpose)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CommandError(f"refusing to {what} without --yes (stdin is no terminal)")
    # the question on stderr: stdout carries the answer only (one JSON document with --json)
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return input().strip().lower() in ("y", "yes")


class Progress:
    """``retried 1500/3000`` on stderr, rewritten in place, only on a terminal."""

    def __init__(self, verb: str, total: int, stream: TextIO | None = None) -> None:
        self.verb, self.total = verb, total
        self.stream = stream or sys.stderr
        self.shown = self.stream.isatty()

    def update(self, done: int) -> None:
        if self.shown:
            self.stream.write(f"\r{self.verb} {done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
