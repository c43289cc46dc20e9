"""`mailroom run` refusing to start writes its refusal into the log it was asked for
(issue 19, finding 8): in a JSON log, one JSON line per problem, not plain text."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailroom", "run"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def test_a_role_lacking_a_privilege_is_refused_in_one_json_line(
    daemon_env: dict[str, str], login_as: Any
) -> None:
    # the operator's role may not write outcomes the way the daemon does: exit 3 at start
    env = {**daemon_env, "MAILROOM_DATABASE_URL": login_as("mailroom_operator")}
    result = run(env)
    assert result.returncode == 3, result.stderr
    failed = [e for e in json_lines(result.stderr) if e["event"] == "startup_failed"]
    assert len(failed) == 1, result.stderr
    assert failed[0]["level"] == "error"
    assert failed[0]["exit_code"] == 3
    assert "lacks" in failed[0]["detail"]
    assert "mailroom_daemon" in failed[0]["detail"]


def test_an_unmigrated_schema_is_refused_in_json(daemon_env: dict[str, str], conn: Any) -> None:
    # a schema older than this daemon: a migration it needs is not recorded as applied
    conn.execute("DELETE FROM mailroom.schema_migrations WHERE version = 23")
    result = run(daemon_env)
    assert result.returncode == 3, result.stderr
    [failed] = [e for e in json_lines(result.stderr) if e["event"] == "startup_failed"]
    assert "mailroom migrate" in failed["detail"]


def test_bad_settings_are_one_json_line_each(daemon_env: dict[str, str]) -> None:
    env = {**daemon_env, "MAILROOM_BATCH_LIMIT": "lots", "MAILROOM_LOG_LEVEL": "loud"}
    result = run(env)
    assert result.returncode == 2, result.stderr
    failed = json_lines(result.stderr)
    assert [e["event"] for e in failed] == ["startup_failed", "startup_failed"], failed
    assert {e["detail"].split(":")[0] for e in failed} == {
        "MAILROOM_BATCH_LIMIT",
        "MAILROOM_LOG_LEVEL",
    }


def test_a_console_log_keeps_the_plain_message(daemon_env: dict[str, str], login_as: Any) -> None:
    env = {
        **daemon_env,
        "MAILROOM_LOG_FORMAT": "console",
        "MAILROOM_DATABASE_URL": login_as("mailroom_operator"),
    }
    result = run(env)
    assert result.returncode == 3
    assert result.stderr.startswith("mailroom: role ")
