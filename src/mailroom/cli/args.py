"""What every command's parser shares: the help layout with examples and exit codes, the
option groups several commands take (``--dsn``, ``--queue``, ``--reveal``, ``--json``),
and argument types that answer bad values in the operator's words ("'abc' is not a
message id"), never Python's ("invalid literal for int()"). Used by every command module
of cli/. The types the layers below take too (parse_id, positive, when) are in
mailroom.text."""

from __future__ import annotations

import argparse
import functools
import textwrap
from typing import Any

from mailroom.text import parse_id

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


@functools.cache
def database() -> argparse.ArgumentParser:
    """--dsn and --queue, for the commands that connect."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--dsn", default=argparse.SUPPRESS, help="database URL (overrides MAILROOM_DATABASE_URL)"
    )
    parent.add_argument("--queue", help="queue (default MAILROOM_QUEUE_NAME)")
    return parent


@functools.cache
def revealing() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--reveal", action="store_true", help="show addresses unmasked")
    return parent


@functools.cache
def as_json() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="machine-readable output")
    return parent


SECONDS_MAX = 86400.0  # a wait or a refresh longer than a day is a typo


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= SECONDS_MAX:  # NaN and inf fail this too
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds above 0 and at most {SECONDS_MAX:g}, got {_shown(text)}"
        )
    return value


def port(text: str) -> int:
    value = parse_id(text) if text != "0" else 0
    if value is None or value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {_shown(text)}")
    return value


def message_id(text: str) -> int:
    value = parse_id(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a message id (a positive number)")
    return value


def text_arguments(argv: list[str]) -> str | None:
    """The problem with the command line, if any of its arguments is not text. A file name
    or a pasted value in another encoding arrives as lone surrogates (Python's
    surrogateescape), which no query parameter, log line or terminal can carry."""
    for position, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return f"argument {position} is not valid UTF-8 text"
    return None
