"""What every command's parser shares: the help layout with examples and exit codes, and
argument types that answer bad values in the operator's words ("'abc' is not a message
id"), never Python's ("invalid literal for int()"). Used by cli.py and cli_ops.py."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

EXIT_CODES = """
exit codes: 0 ok; 1 the answer is "no"; 2 bad usage or configuration;
3 database unreachable, not migrated (run `mailroom migrate`) or access refused
"""
OPERATOR_EXIT_CODES = EXIT_CODES + "(these commands need the mailroom_operator role)\n"


def command(
    sub: Any,
    name: str,
    summary: str,
    *,
    description: str,
    examples: str,
    parents: list[Any],
    exit_codes: str = EXIT_CODES,
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its examples and the exit codes."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog="examples:\n" + examples + exit_codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=parents,
    )
    return parser


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


BIGINT_MAX = 2**63 - 1


def parse_id(text: str) -> int | None:
    """A message id (1 to the largest bigint) written in ASCII digits, or None. int()
    alone takes "٣", " 7", "+7" and "1_000", and a bigger number fails in the
    database instead of here."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= BIGINT_MAX else None


def message_id(text: str) -> int:
    value = parse_id(text)
    if value is None:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise argparse.ArgumentTypeError(f"{shown!r} is not a message id (a positive number)")
    return value


def when(text: str) -> Any:
    """--since / --before: an age (30m, 12h, 7d) or an ISO time."""
    from mailroom.admin_output import when as parse  # noqa: PLC0415 -- only when used

    return parse(text)
