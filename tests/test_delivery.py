"""End to end: a real daemon process, a real PostgreSQL, SES over real HTTP."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import psycopg

import mailroom
from conftest import all_final, statuses, wait_for
from sesv2_standin import SesStandin


def test_delivers_templated_simple_and_raw_messages(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    raw = EmailMessage()
    raw["From"] = "billing@example.com"
    raw["To"] = "carol@example.com"
    raw["Subject"] = "Invoice"
    raw.set_content("see attachment")
    with conn.transaction():
        ids = [
            mailroom.enqueue(conn, "ann@example.com", template="activationv1",
                             data={"login": "ann", "secret": "s1"}),
            mailroom.enqueue(conn, "bob@example.com", template="activationv1",
                             data={"login": "bob", "secret": "s2"}),
            mailroom.enqueue(conn, "dave@example.com", subject="Hi", text="Hello",
                             html="<p>Hello</p>", from_address="team@example.com",
                             cc=["eve@example.com"]),
            mailroom.enqueue(conn, "carol@example.com", raw=raw.as_bytes()),
        ]  # fmt: skip
    daemon = spawn()
    wait_for(lambda: all_final(conn, 4))
    assert statuses(conn) == {"sent": 4}

    sent = standin.sent()
    by_to = {record["to"][0]: record for record in sent}
    assert set(by_to) == {
        "ann@example.com",
        "bob@example.com",
        "dave@example.com",
        "carol@example.com",
    }
    assert by_to["ann@example.com"]["operation"] == "SendBulkEmail"
    assert by_to["ann@example.com"]["template"] == "activationv1"
    assert by_to["ann@example.com"]["template_data"] == {"login": "ann", "secret": "s1"}
    assert by_to["ann@example.com"]["from"] == "noreply@example.com"  # MAILROOM_SES_SOURCE default
    assert by_to["ann@example.com"]["configuration_set"] == "default"
    # messages sharing template, sender and configuration set travel in one bulk call
    assert standin.calls().get("SendBulkEmail") == 1
    assert by_to["dave@example.com"]["subject"] == "Hi"
    assert by_to["dave@example.com"]["cc"] == ["eve@example.com"]
    assert by_to["dave@example.com"]["from"] == "team@example.com"
    assert by_to["carol@example.com"]["raw"] == raw.as_bytes()

    rows = conn.execute(
        "SELECT id, provider_message_id, attempts, sent_at IS NOT NULL, locked_by"
        " FROM mailroom.outbox ORDER BY id"
    ).fetchall()
    provider_ids = {record["message_id"] for record in sent}
    for row_id, provider_id, attempts, has_sent_at, locked_by in rows:
        assert row_id in ids
        assert provider_id in provider_ids
        assert (attempts, has_sent_at, locked_by) == (1, True, None)
    attempts = conn.execute(
        "SELECT message_id, attempt, outcome FROM mailroom.attempts ORDER BY message_id"
    ).fetchall()
    assert attempts == [(i, 1, "sent") for i in sorted(ids)]
    daemon.kill()


def _enqueue_numbered(conn: psycopg.Connection[Any], count: int, **fields: Any) -> list[int]:
    """Templated messages whose data carries a number, to recognise duplicates at SES."""
    with conn.transaction():
        return [
            mailroom.enqueue(conn, f"user{n}@example.com", template="activationv1",
                             data={"n": n}, **fields)
            for n in range(count)
        ]  # fmt: skip


def _sends_per_number(standin: SesStandin) -> dict[int, int]:
    counts: dict[int, int] = {}
    for record in standin.sent():
        n = record["template_data"]["n"]
        counts[n] = counts.get(n, 0) + 1
    return counts


def test_lone_message_is_not_held_for_the_batch_timeout(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    daemon = spawn(MAILROOM_BATCH_TIMEOUT="30000", MAILROOM_BATCH_LIMIT="100")
    daemon.wait_listening()
    mailroom.enqueue(conn, "reset@example.com", subject="Reset", text="link")
    # nothing in flight: sent on the notification, not after the 30 s batch timeout
    wait_for(lambda: all_final(conn, 1), timeout=10)


def test_two_daemons_share_the_work_without_sending_a_row_twice(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.latency = 0.01
    settings = {"MAILROOM_BATCH_LIMIT": "20", "MAILROOM_SES_CONCURRENCY": "4"}
    first, second = spawn(**settings), spawn(**settings)
    first.wait_listening()
    second.wait_listening()
    _enqueue_numbered(conn, 200)  # one big transaction...
    for n in range(200, 400):  # ...then one transaction per message, as applications do
        mailroom.enqueue(conn, f"user{n}@example.com", template="activationv1", data={"n": n})
    wait_for(lambda: all_final(conn, 400), timeout=60)
    assert statuses(conn) == {"sent": 400}
    per_number = _sends_per_number(standin)
    assert len(per_number) == 400
    assert max(per_number.values()) == 1
    workers = conn.execute("SELECT count(DISTINCT worker) FROM mailroom.attempts").fetchone()
    assert workers == (2,)  # both replicas took part


def test_leases_only_what_the_call_slots_can_start_soon(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    # 200 one-call messages, 4 call slots, batches of 25: claiming a batch per free slot
    # would lease 100 at once; the daemon leases the next batch only when fewer calls
    # wait than there are slots (so at most about 25 + 4 + 25).
    standin.latency = 0.05
    with conn.transaction():
        for n in range(200):
            mailroom.enqueue(conn, f"u{n}@example.com", subject="s", text=f"m{n}")
    spawn(MAILROOM_BATCH_LIMIT="25", MAILROOM_SES_CONCURRENCY="4")
    leased = []

    def done() -> bool:
        counts = statuses(conn)
        leased.append(counts.get("sending", 0))
        return counts.get("sent", 0) == 200

    wait_for(done, timeout=60, interval=0.02)
    assert max(leased) <= 25 + 4 + 25
    assert max(leased) >= 25  # the bound was tested while work was leased
