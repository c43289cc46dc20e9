"""CLI consistency leftovers: `mailroom config --json`, and bad numbers for `send-test
--timeout` and `token sign --ttl` answered in the operator's words (exit 2), not Python's."""

from __future__ import annotations

import json

import pytest

from mailroom.config import variables
from test_admin import mailroom_cli

KEY = "ab" * 32
DSN = "postgresql://oncall:hunter2-secret@db.internal:5432/app"
PYTHON_WORDS = ("invalid float value", "invalid int value", "could not convert", "Traceback")


def test_config_json_prints_every_setting_with_secrets_redacted() -> None:
    result = mailroom_cli("config", "--json", env={
        "MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY": KEY,
        "MAILROOM_RETENTION_EVENTS": "90d", "MAILROOM_DEBUG": "yes",
    })  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == [s.variable for s in variables.SETTINGS]
    assert document["MAILROOM_DATABASE_URL"] == "postgresql://oncall:***@db.internal:5432/app"
    assert document["MAILROOM_SECRET_KEY"] == "(set: 1 key(s))"
    assert document["MAILROOM_RETENTION_EVENTS"] == str(90 * 86400 * 1000)
    assert document["MAILROOM_DEBUG"] == "true"
    assert "hunter2" not in result.stdout
    assert KEY not in result.stdout
    # the same values as the table
    table = mailroom_cli("config", env={"MAILROOM_DATABASE_URL": DSN}).stdout
    first = table.splitlines()[0].split(None, 1)
    assert first == ["MAILROOM_DATABASE_URL", document["MAILROOM_DATABASE_URL"]]


def test_config_json_with_bad_settings_exits_2_one_line_each() -> None:
    result = mailroom_cli("config", "--json", env={
        "MAILROOM_DATABASE_URL": DSN, "MAILROOM_RETENTION_EVENTS": "1h",
        "MAILROOM_BATCH_LIMIT": "x",
    })  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert any(line.startswith("mailroom: MAILROOM_RETENTION_EVENTS: ") for line in lines)
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf", "", "1e999"])
def test_send_test_timeout_is_refused_in_the_operators_words(value: str) -> None:
    result = mailroom_cli("send-test", "--to", "a@example.com", "--wait", "--timeout", value,
                          env={"MAILROOM_DATABASE_URL": DSN})  # fmt: skip
    assert result.returncode == 2
    assert (
        f"argument --timeout: must be a number of seconds above 0 and at most 86400, got {value!r}"
        in result.stderr
    )
    assert not any(words in result.stderr for words in PYTHON_WORDS)


def test_send_test_timeout_takes_fractions() -> None:
    # parsed, then the database is unreachable (exit 3): the value itself was accepted
    unreachable = {"MAILROOM_DATABASE_URL": "postgresql://x@127.0.0.1:1/db"}
    result = mailroom_cli("send-test", "--to", "a@example.com", "--timeout", "0.5", env=unreachable)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the database" in result.stderr


@pytest.mark.parametrize("value", ["abc", "-5", "0", "1.5", ""])
def test_token_sign_ttl_is_refused_in_the_operators_words(value: str) -> None:
    result = mailroom_cli("token", "sign", "--action", "activation", "--v1", "--ttl", value,
                          env={"MAILROOM_SECRET_KEY": KEY})  # fmt: skip
    assert result.returncode == 2
    assert f"argument --ttl: must be a whole number from 1 to 2147483647, got {value!r}" in (
        result.stderr
    )
    assert not any(words in result.stderr for words in PYTHON_WORDS)


def test_token_sign_ttl_binds_the_expiry() -> None:
    result = mailroom_cli("token", "sign", "--action", "activation", "--v1", "--ttl", "60",
                          env={"MAILROOM_SECRET_KEY": KEY})  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    verified = mailroom_cli("token", "verify", token, "--action", "activation",
                            env={"MAILROOM_SECRET_KEY": KEY})  # fmt: skip
    assert verified.stdout.startswith("valid"), verified.stdout
