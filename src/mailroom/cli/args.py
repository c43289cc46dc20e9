"""What every command's parser shares: the help layout with examples and exit codes, the
option groups several commands take (``--dsn``, ``--queue``, ``--reveal``, ``--json``),
and argument types that answer bad values in the operator's words ("'abc' is not a
message id"), never Python's ("invalid literal for int()"). Used by every command module
of cli/. The types the layers below take too (parse_id, positive, when) are in
mailroom.text."""

from __future__ import annotations

import argparse
import functools
import re
import textwrap
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from mailroom.operator.pages import parse_cursor
from mailroom.text import parse_id

EXIT_CODES = """
exit codes: 0 ok; 1 the answer is "no"; 2 bad usage or configuration;
3 database unreachable, not migrated (run `mailroom migrate`) or access refused
"""
OPERATOR_EXIT_CODES = EXIT_CODES + "(these commands need the mailroom_operator role)\n"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``mailroom status: argument
    --watch: ...``), exit 2: no usage block, a hostile value shortened and escaped so that
    10 KB or a control character cannot flood or rewrite the operator's terminal."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see `{self.prog} --help`)\n")


QUOTED = re.compile(r"""'((?:[^'\\]|\\.){60})(?:[^'\\]|\\.)+'""")


def one_line(message: str) -> str:
    """A message from argparse as one printable line: a quoted value longer than 60
    characters is cut (argparse quotes the value it refuses), then anything unprintable
    escaped, then the whole at most 400 characters."""
    text = QUOTED.sub(lambda m: f"'{m[1]}...'", message)
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= 400 else text[:400] + "..."


def command(
    sub: Any,
    name: str,
    summary: str,
    *,
    description: str,
    examples: str,
    parents: Sequence[argparse.ArgumentParser] = (),
    exit_codes: str = EXIT_CODES,
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its examples and the exit codes; it takes
    --dsn after its name as the top parser does before it (one value, whichever is last)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 88),
        epilog="examples:\n" + examples + exit_codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[dsn(), *parents],
    )
    return parser


@functools.cache
def dsn() -> argparse.ArgumentParser:
    """--dsn: every command takes it after its name, as before it (SUPPRESS: an absent
    one leaves the top parser's value alone)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--dsn", default=argparse.SUPPRESS, metavar="URL",
        help="database URL (overrides MAILROOM_DATABASE_URL), before or after the command",
    )  # fmt: skip
    return parent


@functools.cache
def queue_acted_on() -> argparse.ArgumentParser:
    """--queue of the commands that work on one queue (status, send-test, dead *)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--queue", metavar="NAME", type=queue_name,
        help="the queue to act on (default MAILROOM_QUEUE_NAME)",
    )  # fmt: skip
    return parent


@functools.cache
def queue_filter() -> argparse.ArgumentParser:
    """--queue of the commands that cover every queue unless told (find, stats, queues)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--queue", metavar="NAME", type=queue_name,
        help="only this queue (default: every queue, whatever MAILROOM_QUEUE_NAME says)",
    )  # fmt: skip
    return parent


class _Refused(argparse.Action):
    """An option a command does not take, refused with the reason (its help is hidden)."""

    def __init__(self, option_strings: Any, dest: str, *, reason: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.reason = reason

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error(f"{option} does not apply: {self.reason}")


def refuse_queue(parser: argparse.ArgumentParser, reason: str) -> None:
    """``--queue`` given to a command it means nothing to: exit 2 naming why, rather than
    silently ignored (an operator would believe the command was limited to the queue)."""
    parser.add_argument("--queue", action=_Refused, reason=reason)


def queue_name(text: str) -> str:
    name = text.strip()
    if not 1 <= len(name) <= 63:
        raise argparse.ArgumentTypeError(f"a queue name is 1 to 63 characters, got {_shown(text)}")
    return name


@functools.cache
def revealing() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--reveal", action="store_true", help="show addresses unmasked")
    return parent


@functools.cache
def as_json() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true",
        help="one JSON document on stdout (errors still on stderr, same exit codes)",
    )  # fmt: skip
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


def page_cursor(value: str) -> tuple[datetime, int]:
    """argparse type: a keyset cursor as the last page printed it (`more: --cursor
    TIME_N`: `dead list`, `suppression list`)."""
    parsed = parse_cursor(value.strip())
    if parsed is None:
        shown = ascii(value[:60]) + ("..." if len(value) > 60 else "")
        raise argparse.ArgumentTypeError(
            f"{shown}: not a cursor; give the one the previous page printed (more: --cursor ...)"
        )
    return parsed
