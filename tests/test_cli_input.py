"""Hostile operator input: every value the command line takes is checked before it reaches
the database or the clock, and answered with one line naming it (exit 2), never with a
traceback. Each case below was a traceback or an out-of-range error from PostgreSQL
before its check existed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mailroom.cli import commands as cli

HUGE = "9" * 20
HOSTILE = [
    (["find", "--limit", HUGE], "--limit"),
    (["find", "--limit", "+5"], "--limit"),
    (["find", "--limit", "1_000"], "--limit"),
    (["find", "--limit", "٣"], "--limit"),
    (["dead", "list", "--limit", "0"], "--limit"),
    (["find", "--since", "99999999d"], "--since"),
    (["stats", "--since", "9999999999999999999999w"], "--since"),
    (["find", "--before", "0001-01-01"], "--before"),
    (["find", "--before", "9999-12-31T23:59:59+14:00"], "--before"),
    (["find", "--since", "nan"], "--since"),
    (["status", "--watch", "nan"], "--watch"),
    (["status", "--watch", "inf"], "--watch"),
    (["status", "--watch", "1e308"], "--watch"),
    (["status", "--watch", "abc"], "--watch"),
    (["status", "--watch", "0"], "--watch"),
    (["send-test", "--to", "a@b.co", "--wait", "--timeout", "nan"], "--timeout"),
    (["web", "--port", "99999"], "--port"),
    (["web", "--port", " 80"], "--port"),
    (["web", "--port", "-1"], "--port"),
    (["token", "sign", "--action", "activation", "--ttl", HUGE], "--ttl"),
    (["show", "٣"], "id"),
    (["suppression", "list", "--limit", "-3"], "--limit"),
]


@pytest.mark.parametrize(("argv", "named"), HOSTILE, ids=lambda v: " ".join(v)[:40])
def test_out_of_range_arguments_are_one_line_errors(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no database: every one of these must be refused before a connection is needed
    monkeypatch.setenv("MAILROOM_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(argv) == 2  # argparse's exit, returned by main() (in-process callers)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line: no usage block
    assert named in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_arguments_that_are_not_utf8_are_refused_by_position(db: str) -> None:
    # what a shell passes for a value pasted in another encoding: Python decodes it to lone
    # surrogates, which psycopg cannot send (it raised UnicodeEncodeError in `find --key`)
    env = {**os.environ, "MAILROOM_DATABASE_URL": db}
    for args in ([b"find", b"--key", b"\xed\xa0\x80"], [b"find", b"--to", b"\xff@example.com"]):
        done = subprocess.run(
            [sys.executable.encode(), b"-m", b"mailroom", *args],
            check=False, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == "mailroom: argument 3 is not valid UTF-8 text"


def test_the_bounds_still_take_the_largest_sensible_values() -> None:
    from mailroom.cli import args as cli_args  # noqa: PLC0415 -- the pure parts, no database
    from mailroom.text import positive, when  # noqa: PLC0415

    assert positive("2147483647") == 2**31 - 1
    assert cli_args.seconds("86400") == 86400.0
    assert cli_args.port("0") == 0
    assert cli_args.port("65535") == 65535
    assert when("36500d").year >= 1900
    assert when("2024-05-01T03:00Z").year == 2024


@pytest.mark.parametrize("address", ["@", "a@", "@b", "a\nb@c.de", "a@b.co,c@d.ef", "x" * 400])
def test_suppression_list_names_a_bad_address(
    address: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILROOM_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert cli.main(["suppression", "list", "--address", address]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "argument --address" in line
