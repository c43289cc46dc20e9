"""No secret leaks: a run with failures and successes, then every log line, metric, health
body, stored error and CLI output is searched for the key, tokens, raw token secrets and
the database password."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from conftest import all_final, wait_for
from mailroom import migrate
from mailroom.embedded import free_port
from sesv2_standin import SesStandin

KEY = "c0ffee" * 10 + "c0ff"
PASSWORD = "hunter2-Sup3rSecret"  # the test server trusts local users, so any password works


def _run(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "mailroom", *args], env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return result.stdout + result.stderr


def test_nothing_secret_in_logs_metrics_errors_or_cli(
    conn: psycopg.Connection[Any], db: str, standin: SesStandin, spawn: Any, tmp_path: Path
) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    dsn = make_conninfo(db, password=PASSWORD)
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    port = free_port()
    standin.inject("throttle", 2)  # failures: retried...
    standin.fail_address("bounce@", "message_rejected")  # ...and dead
    for login in ("ann", "bob", "bounce"):
        conn.execute("INSERT INTO mailroom.accounts (login, email) VALUES (%s, %s)",
                     [login, f"{login}@example.com"])  # fmt: skip
    # the raw secrets exist only while their emails are pending (lifecycle 1003)
    secrets = [
        bytes(s).hex() for (s,) in conn.execute("SELECT secret FROM mailroom.message_tokens")
    ]
    daemon = spawn(
        MAILROOM_DATABASE_URL=dsn, MAILROOM_SECRET_KEY_FILE=str(key_file),
        MAILROOM_HTTP_PORT=str(port), MAILROOM_LOG_LEVEL="debug",
    )  # fmt: skip
    wait_for(lambda: all_final(conn, 3), timeout=30)

    tokens = [m["template_data"]["secret"] for m in standin.sent()]
    assert len(secrets) == 3 and len(tokens) == 2  # noqa: PT018 -- the scenario ran
    forbidden = [KEY, PASSWORD, *secrets, *tokens]

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        metrics = r.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz") as r:
        ready = r.read().decode()
    stored = "\n".join(
        str(row) for row in conn.execute(
            "SELECT last_error, template_data FROM mailroom.outbox"
            " UNION ALL SELECT error, NULL FROM mailroom.attempts"
        )
    )  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")},
           "MAILROOM_DATABASE_URL": dsn, "MAILROOM_SECRET_KEY": KEY}  # fmt: skip
    cli = [
        _run("config", env=env),
        _run("--help", env=env),
        _run("run", "--help", env=env),
        _run("migrate", env={**env, "MAILROOM_DATABASE_URL": make_conninfo(dsn, port="1")}),
        _run("run", env={**env, "MAILROOM_BATCH_LIMIT": "x", "MAILROOM_SECRET_KEY": KEY[:-1]}),
    ]
    logs = daemon.log_path.read_text()
    assert "message_dead" in logs  # the failures happened and were logged
    assert "message_retry" in logs
    for name, text in [("logs", logs), ("metrics", metrics), ("readyz", ready),
                       ("stored errors", stored), *(("cli", c) for c in cli)]:  # fmt: skip
        for secret in forbidden:
            assert secret not in text, f"a secret appears in {name}"
    assert "cannot reach the database" in cli[3]
