"""The application hears back, end to end: a Django message sent through the real daemon to
the SES stand-in, its bounce published to SQS (moto's server) by the mailbox simulator and
stored by the daemon's events reader, and ``manage.py mailroom_events`` firing the signals
of mailroom.djangoapp once each, with a stored cursor; a receiver that raises; SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import wait_for
from ses_simulator import SIMULATOR, MailboxSimulator
from sesv2_standin import SesStandin
from test_deliverability_e2e import events_env, queue  # noqa: F401 -- fixtures
from test_django import without_psycopg3

pytestmark = pytest.mark.slow
HEAR = Path(__file__).parent / "djangoapp" / "hear.py"


def _env(dsn: str, driver: str = "psycopg", **extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGOAPP_DSN": dsn, **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if driver == "psycopg2":
        shadow = Path(tempfile.gettempdir()) / f"mailroom-nopsycopg3-{os.getpid()}"
        env = without_psycopg3(env, shadow)
    return env


def hear(dsn: str, *words: str, **extra: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, str(HEAR), *words], env=_env(dsn, **extra), capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, done.stderr


def test_a_bounce_fires_the_bounced_signal_once_with_the_message_id_and_reason(
    conn: psycopg.Connection[Any], standin: SesStandin, *, queue: tuple[Any, str],  # noqa: F811
    events_env: dict[str, str], spawn: Any, login_as: Any,  # noqa: F811
) -> None:  # fmt: skip
    MailboxSimulator(standin, *queue)
    standin.fail_address("rejected@", "message_rejected")
    daemon = spawn(**events_env)
    daemon.wait_listening()
    app = login_as("mailroom_app")
    sent, _ = hear(app, "send", f"bounce@{SIMULATOR}", "rejected@example.com")
    mid = sent["id"]
    assert isinstance(mid, int)
    assert sent["sent"] == 1
    # the same key and content: the first message's id; refused silently: no id
    assert sent["keyed"][0] == sent["keyed"][1] != mid
    assert (sent["refused_sent"], sent["refused_id"]) == (0, None)
    bounced = "SELECT count(*) FROM mailroom.changes WHERE message_id = %s AND state = 'bounced'"
    wait_for(lambda: conn.execute(bounced, [mid]).fetchone() == (1,), timeout=30)
    # unread, the outbox's changes wait in one batch per statement (sql/0035)
    dead = """SELECT count(*) FROM mailroom.change_batches AS b,
              unnest(b.message_ids, b.states) AS e(message_id, state)
              WHERE e.message_id = %s AND e.state = 'dead'"""
    wait_for(lambda: conn.execute(dead, [sent["rejected_id"]]).fetchone() == (1,), timeout=30)

    first, _ = hear(app, "once")
    assert first["code"] == 0
    mine = [f for f in first["fired"] if f["message_id"] == mid]
    assert [f["signal"] for f in mine] == ["email_sent", "email_bounced"]
    bounce = mine[1]
    assert bounce["sender"] == "Change"
    assert bounce["reason"] == "smtp; 550 5.1.1 user unknown"
    assert bounce["bounce_type"] == "Permanent"
    assert bounce["recipient"] == f"bounce@{SIMULATOR}"
    # SES refused the other one: dead, with the reason the daemon recorded
    (dead,) = [f for f in first["fired"] if f["message_id"] == sent["rejected_id"]]
    assert dead["signal"] == "email_dead"
    assert "MessageRejected" in dead["reason"]
    assert first["outcome"]["cursor"] == max(f["change"] for f in first["fired"])
    assert first["outcome"]["fired"] == len(first["fired"])

    again, _ = hear(app, "once")  # the stored cursor: nothing is fired twice
    assert (again["code"], again["fired"]) == (0, [])
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_a_receiver_that_raises_is_logged_and_its_change_retried_not_skipped(
    conn: psycopg.Connection[Any], login_as: Any,
) -> None:  # fmt: skip
    app = login_as("mailroom_app")
    with psycopg.connect(app, autocommit=True) as writer:
        ids = [mailroom.enqueue(writer, "ann@example.com", subject="s", text="t") for _ in range(2)]
        for mid in ids:
            assert mailroom.cancel(writer, mid)
        conn.execute(
            "UPDATE mailroom.outbox SET status = 'dead', last_error = 'MessageRejected'"
            " WHERE id = %s",
            [mailroom.enqueue(writer, "bob@example.com", subject="s", text="t")],
        )
    failed, stderr = hear(app, "once", HEAR_FAIL="dead")
    assert failed["code"] == 1
    assert "a receiver raised for change" in failed["error"]
    assert [f["signal"] for f in failed["fired"]] == ["email_cancelled", "email_cancelled",
                                                      "email_dead"]  # fmt: skip
    assert "receiver" in stderr
    assert "RuntimeError: a receiver of email_dead failed" in stderr  # with its traceback
    dead_change = failed["fired"][2]["change"]
    assert failed["outcome"] == {"fired": 2, "cursor": failed["fired"][1]["change"],
                                 "failed_change": dead_change}  # fmt: skip
    # the receiver fixed: the failed change comes again (and only it), then nothing
    fixed, _ = hear(app, "once")
    assert [(f["signal"], f["change"]) for f in fixed["fired"]] == [("email_dead", dead_change)]
    assert fixed["fired"][0]["reason"] == "MessageRejected"
    assert (fixed["code"], fixed["outcome"]["cursor"]) == (0, dead_change)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_following_hears_a_change_at_once_and_stops_cleanly_on_sigterm(
    driver: str, login_as: Any
) -> None:
    app = login_as("mailroom_app")
    proc = subprocess.Popen(
        [sys.executable, str(HEAR), "follow"], env=_env(app, driver), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)  # Django starts, catches up (nothing), and listens
        with psycopg.connect(app, autocommit=True) as writer:
            mid = mailroom.enqueue(writer, "ann@example.com", subject="s", text="t")
            start = time.monotonic()
            assert mailroom.cancel(writer, mid)
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert time.monotonic() - start < 5  # heard through LISTEN, not the 30 s poll
        assert (line["signal"], line["message_id"]) == ("email_cancelled", mid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["outcome"]["fired"] == 1


def test_following_survives_a_lost_connection(conn: psycopg.Connection[Any], login_as: Any) -> None:
    app = login_as("mailroom_app")
    role = psycopg.conninfo.conninfo_to_dict(app)["user"]
    proc = subprocess.Popen(
        [sys.executable, str(HEAR), "follow"], env=_env(app), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.5)  # listening
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            [role],
        ).fetchone()
        assert killed == (1,)
        with psycopg.connect(app, autocommit=True) as writer:
            mid = mailroom.enqueue(writer, "ann@example.com", subject="s", text="t")
            assert mailroom.cancel(writer, mid)
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())  # after a reconnect (1 s) and a catch-up
        assert (line["signal"], line["message_id"]) == ("email_cancelled", mid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "database error" in err
    assert json.loads(out.strip().splitlines()[-1])["outcome"]["fired"] == 1


def test_once_without_a_database_says_so_in_one_line_and_exits_1() -> None:
    result, stderr = hear("host=127.0.0.1 port=1 user=nobody dbname=nowhere", "once")
    assert result["code"] == 1
    assert result["error"].startswith("the database failed: ")
    assert "\n" not in result["error"].strip()
    assert "Traceback" not in stderr


def test_the_command_documents_itself() -> None:
    env = _env("host=localhost user=x dbname=x")
    code = (
        "import sys; sys.argv = ['manage.py', 'mailroom_events', '--help'];"
        f"sys.path.insert(0, {str(HEAR.parent.parent)!r});"
        "import django; django.setup();"
        "from django.core.management import execute_from_command_line;"
        "execute_from_command_line(sys.argv)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**env, "DJANGO_SETTINGS_MODULE": "djangoapp.settings"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for words in ("examples:", "--once", "exit codes:", "SIGTERM", "retried"):
        assert words in done.stdout
    bad = subprocess.run(
        [sys.executable, "-c", code.replace("'--help'", "'--batch', '0'")],
        env={**env, "DJANGO_SETTINGS_MODULE": "djangoapp.settings"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "must be 1 to 10000" in bad.stderr
