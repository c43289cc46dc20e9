"""Daemons visible in the database (mailroom.daemons, sql/0013): real daemon processes
write their rows, `mailroom status` (text and --json) shows them as the operator sees
them (debug mode loudly, pauses with their reason, stale rows of dead daemons), and each
role can do with the table exactly what it needs."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

import mailroom
from conftest import wait_for
from mailroom.config.settings import Config
from mailroom.daemon import presence
from mailroom.outbox import query
from sesv2_standin import SesStandin
from test_admin import mailroom_cli


def rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT * FROM mailroom.daemons ORDER BY worker")
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def status_json(dsn: str, *args: str) -> dict[str, Any]:
    result = mailroom_cli("status", "--json", *args, db=dsn)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture
def operator(login_as: Callable[..., str]) -> str:
    return login_as("mailroom_operator")


# -- pure logic --------------------------------------------------------------------------------


def test_the_endpoint_shown_carries_no_credentials_or_query() -> None:
    assert presence.public_endpoint("https://email.eu-west-1.amazonaws.com") == (
        "https://email.eu-west-1.amazonaws.com"
    )
    shown = presence.public_endpoint("https://AKIAX:s3cr3t@proxy.internal:8443/ses?token=abc#x")
    assert shown == "https://proxy.internal:8443/ses"
    assert presence.public_endpoint("http://[::1]:9000/") == "http://[::1]:9000/"
    assert presence.public_endpoint("") == "SES v2"  # a transport without a URL


def test_heartbeat_parameters_mask_the_pause_reason_and_bound_the_texts() -> None:
    cfg = Config(database_url="", worker_name="w" * 300, send_rate=-1.0)
    me = presence.Identity.of(cfg, endpoint="https://u:p@h/", version="1.2",
                              started_at=datetime.now(UTC))  # fmt: skip
    assert me.mode == "ses"
    assert me.transport == "https://h/"
    assert me.send_rate == "auto"
    params = presence.heartbeat_params(
        me, pause_seconds=-3.0, rate_in_force=None,
        pause_reason="MailFromDomainNotVerifiedException: alice@example.com " + "x" * 400,
    )  # fmt: skip
    assert params["pause_seconds"] == 0.0  # a past pause is no pause
    assert "alice@" not in params["pause_reason"]
    assert "a***@example.com" in params["pause_reason"]
    assert len(params["worker"]) == 200
    debug_cfg = Config(database_url="", debug=True, send_rate=5.0)
    debug = presence.Identity.of(debug_cfg, endpoint="", version="1", started_at=datetime.now(UTC))
    assert (debug.mode, debug.transport, debug.send_rate) == ("debug", "output", "5/s")


def test_the_summary_says_loudly_when_nothing_runs_and_what_a_debug_daemon_does() -> None:
    assert "NONE running" in presence.summary([], "q")[0]
    base = {"worker": "w:1", "queue": "q", "version": "1", "mode": "debug",
            "transport": "/srv/out", "seen_seconds_ago": 3.0, "stale": False, "paused": False,
            "pause_seconds_left": None, "pause_reason": None, "send_rate": "unlimited",
            "send_rate_in_force": None}  # fmt: skip
    lines = presence.summary([base], "q")
    assert lines[0] == "daemons: 1 running (1 in DEBUG MODE):"
    assert "DEBUG MODE: sends nothing (writes to /srv/out)" in lines[1]
    stale = {**base, "stale": True, "seen_seconds_ago": 400.0}
    assert "NONE running" in presence.summary([stale], "q")[0]
    assert "STALE: not seen for 6m 40s" in presence.summary([stale], "q")[1]


# -- real daemons ------------------------------------------------------------------------------


def test_a_debug_daemon_is_shown_loudly_and_leaves_on_a_clean_shutdown(
    spawn: Callable[..., Any], conn: psycopg.Connection[Any], operator: str, tmp_path: Path
) -> None:
    out = tmp_path / "debug-out"
    daemon = spawn(MAILROOM_DEBUG="true", MAILROOM_SES_OUTPUT_PATH=str(out),
                   MAILROOM_WORKER_NAME="dbg:1")  # fmt: skip
    daemon.wait_listening()
    wait_for(lambda: rows(conn))
    (row,) = rows(conn)
    assert (row["worker"], row["queue"], row["mode"]) == ("dbg:1", "user_action_queue", "debug")
    assert row["transport"] == str(out)
    assert row["paused_until"] is None
    assert row["send_rate"] == "unlimited"

    report = status_json(operator)
    (shown,) = report["daemons"]
    assert (shown["worker"], shown["mode"], shown["stale"], shown["paused"]) == (
        "dbg:1", "debug", False, False)  # fmt: skip
    assert shown["seen_seconds_ago"] < 60
    text = mailroom_cli("status", db=operator).stdout
    assert "daemons: 1 running (1 in DEBUG MODE):" in text
    assert f"DEBUG MODE: sends nothing (writes to {out})" in text

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert rows(conn) == []
    assert status_json(operator)["daemons"] == []
    assert (
        "daemons: NONE running for queue user_action_queue"
        in mailroom_cli("status", db=operator).stdout
    )


def test_a_killed_daemon_turns_stale_and_is_forgotten_a_day_later(
    spawn: Callable[..., Any], conn: psycopg.Connection[Any], operator: str
) -> None:
    dead = spawn(MAILROOM_WORKER_NAME="gone:1")
    dead.wait_listening()
    wait_for(lambda: rows(conn))
    dead.kill()  # SIGKILL: no goodbye
    assert [r["worker"] for r in rows(conn)] == ["gone:1"]
    conn.execute("UPDATE mailroom.daemons SET seen_at = now() - interval '5 minutes'")
    (shown,) = status_json(operator)["daemons"]
    assert shown["stale"] is True
    assert shown["seen_seconds_ago"] >= 300
    text = mailroom_cli("status", db=operator).stdout
    assert "STALE: not seen for 5m" in text
    assert "daemons: NONE running" in text

    conn.execute("UPDATE mailroom.daemons SET seen_at = now() - interval '25 hours'")
    alive = spawn(MAILROOM_WORKER_NAME="alive:1")
    alive.wait_listening()
    wait_for(lambda: [r["worker"] for r in rows(conn)] == ["alive:1"])
    # another queue's daemons are not this queue's
    assert status_json(operator, "--queue", "bulk")["daemons"] == []


def test_a_paused_daemon_says_why_and_until_when(
    spawn: Callable[..., Any], conn: psycopg.Connection[Any], operator: str,
    standin: SesStandin,
) -> None:  # fmt: skip
    standin.inject("sending_paused", 1)
    daemon = spawn(MAILROOM_PAUSE_DURATION="120000", MAILROOM_SEND_RATE="50",
                   MAILROOM_WORKER_NAME="ses:1")  # fmt: skip
    daemon.wait_listening()
    mailroom.enqueue(conn, "ann@example.com", subject="S", text="t")
    # the pause reaches the table within a second or so, not at the next 15 s refresh
    wait_for(lambda: any(r["paused_until"] for r in rows(conn)), timeout=10)
    (row,) = rows(conn)
    assert row["pause_reason"].startswith("SendingPausedException")
    assert row["mode"] == "ses"
    assert row["transport"].startswith(standin.url.rstrip("/"))
    (shown,) = status_json(operator)["daemons"]
    assert shown["paused"] is True
    assert 60 < shown["pause_seconds_left"] <= 120
    assert shown["send_rate"] == "50/s"
    text = mailroom_cli("status", db=operator).stdout
    assert "daemons: 1 running (1 PAUSED):" in text
    assert "SENDING PAUSED for 1m" in text
    assert "SendingPausedException" in text
    assert "ann@" not in text


# -- roles -------------------------------------------------------------------------------------


def _heartbeat_params(worker: str) -> dict[str, Any]:
    me = presence.Identity.of(Config(database_url="", worker_name=worker), endpoint="",
                              version="1", started_at=datetime.now(UTC))  # fmt: skip
    return presence.heartbeat_params(me, pause_seconds=0, pause_reason="", rate_in_force=None)


def test_each_role_does_with_the_table_what_it_needs_and_no_more(
    login_as: Callable[..., str], conn: psycopg.Connection[Any], operator: str
) -> None:
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        params = _heartbeat_params("d:1")
        daemon.execute(query("daemon_heartbeat"), params)
        daemon.execute(query("daemon_heartbeat"), params)  # an upsert: still one row
        assert len(rows(conn)) == 1
        daemon.execute(query("daemon_leave"), params)
        assert rows(conn) == []
        missing = daemon.execute(query("daemon_privileges")).fetchall()
        assert missing == []
    conn.execute(query("daemon_heartbeat"), _heartbeat_params("d:2"))
    with psycopg.connect(operator, autocommit=True) as op:
        assert op.execute("SELECT count(*) FROM mailroom.daemons").fetchone() == (1,)
        for statement in (
            "DELETE FROM mailroom.daemons",
            "UPDATE mailroom.daemons SET mode = 'ses'",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                op.execute(statement)
        with pytest.raises(errors.InsufficientPrivilege):
            op.execute(query("daemon_heartbeat"), _heartbeat_params("forged:1"))
    with (
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as app,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        app.execute("SELECT * FROM mailroom.daemons")


def test_a_mode_that_does_not_exist_is_refused(conn: psycopg.Connection[Any]) -> None:
    params = {**_heartbeat_params("x:1"), "mode": "smtp"}
    with pytest.raises(errors.CheckViolation, match="daemons_mode_known"):
        conn.execute(query("daemon_heartbeat"), params)
