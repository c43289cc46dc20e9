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


def message_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message id (a positive number)")
    return value


def when(text: str) -> Any:
    """--since / --before: an age (30m, 12h, 7d) or an ISO time."""
    from mailroom.admin_output import when as parse  # noqa: PLC0415 -- only when used

    return parse(text)
