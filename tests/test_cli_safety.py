"""Every command under bad configuration, and under each database role.

Bad configuration: one line per problem naming the variable, no secret, exit 2 (the
systemd unit's "do not restart" code), whatever the command. Roles: each command connects
as mailroom_app, mailroom_daemon and mailroom_operator; it works where docs/operations.md
says it does and is refused elsewhere with exit 3 naming the missing privilege.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import mailroom
from mailroom.cli import commands as cli

PASSWORD = "hunter2-s3cret"
BAD_DSNS = {
    "no scheme": f"app:{PASSWORD}@db.example.com/app",
    "not a dsn": "not a dsn",
    "bad brackets": f"postgresql://app:{PASSWORD}@[::1/app",
    "bad sslmode in URL": f"postgresql://app:{PASSWORD}@db/app?sslmode=sometimes",
    "bad sslmode in key=value": f"host=db user=app password={PASSWORD} sslmode=sometimes",
    "unknown scheme": f"mysql://app:{PASSWORD}@db/app",
    "bad port": f"postgresql://app:{PASSWORD}@db:99999/app",
    "unbalanced quote": f"host=db password='{PASSWORD}",
    "unknown keyword": f"host=db pasword={PASSWORD}",
}
# Every command that reads MAILROOM_DATABASE_URL, with arguments that would otherwise run.
DSN_COMMANDS = {
    "migrate": ["migrate"],
    "run": ["run"],
    "config": ["config"],
    "status": ["status"],
    "show": ["show", "1"],
    "dead list": ["dead", "list"],
    "dead retry": ["dead", "retry", "1"],
    "dead purge": ["dead", "purge", "1", "--yes"],
    "send-test": ["send-test", "--to", "a@example.com"],
}


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The command in this process (fast), except `run`: it configures logging for the
    whole process, so it runs as a real process with this environment."""
    if "run" in args:
        result = subprocess.run(
            [sys.executable, "-m", "mailroom", *args],
            env=dict(os.environ), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return result.returncode, result.stdout, result.stderr
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("MAILROOM_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILROOM_DEBUG", "true")  # no AWS set-up needed by `run`
    monkeypatch.setenv("MAILROOM_SES_OUTPUT_PATH", str(tmp_path / "out"))
    monkeypatch.setenv("MAILROOM_HTTP_PORT", "0")
    # `run` without a terminal logs JSON, refusals included; these tests read the plain
    # "mailroom: " refusal (the JSON one: tests/test_startup_log.py)
    monkeypatch.setenv("MAILROOM_LOG_FORMAT", "console")
    return monkeypatch


@pytest.mark.parametrize("command", DSN_COMMANDS)
@pytest.mark.parametrize("case", BAD_DSNS)
@pytest.mark.parametrize("route", ["env", "--dsn before", "--dsn after"])
def test_a_malformed_database_url_is_one_line_without_the_password(
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    case: str,
    route: str,
) -> None:
    dsn, args = BAD_DSNS[case], DSN_COMMANDS[command]
    if route == "env":
        clean_env.setenv("MAILROOM_DATABASE_URL", dsn)
    elif route == "--dsn before":
        args = ["--dsn", dsn, *args]
    else:  # every command takes it after its name too (issue 22)
        args = (
            [*args[:1], "--dsn", dsn, *args[1:]]
            if args[0] != "dead"
            else [*args[:2], "--dsn", dsn, *args[2:]]
        )
    code, out, err = _main(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailroom: MAILROOM_DATABASE_URL: ")
    assert PASSWORD not in err + out
    assert "Traceback" not in err


def test_the_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "AWS_"))}
    for dsn in BAD_DSNS.values():
        result = subprocess.run(
            [sys.executable, "-m", "mailroom", "status"],
            env={**base, "MAILROOM_DATABASE_URL": dsn},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert PASSWORD not in result.stderr + result.stdout


def test_config_does_not_print_the_password_of_a_url_without_a_scheme(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("MAILROOM_DATABASE_URL", BAD_DSNS["no scheme"])
    code, out, err = _main(["config"], capsys)
    assert code == 2
    assert PASSWORD not in out + err


@pytest.mark.parametrize("path", ["/proc/mailroom-output", "/etc/hostname/output", "/dev/null/x"])
def test_an_unwritable_debug_output_path_exits_2_before_touching_the_database(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    # the database URL points nowhere: configuration is checked first
    clean_env.setenv("MAILROOM_DATABASE_URL", f"postgresql://app:{PASSWORD}@127.0.0.1:1/app")
    clean_env.setenv("MAILROOM_SES_OUTPUT_PATH", path)
    code, out, err = _main(["run"], capsys)
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("mailroom: MAILROOM_SES_OUTPUT_PATH: cannot write to ")
    assert PASSWORD not in out + err


def test_several_problems_are_one_line_each(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("MAILROOM_DATABASE_URL", BAD_DSNS["bad brackets"])
    clean_env.setenv("MAILROOM_BATCH_LIMIT", "lots")
    code, _, err = _main(["status"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("mailroom: MAILROOM_") for line in lines)


# -- each command as each role ---------------------------------------------------------

# 0: allowed; 3: refused with a message naming what is missing.
EXPECTED = {
    #                 app  daemon  operator
    "status": (3, 0, 0),
    "show": (3, 3, 0),  # the event history is the operator's to read
    "dead list": (3, 3, 0),
    "dead retry": (3, 3, 0),
    "dead purge": (3, 3, 0),
    "send-test": (3, 3, 0),
    "migrate": (3, 3, 3),
    "run": (3, None, 3),  # the daemon role runs it: tests/test_roles.py, as a real process
}
ROLES = ("mailroom_app", "mailroom_daemon", "mailroom_operator")


@pytest.mark.parametrize("command", EXPECTED)
@pytest.mark.parametrize("role", ROLES)
def test_each_command_as_each_role(  # noqa: PLR0917 -- pytest passes fixtures positionally
    conn: psycopg.Connection[Any],
    login_as: Callable[..., str],
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    role: str,
) -> None:
    expected = EXPECTED[command][ROLES.index(role)]
    if expected is None:
        pytest.skip("covered by a real daemon process in tests/test_roles.py")
    dead = mailroom.enqueue(conn, "a@example.com", subject="S", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'dead', last_error = 'MessageRejected: x'"
        " WHERE id = %s",
        [dead],
    )
    args = [part.replace("1", str(dead)) if part == "1" else part for part in DSN_COMMANDS[command]]
    code, _, err = _main(["--dsn", login_as(role), *args], capsys)
    assert code == expected, err
    after = conn.execute("SELECT status FROM mailroom.outbox WHERE id = %s", [dead]).fetchone()
    if expected == 3:
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert "permission denied for" in err or " lacks" in err, err
        assert "needs" in err or "grant it" in err or "member of" in err, err
        assert after == ("dead",)  # nothing was done
    elif command == "dead retry":
        assert after == ("pending",)
    elif command == "dead purge":
        assert after is None
