"""The command line as an operator meets it: exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

KEY = "ab" * 32


def mailroom(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "mailroom", *args],
        env={**base, **(env or {})}, capture_output=True, text=True, timeout=60, cwd=cwd,
        check=False,
    )  # fmt: skip


def test_help_lists_commands_and_no_secrets() -> None:
    result = mailroom("--help", env={"MAILROOM_SECRET_KEY": KEY})
    assert result.returncode == 0
    for command in ("run", "migrate", "config", "demo", "token"):
        assert command in result.stdout
    assert KEY not in result.stdout


def test_bad_configuration_fails_fast_naming_each_variable() -> None:
    result = mailroom("run", env={
        "MAILROOM_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db",
        "MAILROOM_BATCH_LIMIT": "lots",
        "MAILROOM_HEALTHCHECK_INTERVAL": "-5",
        "MAILROOM_SECRET_KEY": "not-hex-" + KEY,
    })  # fmt: skip
    assert result.returncode == 2
    assert "MAILROOM_BATCH_LIMIT: " in result.stderr
    assert "'lots'" in result.stderr
    assert "MAILROOM_HEALTHCHECK_INTERVAL: " in result.stderr
    assert "MAILROOM_SECRET_KEY: " in result.stderr
    assert KEY not in result.stderr
    assert "hunter2" not in result.stderr


def test_missing_database_url_is_named() -> None:
    result = mailroom("run")
    assert result.returncode == 2
    assert "MAILROOM_DATABASE_URL: required" in result.stderr


def test_config_redacts_password_and_key(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    result = mailroom("config", env={
        "MAILROOM_DATABASE_URL": "postgresql://app:hunter2@db.example.com/app",
        "MAILROOM_SECRET_KEY_FILE": str(key_file),
        "MAILROOM_BATCH_LIMIT": "50",
    })  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "postgresql://app:***@db.example.com/app" in result.stdout
    assert "(set: 1 key(s))" in result.stdout
    assert "hunter2" not in result.stdout
    assert KEY not in result.stdout
    assert "MAILROOM_BATCH_LIMIT" in result.stdout
    assert "50" in result.stdout
    assert "MAILROOM_CHANNEL_NAME" in result.stdout
    assert "token_insert" in result.stdout


def test_unreachable_database_exit_3_with_redacted_dsn() -> None:
    result = mailroom(
        "migrate", env={"MAILROOM_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"}
    )
    assert result.returncode == 3
    assert "cannot reach the database" in result.stderr
    assert "hunter2" not in result.stderr


def test_run_refuses_an_unmigrated_database(pg_admin_dsn: str) -> None:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS cli_empty")
        admin.execute("CREATE DATABASE cli_empty")
    dsn = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname="cli_empty")
    try:
        # a complete configuration (region included): only the schema is missing
        result = mailroom("run", env={"MAILROOM_DATABASE_URL": dsn, "AWS_REGION": "eu-west-1"})
        assert result.returncode == 3
        assert "run `mailroom migrate`" in result.stderr
        migrated = mailroom("migrate", env={"MAILROOM_DATABASE_URL": dsn})
        assert migrated.returncode == 0
        assert "applied 0001_outbox" in migrated.stdout
        again = mailroom("migrate", env={"MAILROOM_DATABASE_URL": dsn})
        assert again.returncode == 0
        assert "schema up to date" in again.stdout
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS cli_empty WITH (FORCE)")


def test_demo_delivers_with_the_debug_transport(tmp_path: Path) -> None:
    # --json: the narration on stderr, what was done as one document on stdout
    result = mailroom("demo", "--output", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    assert "delivered  {'sent': 4}" in result.stderr
    assert "mailroom token verify" in result.stderr  # the signed activation token is shown
    document = json.loads(result.stdout)
    assert document["delivered"] == {"sent": 4}
    assert document["activation_token"] in result.stderr
    written = sorted((tmp_path / "out").glob("*.json"))
    assert len(written) == 4  # two bulk calls (two templates) and two SendEmail calls
    assert sorted(document["files"]) == [p.name for p in written]


def test_token_sign_and_verify_exit_codes() -> None:
    env = {"MAILROOM_SECRET_KEY": KEY}
    signed = mailroom("token", "sign", "--action", "activation", "--secret", "00" * 32, env=env)
    assert signed.returncode == 0, signed.stderr
    token = signed.stdout.strip()
    assert len(token) == 86
    ok = mailroom("token", "verify", token, "--action", "activation", env=env)
    assert ok.returncode == 0
    assert ok.stdout.startswith("valid")
    wrong = mailroom(
        "token", "verify", token, "--action", "password_recovery", "--code", "12345", env=env
    )
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("invalid")
