"""The operator commands against a real database holding messages in every state:
``status``, ``show``, ``dead list | retry | purge``, ``send-test``, and their errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import wait_for
from mailroom.cli import output as admin_output
from mailroom.operator import dead as admin_dead
from sesv2_standin import SesStandin

COMMANDS = (
    ("status",),
    ("show", "1"),
    ("dead", "list"),
    ("dead", "retry", "1"),
    ("dead", "purge", "--all", "--dry-run"),
    ("send-test", "--to", "ops@example.com"),
)


def mailroom_cli(
    *args: str, db: str | None = None, env: dict[str, str] | None = None, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "AWS_"))}
    if db is not None:
        base["MAILROOM_DATABASE_URL"] = db
    return subprocess.run(
        [sys.executable, "-m", "mailroom", *args], env={**base, **(env or {})},
        capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
    )  # fmt: skip


def _enqueue(conn: psycopg.Connection[Any], to: str, **fields: Any) -> int:
    fields.setdefault("template", "activationv1")
    fields.setdefault("data", {"login": "x"})
    return mailroom.enqueue(conn, to, **fields)


def _set(conn: psycopg.Connection[Any], message_id: int, assignments: str) -> None:
    update = f"UPDATE mailroom.outbox SET {assignments} WHERE id = %s"  # noqa: S608 -- test literals
    conn.execute(update, (message_id,))


def _attempt(conn: psycopg.Connection[Any], message_id: int, *values: Any) -> None:
    conn.execute(
        "INSERT INTO mailroom.attempts (message_id, attempt, outcome, provider_message_id, "
        "error, worker, at) VALUES (%s, %s, %s, %s, %s, %s, now() - %s::interval)",
        (message_id, *values),
    )


def seed(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """One message in every state, named after it."""
    ids: dict[str, int] = {}
    ids["pending"] = _enqueue(conn, "pending.person@example.com")
    _set(conn, ids["pending"], "next_attempt_at = now() - interval '90 seconds'")
    ids["scheduled"] = _enqueue(conn, "later@example.com", subject="Hi", text="x", template=None,
                                data=None)  # fmt: skip
    _set(conn, ids["scheduled"], "next_attempt_at = now() + interval '1 hour'")
    ids["retrying"] = _enqueue(conn, "retry.me@example.com")
    _set(conn, ids["retrying"], "status = 'retrying', attempts = 2, last_error = 'Internal: x', "
         "next_attempt_at = now() + interval '5 minutes'")  # fmt: skip
    ids["sending"] = _enqueue(conn, "in.flight@example.com")
    _set(conn, ids["sending"], "status = 'sending', attempts = 1, locked_by = 'alpha:101', "
         "locked_until = now() + interval '50 seconds'")  # fmt: skip
    ids["stuck"] = _enqueue(conn, "stuck@example.com")
    _set(conn, ids["stuck"], "status = 'sending', attempts = 1, locked_by = 'beta:202', "
         "locked_until = now() - interval '2 minutes'")  # fmt: skip
    ids["sent"] = _enqueue(conn, "alice@example.com", cc=["carol@example.com"])
    _set(conn, ids["sent"], "status = 'sent', attempts = 2, provider_message_id = 'ses-0002', "
         "sent_at = now() - interval '10 seconds', last_error = 'Throttling: slow'")  # fmt: skip
    _attempt(conn, ids["sent"], 1, "retry", None, "Throttling: slow down", "alpha:101", "20 s")
    _attempt(conn, ids["sent"], 2, "sent", "ses-0002", None, "alpha:101", "10 s")
    ids["sent_old"] = _enqueue(conn, "old@example.com")
    _set(conn, ids["sent_old"], "status = 'sent', attempts = 1, provider_message_id = 'ses-0001',"
         " sent_at = now() - interval '2 hours'")  # fmt: skip
    ids["rejected"] = _enqueue(conn, "bounce@example.com")
    _set(conn, ids["rejected"], "status = 'dead', attempts = 1, updated_at = now() - "
         "interval '3 hours', last_error = 'MESSAGE_REJECTED: Email address is not verified. "
         "The following identities failed the check: bounce@example.com'")  # fmt: skip
    _attempt(conn, ids["rejected"], 1, "dead", None, "MESSAGE_REJECTED: not verified",
             "alpha:101", "3 hours")  # fmt: skip
    for name in ("throttled_1", "throttled_2"):
        ids[name] = _enqueue(conn, f"{name}@example.com", template="welcome")
        _set(conn, ids[name], "status = 'dead', attempts = 10, updated_at = now() - interval "
             "'10 minutes', last_error = 'gave up after 10 attempts: "
             "TooManyRequestsException: Maximum sending rate exceeded.'")  # fmt: skip
    ids["token"] = _enqueue(conn, "token.user@example.com", idempotency_key="mailroom-token:7")
    _set(conn, ids["token"], "status = 'dead', attempts = 1, updated_at = now() - "
         "interval '1 minute', last_error = 'TEMPLATE_NOT_FOUND: no such template'")  # fmt: skip
    ids["other_queue"] = _enqueue(conn, "elsewhere@example.com", queue="bulk")
    _set(conn, ids["other_queue"], "status = 'dead', last_error = 'MESSAGE_REJECTED: x'")
    return ids


def _row(conn: psycopg.Connection[Any], message_id: int, columns: str) -> tuple[Any, ...]:
    select = f"SELECT {columns} FROM mailroom.outbox WHERE id = %s"  # noqa: S608 -- test literals
    row = conn.execute(select, (message_id,))
    result = row.fetchone()
    assert result is not None
    return tuple(result)


# -- status ---------------------------------------------------------------------------------


def test_status_json_has_stable_keys_and_counts_every_state(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    seed(conn)
    result = mailroom_cli("status", "--json", db=db)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {
        "queue", "generated_at", "depth", "due", "oldest_due_age_seconds", "sent_last_minute",
        "sent_last_hour", "dead_reasons", "leases", "daemons", "paused",
    }  # fmt: skip
    assert report["queue"] == "user_action_queue"
    assert report["paused"] is None  # an operator's pause (0027; tests/test_queue_pause.py)
    # no count of the whole sent history (it would read every sent message kept)
    assert report["depth"] == {"pending": 2, "retrying": 1, "sending": 2, "dead": 4}
    assert report["due"] == 1  # the scheduled and the retrying one are not due yet
    assert 85 <= report["oldest_due_age_seconds"] < 200
    assert (report["sent_last_minute"], report["sent_last_hour"]) == (1, 1)
    assert report["dead_reasons"] == [
        {"reason": "gave up after 10 attempts: TooManyRequestsException", "messages": 2},
        {"reason": "MESSAGE_REJECTED", "messages": 1},
        {"reason": "TEMPLATE_NOT_FOUND", "messages": 1},
    ]
    leases = {lease["worker"]: lease for lease in report["leases"]}
    assert set(leases) == {"alpha:101", "beta:202"}
    assert leases["alpha:101"]["messages"] == 1
    assert 0 < leases["alpha:101"]["expires_in_seconds"] <= 50
    assert leases["beta:202"]["expires_in_seconds"] < -100  # its holder died

    other = json.loads(mailroom_cli("status", "--json", "--queue", "bulk", db=db).stdout)
    assert other["depth"] == {"pending": 0, "retrying": 0, "sending": 0, "dead": 1}


def test_status_table_is_readable(db: str, conn: psycopg.Connection[Any]) -> None:
    seed(conn)
    result = mailroom_cli("status", db=db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "queue user_action_queue" in out
    for line in ("pending          2", "sending          2", "dead             4"):
        assert line in out
    assert "due now: 1 of 3, the oldest due for 1m 3" in out
    assert "sent: 1 in the last minute, 1 in the last hour" in out
    assert "      2  gave up after 10 attempts: TooManyRequestsException" in out
    assert "alpha:101  1 message(s), lease ends in" in out
    assert "beta:202  1 message(s), lease EXPIRED 2m" in out
    assert "bounce@example.com" not in out


def test_status_of_an_empty_outbox(db: str) -> None:
    result = mailroom_cli("status", db=db)
    assert result.returncode == 0, result.stderr
    assert "leases: none" in result.stdout
    assert "dead-letter reasons" not in result.stdout


# -- show -----------------------------------------------------------------------------------


def test_show_prints_attempts_and_masks_recipients(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    result = mailroom_cli("show", str(ids["sent"]), db=db)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"message {ids['sent']}  (queue user_action_queue)" in out
    assert "sent, 2 of 10 attempts used" in out
    assert "a***@example.com" in out
    assert "c***@example.com" in out
    assert "alice@" not in out
    assert "carol@" not in out
    assert "SES message id   ses-0002" in out
    assert "data keys        login" in out
    assert "attempts (2):" in out
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("  #1 "))
    assert "retry" in lines[first]
    assert "Throttling: slow down" in lines[first]
    assert "sent" in lines[first + 1]
    assert "ses-0002" in lines[first + 1]
    assert "alpha:101" in lines[first + 1]

    revealed = mailroom_cli("show", str(ids["sent"]), "--reveal", db=db)
    assert "alice@example.com" in revealed.stdout
    assert "carol@example.com" in revealed.stdout


def test_show_json_and_masked_errors(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    result = mailroom_cli("show", str(ids["rejected"]), "--json", db=db)
    assert result.returncode == 0, result.stderr
    message = json.loads(result.stdout)
    assert message["status"] == "dead"
    assert message["to"] == ["b***@example.com"]
    assert message["last_error"].endswith("failed the check: b***@example.com")
    assert [a["outcome"] for a in message["attempts_log"]] == ["dead"]
    assert message["data_keys"] == ["login"]
    assert "template_data" not in message

    sending = mailroom_cli("show", str(ids["stuck"]), db=db)
    assert "lease            beta:202 until" in sending.stdout
    assert "attempts: none yet" in sending.stdout


def test_show_gives_the_subject_of_raw_mime(db: str, conn: psycopg.Connection[Any]) -> None:
    # as Django writes an attachment mail: an encoded word (RFC 2047), folded
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n"
        b"Subject: =?utf-8?q?Rechnung_f=C3=BCr_M=C3=A4rz?=\r\n =?utf-8?q?_Nr=2E_42?=\r\n"
        b"From: shop@example.com\r\nTo: ann@example.com\r\n\r\n--b\r\n\r\nbody\r\n--b--\r\n"
    )
    raw_id = mailroom.enqueue(conn, "ann@example.com", raw=raw)
    untitled = mailroom.enqueue(conn, "ann@example.com", raw=b"To: ann@example.com\r\n\r\nx")
    shown = mailroom_cli("show", str(raw_id), db=db)
    assert shown.returncode == 0, shown.stderr
    assert "subject          Rechnung für März Nr. 42" in shown.stdout
    assert "template         raw" in shown.stdout
    as_json = json.loads(mailroom_cli("show", str(untitled), "--json", db=db).stdout)
    assert as_json["subject"] is None
    assert "raw_head" not in as_json  # the MIME's start is read for its Subject, not shown


def test_show_an_unknown_id_exits_1(db: str) -> None:
    result = mailroom_cli("show", "424242", db=db)
    assert result.returncode == 1
    assert "no message with id 424242" in result.stderr


# -- dead list ------------------------------------------------------------------------------


def test_dead_list_filters(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)

    def listed(*args: str) -> tuple[list[int], int]:
        result = mailroom_cli("dead", "list", "--json", *args, db=db)
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        return [m["id"] for m in document["messages"]], document["total"]

    newest_first = [ids["token"], ids["throttled_2"], ids["throttled_1"], ids["rejected"]]
    assert listed() == (newest_first, 4)
    assert listed("--template", "welcome") == ([ids["throttled_2"], ids["throttled_1"]], 2)
    assert listed("--reason", "toomanyrequests") == ([ids["throttled_2"], ids["throttled_1"]], 2)
    assert listed("--reason", "MESSAGE_REJECTED") == ([ids["rejected"]], 1)
    assert listed("--since", "1h") == (newest_first[:3], 3)
    assert listed("--before", "1h") == ([ids["rejected"]], 1)
    assert listed("--limit", "1") == ([ids["token"]], 4)
    assert listed("--queue", "bulk") == ([ids["other_queue"]], 1)
    assert listed(str(ids["other_queue"]), str(ids["rejected"])) == (
        [ids["other_queue"], ids["rejected"]], 2
    )  # fmt: skip
    assert listed(str(ids["sent"])) == ([], 0)

    table = mailroom_cli("dead", "list", "--limit", "2", db=db)
    assert table.returncode == 0, table.stderr
    assert "showing 2 of 4" in table.stdout
    assert "t***@example.com" in table.stdout
    assert "gave up after 10 attempts: TooManyRequestsException" in table.stdout
    assert "more: --cursor " in table.stdout

    # page by page (issue 22, "paging everywhere"): each dead letter once, newest first
    paged: list[int] = []
    cursor: list[str] = []
    for _ in range(5):
        page = mailroom_cli("dead", "list", "--json", "--limit", "1", *cursor, db=db)
        assert page.returncode == 0, page.stderr
        document = json.loads(page.stdout)
        assert document["total"] == 4
        paged += [m["id"] for m in document["messages"]]
        if document["next_cursor"] is None:
            break
        cursor = ["--cursor", document["next_cursor"]]
    assert paged == newest_first
    refused = mailroom_cli("dead", "list", "--cursor", "42", db=db)
    assert refused.returncode == 2
    assert "not a cursor" in refused.stderr
    none = mailroom_cli("dead", "list", "--template", "nothing", db=db)
    assert none.stdout.strip() == "no dead letters match"
    bad = mailroom_cli("dead", "list", "--since", "yesterday", db=db)
    assert bad.returncode == 2
    assert "neither an age" in bad.stderr


# -- dead retry -----------------------------------------------------------------------------


def test_dead_retry_by_id_rearms_and_wakes_the_daemons(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute("LISTEN token_insert")
        result = mailroom_cli("dead", "retry", str(ids["rejected"]), db=db)
        assert result.returncode == 0, result.stderr
        assert "retried 1 dead letter(s)" in result.stdout
        notes = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    assert notes == [("token_insert", "user_action_queue")]
    status, attempts, due, error = _row(
        conn, ids["rejected"], "status, attempts, next_attempt_at <= now(), last_error"
    )
    assert (status, attempts, due) == ("pending", 0, True)
    assert error.startswith("MESSAGE_REJECTED")  # kept until a new try replaces it
    history = conn.execute(
        "SELECT count(*) FROM mailroom.attempts WHERE message_id = %s", (ids["rejected"],)
    ).fetchone()
    assert history == (1,)
    # the other dead letters are untouched
    assert _row(conn, ids["throttled_1"], "status") == ("dead",)


def test_dead_retry_refuses_what_is_not_a_dead_letter(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    before = conn.execute("SELECT id, status, attempts FROM mailroom.outbox ORDER BY id").fetchall()
    result = mailroom_cli(
        "dead", "retry", str(ids["rejected"]), str(ids["sent"]), str(ids["token"]), "999999",
        db=db,
    )  # fmt: skip
    assert result.returncode == 1
    assert "nothing retried" in result.stderr
    assert f"message {ids['sent']} is sent, not dead" in result.stderr
    assert f"message {ids['token']} is a token email" in result.stderr
    assert "message 999999 does not exist" in result.stderr
    after = conn.execute("SELECT id, status, attempts FROM mailroom.outbox ORDER BY id").fetchall()
    assert after == before

    unselected = mailroom_cli("dead", "retry", db=db)
    assert unselected.returncode == 2
    assert "say which dead letters to retry" in unselected.stderr


def test_dead_retry_by_filter_skips_token_emails(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    result = mailroom_cli("dead", "retry", "--since", "2h", db=db)
    assert result.returncode == 0, result.stderr
    assert "skipping 1 token email(s)" in result.stdout
    assert "retried 2 dead letter(s)" in result.stdout
    for name in ("throttled_1", "throttled_2"):
        assert _row(conn, ids[name], "status, attempts") == ("pending", 0)
    for name in ("token", "rejected", "other_queue"):
        assert _row(conn, ids[name], "status") == ("dead",)
    unconfirmed = mailroom_cli("dead", "retry", "--all", db=db)
    assert unconfirmed.returncode == 2  # --all asks first, like purge; no terminal here
    assert "without --yes" in unconfirmed.stderr
    assert _row(conn, ids["rejected"], "status") == ("dead",)
    again = mailroom_cli("dead", "retry", "--all", "--yes", db=db)
    assert "retried 1 dead letter(s)" in again.stdout  # the rejected one; bulk is elsewhere
    assert _row(conn, ids["other_queue"], "status") == ("dead",)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_dead_retry_and_purge_work_in_batches_with_progress(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status, attempts, "
        "last_error, updated_at) SELECT ARRAY['bulk' || i || '@example.com'], 's', 't', 'dead', "
        "3, 'MESSAGE_REJECTED: no', now() - i * interval '1 second' "
        "FROM generate_series(1, 1203) AS i"
    )
    selection = admin_dead.Selection(queue="user_action_queue", reason="rejected")
    with psycopg.connect(conn.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN token_insert")
        terminal = _Terminal()
        progress = admin_output.Progress("retried", 1203, stream=terminal)
        done = admin_dead.dead_retry(conn, selection, channel="token_insert", progress=progress)
        notes = list(listener.notifies(timeout=1, stop_after=3))
    assert done == 1203
    assert terminal.getvalue() == "\rretried 500/1203\rretried 1000/1203\rretried 1203/1203"
    assert len(notes) == 3  # one wake-up per batch
    counts = conn.execute(
        "SELECT status, min(attempts), max(attempts), count(*) FROM mailroom.outbox GROUP BY 1"
    ).fetchall()
    assert counts == [("pending", 0, 0, 1203)]

    conn.execute("UPDATE mailroom.outbox SET status = 'dead'")
    assert (
        admin_dead.dead_purge(conn, admin_dead.Selection(queue="user_action_queue"), batch=200)
        == 1203
    )
    assert conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone() == (0,)


def test_dead_retry_then_a_daemon_sends_it(
    db: str, conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.fail_address("flaky@", "message_rejected")
    daemon = spawn()  # polls once a minute: only the retry's NOTIFY can wake it in time
    daemon.wait_listening()
    sent = mailroom_cli("send-test", "--to", "flaky@example.com", "--wait", "--timeout", "20",
                        db=db)  # fmt: skip
    assert sent.returncode == 1, sent.stdout + sent.stderr
    assert "dead after 1 attempt(s): MessageRejected" in sent.stdout
    message_id = int(sent.stdout.split()[2])
    standin.reset()
    retried = mailroom_cli("dead", "retry", str(message_id), db=db)
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: _row(conn, message_id, "status") == ("sent",), timeout=10)
    outcomes = conn.execute(
        "SELECT attempt, outcome FROM mailroom.attempts WHERE message_id = %s ORDER BY at, id",
        (message_id,),
    ).fetchall()
    assert outcomes == [(1, "dead"), (1, "sent")]
    assert len(standin.sent()) == 1


# -- dead purge -----------------------------------------------------------------------------


def test_dead_purge_dry_run_confirmation_and_yes(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    dry = mailroom_cli("dead", "purge", "--template", "welcome", "--dry-run", db=db)
    assert dry.returncode == 0, dry.stderr
    assert "would delete 2 dead letter(s) and their attempts" in dry.stdout
    assert _row(conn, ids["throttled_1"], "status") == ("dead",)

    refused = mailroom_cli("dead", "purge", "--template", "welcome", db=db)
    assert refused.returncode == 2
    assert "refusing to delete 2 dead letter(s) and their attempts without --yes" in refused.stderr
    assert _row(conn, ids["throttled_1"], "status") == ("dead",)

    unselected = mailroom_cli("dead", "purge", "--yes", db=db)
    assert unselected.returncode == 2

    purged = mailroom_cli("dead", "purge", str(ids["rejected"]), "--reason", "rejected", "--yes",
                          db=db)  # fmt: skip
    assert purged.returncode == 0, purged.stderr
    assert "deleted 1 dead letter(s)" in purged.stdout
    remaining = conn.execute("SELECT count(*) FROM mailroom.outbox WHERE id = %s",
                             (ids["rejected"],)).fetchone()  # fmt: skip
    assert remaining == (0,)
    orphans = conn.execute("SELECT count(*) FROM mailroom.attempts WHERE message_id = %s",
                           (ids["rejected"],)).fetchone()  # fmt: skip
    assert orphans == (0,)

    everything = mailroom_cli("dead", "purge", "--all", "--yes", db=db)
    assert "deleted 3 dead letter(s)" in everything.stdout  # this queue's; not the sent ones
    left = conn.execute("SELECT status, count(*) FROM mailroom.outbox GROUP BY 1 ORDER BY 1")
    assert dict(left.fetchall()) == {
        "dead": 1,
        "pending": 2,
        "retrying": 1,
        "sending": 2,
        "sent": 2,
    }


def test_dead_purge_refuses_sent_ids(db: str, conn: psycopg.Connection[Any]) -> None:
    ids = seed(conn)
    result = mailroom_cli("dead", "purge", str(ids["sent"]), "--yes", db=db)
    assert result.returncode == 0
    assert "no dead letters match" in result.stdout
    assert _row(conn, ids["sent"], "status") == ("sent",)


# -- send-test ------------------------------------------------------------------------------


def test_send_test_waits_for_the_outcome(
    db: str, conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    spawn().wait_listening()
    result = mailroom_cli("send-test", "--to", "ops@example.com", "--wait", db=db)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("enqueued message ")
    assert lines[-1].startswith("sent: SES message id ")
    [call] = standin.sent()
    assert "ops@example.com" in json.dumps(call)

    templated = mailroom_cli("send-test", "--to", "ops@example.com", "--template", "welcome",
                             "--data", '{"name": "Ops"}', db=db)  # fmt: skip
    assert templated.returncode == 0, templated.stderr
    message_id = int(templated.stdout.split()[2])
    assert _row(conn, message_id, "template, template_data") == ("welcome", {"name": "Ops"})


def test_send_test_without_a_daemon_times_out(db: str) -> None:
    result = mailroom_cli("send-test", "--to", "ops@example.com", "--wait", "--timeout", "0.5",
                          db=db)  # fmt: skip
    assert result.returncode == 1
    assert "still pending after 0.5 s: is a daemon serving queue user_action_queue?" in (
        result.stdout
    )


def test_send_test_bad_input_is_a_usage_error(db: str) -> None:
    bad_address = mailroom_cli("send-test", "--to", "not an address", db=db)
    assert bad_address.returncode == 2
    assert "outbox_addresses_must_be_ascii_user_at_domain" in bad_address.stderr
    data_alone = mailroom_cli("send-test", "--to", "a@example.com", "--data", "{}", db=db)
    assert data_alone.returncode == 2
    assert "--data goes with --template" in data_alone.stderr
    not_object = mailroom_cli("send-test", "--to", "a@example.com", "--template", "t",
                              "--data", "[1]", db=db)  # fmt: skip
    assert not_object.returncode == 2
    assert "JSON object" in not_object.stderr


# -- every command: errors, --dsn, --help ---------------------------------------------------


@pytest.fixture
def unmigrated(pg_admin_dsn: str) -> Any:
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin_conn:
        admin_conn.execute("DROP DATABASE IF EXISTS admin_unmigrated WITH (FORCE)")
        admin_conn.execute("CREATE DATABASE admin_unmigrated")
    yield psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname="admin_unmigrated")
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin_conn:
        admin_conn.execute("DROP DATABASE IF EXISTS admin_unmigrated WITH (FORCE)")


def test_every_command_on_an_unmigrated_database_says_run_migrate(unmigrated: str) -> None:
    for command in COMMANDS:
        result = mailroom_cli(*command, db=unmigrated)
        assert result.returncode == 3, (command, result.stderr)
        assert "run `mailroom migrate`" in result.stderr, command


def test_every_command_on_an_unreachable_database_exits_3() -> None:
    dsn = "postgresql://ops:hunter2@127.0.0.1:1/app"
    for command in COMMANDS:
        result = mailroom_cli("--dsn", dsn, *command)
        assert result.returncode == 3, (command, result.stderr)
        assert "cannot reach the database" in result.stderr
        assert "hunter2" not in result.stderr


def test_dsn_option_overrides_the_environment(db: str, tmp_path: Path) -> None:
    wrong = {"MAILROOM_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing"}
    before = mailroom_cli("--dsn", db, "status", "--json", env=wrong)
    assert before.returncode == 0, before.stderr
    after = mailroom_cli("dead", "list", "--dsn", db, env=wrong)
    assert after.returncode == 0, after.stderr
    url_file = tmp_path / "url"
    url_file.write_text("postgresql://nobody@127.0.0.1:1/nothing")
    with_file = mailroom_cli(
        "status", "--dsn", db, env={"MAILROOM_DATABASE_URL_FILE": str(url_file)}
    )
    assert with_file.returncode == 0, with_file.stderr
    missing = mailroom_cli("status")
    assert missing.returncode == 2
    assert "MAILROOM_DATABASE_URL: required" in missing.stderr


def test_every_command_has_help_with_examples() -> None:
    for command in (*(c[:2] if c[0] == "dead" else c[:1] for c in COMMANDS), ("dead",)):
        result = mailroom_cli(*command, "--help")
        assert result.returncode == 0, command
        assert "examples:" in result.stdout, command
        assert f"mailroom {' '.join(command)}" in result.stdout, command
        assert "exit codes" in result.stdout, command
    top = mailroom_cli("--help")
    for command in ("status", "show", "dead", "send-test", "--dsn"):
        assert command in top.stdout


def test_display_names_are_masked_like_addresses(db: str, conn: psycopg.Connection[Any]) -> None:
    # a display name says as much about a person as the address: masked unless --reveal
    message_id = mailroom.enqueue(
        conn, ["Alice Liddell <alice@example.com>", "Jürgen Groß <j@example.com>"],
        subject="S", text="t", reply_to='"Carol Q. Public" <carol@example.com>',
    )  # fmt: skip
    out = mailroom_cli("show", str(message_id), db=db).stdout
    for secret in ("Alice", "Liddell", "alice@", "Carol", "Public", "=?UTF-8?"):
        assert secret not in out, secret
    assert '"***" <a***@example.com>' in out
    revealed = mailroom_cli("show", str(message_id), "--reveal", db=db).stdout
    assert '"Alice Liddell" <alice@example.com>' in revealed
