"""Pausing a queue by hand (issue 22, migration 0027): `mailroom queue pause | resume`,
audited; honoured by real daemons (nothing claimed from a paused queue, the rest of the
system unaffected); shown in `mailroom status` and the mailroom_queue_paused gauge; the
functions refuse bad arguments, and a role without them cannot pause."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import wait_for
from sesv2_standin import SesStandin
from test_admin import _enqueue, mailroom_cli
from test_operations import _get, _samples


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator(login_as: Callable[..., str]) -> str:
    return login_as("mailroom_operator")


def _status(conn: psycopg.Connection[Any], message_id: int) -> str:
    row = conn.execute("SELECT status FROM mailroom.outbox WHERE id = %s", (message_id,))
    found = row.fetchone()
    assert found is not None
    return str(found[0])


def test_pause_and_resume_are_audited_and_shown_in_status(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    paused = mailroom_cli("queue", "pause", "bulk", "--note", "campaign 7 template", "--json",
                          db=operator)  # fmt: skip
    assert paused.returncode == 0, paused.stderr
    document = json.loads(paused.stdout)
    assert document["changed"] is True
    assert document["paused"]["queue"] == "bulk"
    assert document["paused"]["note"] == "campaign 7 template"

    again = mailroom_cli("queue", "pause", "bulk", db=operator)
    assert again.returncode == 0, again.stderr
    assert "already paused, nothing changed" in again.stdout

    status = mailroom_cli("status", "--queue", "bulk", db=operator)
    assert "QUEUE PAUSED by an operator" in status.stdout, status.stdout
    assert "campaign 7 template" in status.stdout
    report = json.loads(mailroom_cli("status", "--queue", "bulk", "--json", db=operator).stdout)
    assert report["paused"]["note"] == "campaign 7 template"
    other = json.loads(mailroom_cli("status", "--json", db=operator).stdout)
    assert other["paused"] is None  # only that queue

    resumed = mailroom_cli("queue", "resume", "bulk", "--note", "fixed", db=operator)
    assert resumed.returncode == 0, resumed.stderr
    assert "queue bulk: resumed" in resumed.stdout
    twice = mailroom_cli("queue", "resume", "bulk", "--json", db=operator)
    assert json.loads(twice.stdout)["changed"] is False

    rows = conn.execute(
        "SELECT action, via, reason, selection, actor FROM mailroom.audit ORDER BY at, action"
    ).fetchall()
    assert [(a, v, r, s) for a, v, r, s, _ in rows] == [
        ("pause", "cli", "campaign 7 template", {"queue": "bulk"}),
        ("resume", "cli", "fixed", {"queue": "bulk"}),
    ]  # one row per change; the repeated pause and resume changed nothing
    login = conninfo_to_dict(operator)["user"]
    assert all(actor == login for *_, actor in rows)  # the login, not the name given


def test_bad_arguments_are_refused_in_the_operators_words(operator: str) -> None:
    empty = mailroom_cli("queue", "pause", "  ", db=operator)
    assert empty.returncode == 2
    assert "a queue name is 1 to 63 characters" in empty.stderr
    long = mailroom_cli("queue", "pause", "q" * 64, db=operator)
    assert long.returncode == 2
    note = mailroom_cli("queue", "pause", "bulk", "--note", "x" * 501, db=operator)
    assert note.returncode == 1, note.stderr
    assert "refused, nothing changed: the reason is 501 characters: at most 500" in note.stderr
    assert "Traceback" not in empty.stderr + long.stderr + note.stderr


def test_the_functions_refuse_bad_arguments_and_other_roles(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    call = "SELECT mailroom.operator_pause_queue(%s, %s, %s, 'cli', %s)"
    for queue, who, problem in ((None, "x", "queue name"), ("q" * 64, "x", "queue name"),
                                ("bulk", "", r"operator \(who acts\)")):  # fmt: skip
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=problem):
            conn.execute(call, (queue, None, who, uuid.uuid4()))
    for role in ("mailroom_daemon", "mailroom_app", None):
        with psycopg.connect(login_as(role), autocommit=True) as other:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.execute(call, ("bulk", None, "x", uuid.uuid4()))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.execute("INSERT INTO mailroom.queue_pauses (queue, operator) "
                              "VALUES ('bulk', 'x')")  # fmt: skip
    assert conn.execute("SELECT count(*) FROM mailroom.queue_pauses").fetchone() == (0,)


def test_every_daemon_honours_a_pause_and_the_gauge_shows_it(
    operator: str, conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any,
    login_as: Callable[..., str],
) -> None:  # fmt: skip
    assert mailroom_cli("queue", "pause", "bulk", db=operator).returncode == 0
    daemon_role = login_as("mailroom_daemon")  # the claim's check needs only its grants
    port = _free_port()
    bulk = [spawn(MAILROOM_QUEUE_NAME="bulk", MAILROOM_WORKER_NAME=f"bulk:{n}",
                  MAILROOM_DATABASE_URL=daemon_role,
                  **({"MAILROOM_HTTP_PORT": str(port)} if n == 0 else {}))
            for n in range(2)]  # fmt: skip
    other = spawn(MAILROOM_DATABASE_URL=daemon_role, MAILROOM_WORKER_NAME="main:1")
    for daemon in (*bulk, other):
        daemon.wait_listening()
    held = [_enqueue(conn, f"bulk{n}@example.com", queue="bulk") for n in range(5)]
    sent = _enqueue(conn, "main@example.com")
    wait_for(lambda: _status(conn, sent) == "sent", timeout=20)  # the other queue runs
    wait_for(lambda: _samples(_get(port, "/metrics")[1])[("mailroom_queue_paused", ())] == 1)
    # the bulk daemons have polled (every second while due work waits) and claimed nothing
    attempts = conn.execute(
        "SELECT count(*) FROM mailroom.attempts WHERE message_id = ANY (%s)", (held,)
    ).fetchone()
    assert attempts == (0,)
    assert {_status(conn, i) for i in held} == {"pending"}
    assert [m for m in standin.sent() if "bulk" in json.dumps(m)] == []

    assert mailroom_cli("queue", "resume", "bulk", db=operator).returncode == 0
    wait_for(lambda: {_status(conn, i) for i in held} == {"sent"}, timeout=20)
