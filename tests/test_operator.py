"""The operator commands of issue 14 against a real database, as the roles that run them:
``find``, ``cancel``, ``send-now``, the audit trail, ``queues``, ``stats``, ``status
--watch``, and the refusals for mailroom_app and mailroom_daemon."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from conftest import wait_for
from sesv2_standin import SesStandin
from test_admin import _attempt, _row, _set, mailroom_cli, seed


def audit(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT actor, operator, via, action, messages, message_ids, reason FROM mailroom.audit "
        "ORDER BY id"
    )
    return rows.fetchall()


@pytest.fixture
def operator(login_as: Callable[..., str]) -> str:
    return login_as("mailroom_operator")


def test_find_by_recipient_is_exact_case_insensitive_masked_and_newest_first(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    _set(conn, ids["pending"], "cc_addresses = ARRAY['Alice@Example.com']")
    found = mailroom_cli("find", "--to", "ALICE@example.COM", "--json", db=operator)
    assert found.returncode == 0, found.stderr
    doc = json.loads(found.stdout)
    assert [m["id"] for m in doc["messages"]] == [ids["sent"], ids["pending"]]  # newest first
    assert doc["next_cursor"] is None
    assert "alice@" not in found.stdout.lower()  # masked
    assert "a***@example.com" in found.stdout
    # exact: a prefix or a longer address is another person
    assert json.loads(mailroom_cli("find", "--to", "alic@example.com", "--json",
                                   db=operator).stdout)["messages"] == []  # fmt: skip
    revealed = mailroom_cli("find", "--to", "alice@example.com", "--reveal", db=operator)
    assert "alice@example.com" in revealed.stdout


def test_find_filters_and_pages(operator: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    _set(conn, ids["sent_old"], "idempotency_key = 'order-77'")

    def found(*args: str) -> list[int]:
        result = mailroom_cli("find", *args, "--json", db=operator)
        assert result.returncode == 0, result.stderr
        return [m["id"] for m in json.loads(result.stdout)["messages"]]

    assert found("--ses-id", "ses-0002") == [ids["sent"]]
    assert found("--key", "order-77") == [ids["sent_old"]]
    assert found("--status", "scheduled") == [ids["scheduled"]]
    assert found("--status", "dead,retrying", "--template", "welcome") == [
        ids["throttled_2"], ids["throttled_1"]]  # fmt: skip
    assert found("--queue", "bulk") == [ids["other_queue"]]
    assert found("--since", "1h", "--status", "sending") == [ids["stuck"], ids["sending"]]
    assert found("--before", "1h") == []  # all were enqueued just now
    # pages: 3 per page, following the cursor, see every message once
    seen: list[int] = []
    cursor: list[str] = []
    while True:
        page = json.loads(mailroom_cli("find", "--limit", "3", *cursor, "--json",
                                       db=operator).stdout)  # fmt: skip
        seen += [m["id"] for m in page["messages"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", str(page["next_cursor"])]
    assert seen == sorted(ids.values(), reverse=True)
    table = mailroom_cli("find", "--limit", "3", db=operator)
    assert "more match: add --cursor" in table.stdout
    header = table.stdout.splitlines()[0]
    assert header.startswith("id")
    assert "SES id / reason" in header


def test_find_bad_input_is_named_in_the_operators_words(operator: str) -> None:
    for args, expected in (
        (("--status", "lost"), "unknown status lost"),
        (("--limit", "ten"), "must be a whole number from 1"),
        (("--since", "yesterday"), "neither an age"),
        (("--cursor", "x"), "is not a message id"),
    ):
        result = mailroom_cli("find", *args, db=operator)
        assert result.returncode == 2, args
        assert expected in result.stderr, (args, result.stderr)
        assert "invalid literal" not in result.stderr
        assert "Traceback" not in result.stderr
    show = mailroom_cli("show", "abc", db=operator)
    assert show.returncode == 2
    assert "'abc' is not a message id" in show.stderr


def test_cancel_pending_scheduled_and_retrying_with_reason_and_audit(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    targets = [ids["pending"], ids["scheduled"], ids["retrying"]]
    refused = mailroom_cli("cancel", *map(str, targets), str(ids["sent"]), "--reason", "asked",
                           db=operator)  # fmt: skip
    assert refused.returncode == 1
    assert f"message {ids['sent']} is sent" in refused.stderr
    assert audit(conn) == []  # all or nothing
    assert _row(conn, ids["pending"], "status") == ("pending",)
    no_reason = mailroom_cli("cancel", str(ids["pending"]), "--reason", " ", db=operator)
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr

    who = {"USER": "oncall-ann", "LOGNAME": "oncall-ann"}
    done = mailroom_cli("cancel", *map(str, targets), "--reason", "customer asked",
                        db=operator, env=who)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for i in targets:
        assert _row(conn, i, "status, last_error") == (
            "cancelled",
            "cancelled by operator: customer asked",
        )
    [entry] = audit(conn)
    role = psycopg.conninfo.conninfo_to_dict(operator)["user"]
    assert entry == (role, "oncall-ann", "cli", "cancel", 3, sorted(targets), "customer asked")
    shown = mailroom_cli("show", str(ids["scheduled"]), db=operator)
    assert "operator actions (1):" in shown.stdout
    assert (
        f"cancel     by {role} (oncall-ann) via cli, 3 message(s): customer asked" in shown.stdout
    )
    # cancelled is final: neither dead retry nor send-now revives it
    retry = mailroom_cli("dead", "retry", str(ids["pending"]), db=operator)
    assert retry.returncode == 1
    assert "cancelled by an operator" in retry.stderr
    again = mailroom_cli("send-now", str(ids["pending"]), db=operator)
    assert again.returncode == 1
    assert "is cancelled" in again.stderr
    assert _row(conn, ids["pending"], "status") == ("cancelled",)
    sending = mailroom_cli("cancel", str(ids["sending"]), "--reason", "x", db=operator)
    assert sending.returncode == 1
    assert "a daemon is sending it now" in sending.stderr


def test_cancel_discards_a_token_secret(operator: str, conn: psycopg.Connection[Any]) -> None:
    from test_admin import _enqueue  # noqa: PLC0415

    token = _enqueue(conn, "t@example.com", idempotency_key="mailroom-token:9",
                     data={"login": "t"})  # fmt: skip
    conn.execute(
        "INSERT INTO mailroom.message_tokens (message_id, recipient, template, action, secret)"
        " VALUES (%s, 't@example.com', 'activationv1', 'activation', %s)",
        [token, bytes(32)],
    )
    assert mailroom_cli("cancel", str(token), "--reason", "abuse", db=operator).returncode == 0
    assert _row(conn, token, "template_data") == ({"login": "t"},)
    # the token went with the final state (0019), though the operator may not delete it
    assert conn.execute("SELECT count(*) FROM mailroom.message_tokens").fetchone() == (0,)


def test_send_now_expedites_a_backoff_and_a_daemon_sends_it(
    operator: str, conn: psycopg.Connection[Any], spawn: Callable[..., Any],
    standin: SesStandin,
) -> None:  # fmt: skip
    from test_admin import _enqueue  # noqa: PLC0415

    daemon = spawn()
    daemon.wait_listening()
    later = datetime.now(UTC) + timedelta(days=1)
    waiting = _enqueue(conn, "later@example.com", not_before=later)  # the daemon leaves it
    _set(conn, waiting, "status = 'retrying', attempts = 1, next_attempt_at = now() + '1 day'")
    due = _enqueue(conn, "due@example.com")
    wait_for(lambda: _row(conn, due, "status") == ("sent",))
    refused = mailroom_cli("send-now", str(waiting), str(due), db=operator)
    assert refused.returncode == 1
    assert f"message {due} is sent" in refused.stderr
    assert _row(conn, waiting, "status") == ("retrying",)
    dry = mailroom_cli("send-now", str(waiting), "--dry-run", db=operator)
    assert dry.returncode == 0
    assert "would make 1" in dry.stdout
    result = mailroom_cli("send-now", str(waiting), "--reason", "SES is back", db=operator)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: _row(conn, waiting, "status") == ("sent",))
    assert [a[3:5] for a in audit(conn)] == [("send_now", 1)]


def test_send_now_refuses_a_token_email_without_its_secret(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    from test_admin import _enqueue  # noqa: PLC0415

    token = _enqueue(conn, "t@example.com", idempotency_key="mailroom-token:3")
    _set(conn, token, "status = 'retrying', next_attempt_at = now() + '1 hour'")
    result = mailroom_cli("send-now", str(token), db=operator)
    assert result.returncode == 1
    assert "secret is gone" in result.stderr


def test_dead_retry_and_purge_leave_audit_rows_per_batch(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status, last_error) "
        "SELECT ARRAY['b' || i || '@example.com'], 's', 't', 'dead', 'MESSAGE_REJECTED: no' "
        "FROM generate_series(1, 7) AS i"
    )
    dry = mailroom_cli("dead", "retry", "--all", "--dry-run", db=operator)
    assert dry.returncode == 0
    assert "would retry 7 dead letter(s)" in dry.stdout
    assert audit(conn) == []
    retried = mailroom_cli("dead", "retry", "--all", "--yes", "--batch", "3",
                           "--note", "bad deploy fixed", db=operator)  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    rows = conn.execute(
        "SELECT action, messages, reason, selection->>'queue' FROM mailroom.audit ORDER BY id"
    ).fetchall()
    assert rows == [("dead_retry", 3, "bad deploy fixed", "user_action_queue")] * 2 + [
        ("dead_retry", 1, "bad deploy fixed", "user_action_queue")]  # fmt: skip
    assert len({r[0] for r in conn.execute("SELECT action_id FROM mailroom.audit")}) == 1
    conn.execute("UPDATE mailroom.outbox SET status = 'dead'")
    purged = mailroom_cli("dead", "purge", "--all", "--yes", db=operator)
    assert purged.returncode == 0, purged.stderr
    row = conn.execute(
        "SELECT sum(messages) FROM mailroom.audit WHERE action = 'dead_purge'"
    ).fetchone()
    assert row == (7,)


def test_the_audit_trail_is_append_only_and_its_author_cannot_be_forged(
    operator: str, conn: psycopg.Connection[Any]
) -> None:
    """Since 0020 the operator may not insert audit rows at all (the forged row below was
    accepted before, its actor overwritten but its operator and ids free): only the
    action functions write them, stamped with the login."""
    from mailroom.operator.audit import Actor  # noqa: PLC0415
    from mailroom.operator.find import cancel  # noqa: PLC0415

    ids = seed(conn)
    with psycopg.connect(operator, autocommit=True) as op:
        for statement in (
            "INSERT INTO mailroom.audit (action_id, actor, at, via, action, message_ids) "
            "VALUES (gen_random_uuid(), 'someone_else', '2001-01-01', 'cli', 'cancel', '{1}')",
            "UPDATE mailroom.audit SET reason = 'x'",
            "DELETE FROM mailroom.audit",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                op.execute(statement)
        assert cancel(op, [ids["pending"]], Actor("someone_else", reason="x")) == [ids["pending"]]
    row = conn.execute(
        "SELECT actor, operator, at > now() - interval '1 minute' FROM mailroom.audit"
    )
    me = psycopg.conninfo.conninfo_to_dict(operator)["user"]
    assert row.fetchall() == [(me, "someone_else", True)]


OPERATOR_COMMANDS = (
    ("find", "--to", "a@example.com"),
    ("queues",),
    ("stats",),
    ("cancel", "1", "--reason", "x"),
    ("send-now", "1"),
    ("dead", "retry", "1"),
    ("dead", "purge", "1", "--yes"),
)


@pytest.mark.parametrize("role", ["mailroom_app", "mailroom_daemon"])
def test_every_new_command_is_refused_for_the_other_roles(
    role: str, login_as: Callable[..., str], conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    conn.execute("UPDATE mailroom.outbox SET status = 'dead' WHERE id = 1")
    before = conn.execute("SELECT id, status, next_attempt_at FROM mailroom.outbox ORDER BY id")
    snapshot = before.fetchall()
    dsn = login_as(role)
    for command in OPERATOR_COMMANDS:
        result = mailroom_cli(*command, db=dsn)
        assert result.returncode == 3, (role, command, result.stdout, result.stderr)
        assert "mailroom_operator" in result.stderr, (command, result.stderr)
        assert "lacks" in result.stderr or "permission denied" in result.stderr
    after = conn.execute("SELECT id, status, next_attempt_at FROM mailroom.outbox ORDER BY id")
    assert after.fetchall() == snapshot
    assert audit(conn) == []
    assert ids


def test_the_database_refuses_a_daemon_that_skips_the_check(
    login_as: Callable[..., str], conn: psycopg.Connection[Any]
) -> None:
    """The early check is a courtesy: the statements themselves need the audit trail."""
    from mailroom.operator import dead as admin_dead  # noqa: PLC0415
    from mailroom.operator.audit import Actor  # noqa: PLC0415
    from mailroom.operator.find import cancel  # noqa: PLC0415

    ids = seed(conn)
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        # since 0020 the action is a function only the operator may execute (before: refused
        # by the audit trail or the outbox columns): either way nothing changes
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="operator_cancel"):
            cancel(daemon, [ids["pending"]], Actor("mallory", reason="x"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            admin_dead.dead_retry(daemon, admin_dead.Selection(), channel="token_insert")
    assert _row(conn, ids["pending"], "status") == ("pending",)
    assert _row(conn, ids["rejected"], "status") == ("dead",)


def test_queues_and_stats(operator: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    _attempt(conn, ids["throttled_1"], 1, "retry", None, "TooManyRequestsException: slow",
             "a:1", "5 minutes")  # fmt: skip
    _attempt(conn, ids["throttled_1"], 2, "dead", None, "gave up after 2 attempts: "
             "TooManyRequestsException: slow", "a:1", "4 minutes")  # fmt: skip
    queues = json.loads(mailroom_cli("queues", "--json", db=operator).stdout)
    main = next(q for q in queues if q["queue"] == "user_action_queue")
    assert (main["due"], main["scheduled"], main["retrying"], main["sending"], main["dead"]) == (
        1, 1, 1, 2, 4)  # fmt: skip
    assert main["oldest_due_age_seconds"] >= 90
    assert main["sent_last_hour"] == 1
    assert [q["queue"] for q in queues] == ["bulk", "user_action_queue"]
    text = mailroom_cli("queues", db=operator).stdout.splitlines()
    assert text[0].split()[:3] == ["queue", "due", "scheduled"]
    # columns sized to the data: the queue column is as wide as the longest queue name
    assert text[0].index(" due") == len("user_action_queue") + 1

    stats = json.loads(mailroom_cli("stats", "--since", "1h", "--json", db=operator).stdout)
    by_template = {t["template"]: t for t in stats["templates"]}
    assert by_template["welcome"] == {"template": "welcome", "sent": 0, "retried": 1, "dead": 1,
                                      "bounced": 0, "complained": 0}  # fmt: skip
    assert by_template["activationv1"]["sent"] == 1  # the "sent" message's second try
    reasons = {(r["outcome"], r["reason"]) for r in stats["reasons"]}
    assert ("retry", "TooManyRequestsException") in reasons
    assert ("dead", "gave up after 2 attempts: TooManyRequestsException") in reasons
    earlier = json.loads(mailroom_cli("stats", "--since", "7d", "--before", "2h", "--json",
                                      db=operator).stdout)  # fmt: skip
    # only the rejected one's try, 3 hours ago
    assert earlier["templates"] == [
        {"template": "activationv1", "sent": 0, "retried": 0, "dead": 1, "bounced": 0,
         "complained": 0}]  # fmt: skip


def test_status_watch_prints_plain_reports_when_piped(operator: str) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    proc = subprocess.Popen(
        [sys.executable, "-m", "mailroom", "--dsn", operator, "status", "--watch", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(30)]
    finally:
        proc.terminate()
        proc.wait(10)
    text = "".join(lines)
    assert text.count("queue user_action_queue") >= 2  # refreshed, appended
    assert "\x1b[" not in text  # no terminal control codes in a pipe


def test_new_commands_have_help_with_examples_and_a_version() -> None:
    for command in ("find", "cancel", "send-now", "queues", "stats"):
        result = mailroom_cli(command, "--help")
        assert result.returncode == 0, command
        assert "examples:" in result.stdout, command
        assert f"mailroom {command}" in result.stdout, command
        assert "exit codes" in result.stdout, command
    version = mailroom_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("mailroom 0.")


def test_debug_mode_is_loud_in_the_log_and_the_metrics(
    spawn: Callable[..., Any], tmp_path: Any
) -> None:
    import socket  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = spawn(MAILROOM_DEBUG="true", MAILROOM_SES_OUTPUT_PATH=str(tmp_path / "out"),
                   MAILROOM_HTTP_PORT=str(port))  # fmt: skip
    daemon.wait_listening()
    events = daemon.events()
    started = next(e for e in events if e["event"] == "started")
    assert started["transport"].startswith("debug: writes to")
    assert "SENDS NOTHING" in started["transport"]
    assert started["queue"] == "user_action_queue"
    assert started["version"]
    assert any(e["event"] == "debug_mode" and e["level"] == "warning" for e in events)
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    assert 'mailroom_info{mode="debug",version=' in body
    assert "mailroom_messages_sent_total" in body or "mailroom_batch_size" in body
    assert "_created" not in body  # not asked for
