"""Retention of SES events (MAILROOM_RETENTION_EVENTS, sql/0013): old events go in small
batches through mailroom.prune_events, recent ones and the suppression list stay, the
daemon role can prune only what is at least a day old, and a running daemon does it. And
`mailroom stats` with the bounces and complaints of those events."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import errors

import mailroom
from conftest import wait_for
from mailroom.config import settings as configuration
from mailroom.daemon import retention
from mailroom.embedded import free_port
from mailroom.events import parsing as events
from mailroom.outbox import query
from test_admin import mailroom_cli
from test_deliverability import bounce, ingest, sent_message
from test_events import fixture, sns
from test_operations import _get, _samples

# the changes feed's pruning (0030) is tests/test_changes.py's: off here
BASE = dataclasses.replace(
    configuration.load({"MAILROOM_DATABASE_URL": "postgresql:///unused"}), retention_changes=0.0
)
OFF = dataclasses.replace(BASE, retention_sent=0.0, retention_dead=0.0)  # events only


def seed_events(conn: psycopg.Connection[Any], old: int = 5, recent: int = 2) -> None:
    """``old`` permanent bounces 31 days ago (past the default 30 d), ``recent`` 29 days
    ago, each of its own address: every one also suppresses its address."""

    def at(days: int) -> str:
        return (datetime.now(UTC) - timedelta(days=days)).isoformat()

    records = [bounce(f"old{i}@example.com", message_id=f"o-{i}", at=at(31)) for i in range(old)]
    records += [
        bounce(f"new{i}@example.com", message_id=f"n-{i}", at=at(29)) for i in range(recent)
    ]
    ingest(conn, records)


def event_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM mailroom.events").fetchone()
    assert row is not None
    return int(row[0])


def prune_once(db: str, config: configuration.Config) -> dict[str, int]:
    async def run() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as aconn:
            return await retention.prune_once(aconn, config)

    return anyio.run(run)


def test_old_events_go_in_batches_recent_ones_and_suppressions_stay(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    seed_events(conn)
    config = dataclasses.replace(OFF, retention_batch=2)
    passes = [prune_once(db, config) for _ in range(4)]
    assert passes == [{"events": 2}, {"events": 2}, {"events": 1}, {"events": 0}]
    left = conn.execute("SELECT recipient FROM mailroom.events ORDER BY recipient").fetchall()
    assert left == [("new0@example.com",), ("new1@example.com",)]
    # the suppression list is not history: pruning the bounce keeps the address suppressed
    suppressed = conn.execute("SELECT count(*) FROM mailroom.suppressions").fetchone()
    assert suppressed == (7,)


def test_zero_or_disabled_retention_keeps_every_event(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    seed_events(conn)
    assert prune_once(db, dataclasses.replace(OFF, retention_events=0.0)) == {}
    assert prune_once(db, dataclasses.replace(BASE, retention_enabled=False)) == {}
    assert event_count(conn) == 7
    shorter = dataclasses.replace(OFF, retention_events=28 * 86400.0)
    assert prune_once(db, shorter) == {"events": 7}


def test_the_function_prunes_through_its_index_and_refuses_a_short_period(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    conn.execute(
        "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
        " occurred_at) SELECT 'k' || i, 'm' || i, 'r' || i || '@example.com', 'Delivery',"
        " now() - i * interval '1 minute' FROM generate_series(1, 50000) AS i"
    )
    conn.execute("ANALYZE mailroom.events")
    plan = conn.execute(
        "EXPLAIN SELECT id FROM mailroom.events WHERE occurred_at < now() - interval '1 day'"
        " ORDER BY occurred_at LIMIT 500 FOR UPDATE SKIP LOCKED"
    ).fetchall()
    text = "\n".join(line for (line,) in plan)
    assert "events_occurred_at" in text, text
    assert "Seq Scan" not in text, text
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        one_week = {"keep_seconds": 7 * 86400.0, "limit": 500}
        assert daemon.execute(query("prune_events"), one_week).fetchone() == (500,)
        # inside the transient-bounce window (7 days by default) pruning would change
        # suppression decisions: the daemon's role cannot ask for it, whatever it passes
        refused = (
            (3600.0, 10), (0.0, 10), (86400.0, 10), (6.9 * 86400, 10),
            (7 * 86400.0, 0), (7 * 86400.0, 20000),
            (float("nan"), 10), (float("inf"), 10), (float("-inf"), 10),
        )  # fmt: skip
        for keep, limit in refused:
            with pytest.raises(errors.InvalidParameterValue, match="at least 604800"):
                daemon.execute(query("prune_events"), {"keep_seconds": keep, "limit": limit})
        # events younger than a week: out of the daemon's reach, directly or not
        with pytest.raises(errors.InsufficientPrivilege):
            daemon.execute("DELETE FROM mailroom.events")
    assert event_count(conn) == 50000 - 500  # one batch, of the oldest
    with (
        psycopg.connect(login_as("mailroom_app"), autocommit=True) as app,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        app.execute(query("prune_events"), {"keep_seconds": 7 * 86400.0, "limit": 10})


def test_events_retention_settings() -> None:
    def load(**env: str) -> configuration.Config:
        return configuration.load({"MAILROOM_DATABASE_URL": "postgresql:///x", **env})

    assert load().retention_events == 30 * 86400
    assert load(MAILROOM_RETENTION_EVENTS="90d").retention_events == 90 * 86400
    assert load(MAILROOM_RETENTION_EVENTS="0").retention_events == 0
    assert load(MAILROOM_RETENTION_EVENTS="604800000").retention_events == 7 * 86400
    shown = dict(configuration.describe(load(MAILROOM_RETENTION_EVENTS="8d")))
    assert shown["MAILROOM_RETENTION_EVENTS"] == str(8 * 86400 * 1000)
    for bad, says in (
        ("12h", "at least seven days"),
        ("6d", "at least seven days"),
        ("30 days", "whole number with a unit"),
        ("3d", "at least seven days"),
    ):
        with pytest.raises(configuration.ConfigError) as caught:
            load(MAILROOM_RETENTION_EVENTS=bad)
        (problem,) = caught.value.problems
        assert problem.startswith("MAILROOM_RETENTION_EVENTS: "), problem
        assert says in problem, problem
    # a shorter window does not allow a retention under the database's floor of 7 days
    with pytest.raises(configuration.ConfigError, match="at least seven days"):
        load(MAILROOM_RETENTION_EVENTS="3d", MAILROOM_SUPPRESS_TRANSIENT_WINDOW="2d")
    assert load(MAILROOM_RETENTION_EVENTS="7d", MAILROOM_SUPPRESS_TRANSIENT_WINDOW="2d")
    # a longer window needs a longer retention
    with pytest.raises(configuration.ConfigError, match="SUPPRESS_TRANSIENT_WINDOW"):
        load(MAILROOM_RETENTION_EVENTS="10d", MAILROOM_SUPPRESS_TRANSIENT_WINDOW="14d")


def test_a_running_daemon_prunes_old_events_and_counts_them(
    conn: psycopg.Connection[Any], spawn: Any
) -> None:
    seed_events(conn)
    port = free_port()
    daemon = spawn(MAILROOM_HTTP_PORT=str(port), MAILROOM_RETENTION_BATCH="2")
    daemon.wait_listening()
    wait_for(lambda: event_count(conn) == 2, timeout=30)
    wait_for(lambda: any(e.get("event") == "pruned" for e in daemon.events()))
    pruned = next(e for e in daemon.events() if e.get("event") == "pruned")
    assert pruned["events"] == 5
    samples = _samples(_get(port, "/metrics")[1])
    assert samples[("mailroom_pruned_events_total", ())] == 5


# -- stats with deliverability (item 2 of the same issue: they read the same events) ---------


def test_stats_count_bounces_and_complaints_per_template_and_reason(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    welcome = mailroom.enqueue(conn, "ann@example.com", template="welcome", data={"x": 1})
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sent', sent_at = now(), provider_message_id = 'w-1'"
        " WHERE id = %s",
        [welcome],
    )
    sent_message(conn, ["bob@example.com", "cy@example.com"], "s-1")  # a simple message
    now = datetime.now(UTC).isoformat()
    complaint = fixture("complaint")
    complaint["mail"]["messageId"] = "s-1"
    complaint["complaint"]["timestamp"] = now
    records = [
        bounce("ann@example.com", message_id="w-1", at=now),
        bounce("bob@example.com", "Transient", message_id="s-1", at=now),
        *events.parse(sns(complaint)),
        bounce("zed@example.com", message_id="elsewhere", at=now),  # not mailroom's mail
        # last month's bounce of the same message: outside --since 1h
        bounce("cy@example.com", message_id="s-1", at="2024-05-01T10:00:00Z"),
    ]
    ingest(conn, records)

    operator = login_as("mailroom_operator")
    result = mailroom_cli("stats", "--since", "1h", "--json", db=operator)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    by_template = {t["template"]: t for t in report["templates"]}
    assert by_template["welcome"] == {
        "template": "welcome", "sent": 0, "retried": 0, "dead": 0, "bounced": 1,
        "complained": 0}  # fmt: skip
    assert (by_template["simple"]["bounced"], by_template["simple"]["complained"]) == (1, 1)
    assert by_template["(not in the outbox)"]["bounced"] == 1
    reasons = {(d["template"], d["event"], d["reason"]): d["recipients"]
               for d in report["deliverability"]}  # fmt: skip
    assert reasons == {
        ("welcome", "bounce", "Permanent/General"): 1,
        ("simple", "bounce", "Transient/MailboxFull"): 1,
        ("simple", "complaint", "abuse"): 1,
        ("(not in the outbox)", "bounce", "Permanent/General"): 1,
    }
    text = mailroom_cli("stats", "--since", "1h", db=operator).stdout
    head = text.splitlines()[1].split()
    assert head == ["template", "sent", "retried", "dead", "bounced", "complained"]
    assert "Transient/MailboxFull" in text
    assert "@" not in text  # no addresses in stats
    # a queue's stats leave out mail that is not in the outbox
    bulk = json.loads(mailroom_cli("stats", "--since", "1h", "--queue", "bulk", "--json",
                                   db=operator).stdout)  # fmt: skip
    assert bulk["templates"] == []
    assert bulk["deliverability"] == []
