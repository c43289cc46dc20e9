"""Retention: old sent and dead messages (and their attempts) are pruned in small batches,
recent rows and live work are left alone, and a setting turns it off."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import anyio
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import mailroom
from conftest import wait_for
from mailroom.config import settings as configuration
from mailroom.daemon import retention
from mailroom.embedded import free_port
from mailroom.outbox import Outbox
from test_operations import _get, _samples

# the changes feed's pruning (0030) is tests/test_changes.py's: off here
BASE = dataclasses.replace(
    configuration.load({"MAILROOM_DATABASE_URL": "postgresql:///unused"}), retention_changes=0.0
)


def seed(conn: psycopg.Connection[Any], *, old_sent: int = 5, old_dead: int = 3) -> None:
    """Old and recent sent and dead rows, old live work, and another queue's old rows."""

    def add(count: int, queue: str, assignments: str) -> None:
        for i in range(count):
            mid = mailroom.enqueue(conn, f"r{i}@example.com", subject="s", text="t", queue=queue)
            update = f"UPDATE mailroom.outbox SET {assignments} WHERE id = %s"  # noqa: S608
            conn.execute(update, (mid,))
            conn.execute(
                "INSERT INTO mailroom.attempts (message_id, attempt, outcome) "
                "VALUES (%s, 1, 'retry'), (%s, 2, 'sent')",
                (mid, mid),
            )

    long_ago = "created_at = now() - interval '90 days', updated_at = now() - interval '90 days'"
    add(old_sent, "user_action_queue", f"status = 'sent', sent_at = now() - interval '8 days', "
        f"{long_ago}")  # fmt: skip
    add(2, "user_action_queue", f"status = 'sent', sent_at = now() - interval '6 days', {long_ago}")
    add(old_dead, "user_action_queue", "status = 'dead', updated_at = now() - interval '31 days'")
    add(1, "user_action_queue", "status = 'dead', updated_at = now() - interval '29 days'")
    # cancelled by an operator: final, kept as long as dead letters
    add(1, "user_action_queue", "status = 'cancelled', updated_at = now() - interval '31 days'")
    add(1, "user_action_queue", "status = 'cancelled', updated_at = now() - interval '29 days'")
    add(1, "user_action_queue", f"status = 'pending', {long_ago}")
    add(1, "user_action_queue", f"status = 'retrying', {long_ago}")
    add(1, "user_action_queue", f"status = 'sending', locked_by = 'w', {long_ago}, "
        "locked_until = now() - interval '89 days'")  # fmt: skip
    add(2, "bulk", f"status = 'sent', sent_at = now() - interval '80 days', {long_ago}")


def counts(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT queue, status, count(*) FROM mailroom.outbox GROUP BY 1, 2")
    return {(q, s): int(n) for q, s, n in rows.fetchall()}


def orphan_attempts(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM mailroom.attempts a "
        "WHERE NOT EXISTS (SELECT FROM mailroom.outbox o WHERE o.id = a.message_id)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def prune_once(db: str, config: configuration.Config) -> dict[str, int]:
    async def run() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as aconn:
            return await retention.prune_once(aconn, config)

    return anyio.run(run)


def test_prunes_old_sent_and_dead_in_batches_and_nothing_else(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    seed(conn)
    attempts_before = conn.execute("SELECT count(*) FROM mailroom.attempts").fetchone()
    assert attempts_before == (2 * 18,)
    config = dataclasses.replace(BASE, retention_batch=2)
    passes = []
    while True:
        pruned = prune_once(db, config)
        passes.append(pruned)
        if not any(pruned.values()):
            break
    assert passes == [
        {"sent": 2, "dead": 2, "cancelled": 1, "events": 0},
        {"sent": 2, "dead": 1, "cancelled": 0, "events": 0},
        {"sent": 1, "dead": 0, "cancelled": 0, "events": 0},
        {"sent": 0, "dead": 0, "cancelled": 0, "events": 0},
    ]
    assert counts(conn) == {
        ("user_action_queue", "sent"): 2,  # 6 days old: kept for 7
        ("user_action_queue", "dead"): 1,  # 29 days old: kept for 30
        ("user_action_queue", "cancelled"): 1,  # likewise
        ("user_action_queue", "pending"): 1,
        ("user_action_queue", "retrying"): 1,
        ("user_action_queue", "sending"): 1,
        ("bulk", "sent"): 2,  # another queue's daemons prune it
    }
    assert conn.execute("SELECT count(*) FROM mailroom.attempts").fetchone() == (2 * 9,)
    assert orphan_attempts(conn) == 0


def test_pruning_uses_the_indexes(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, status, sent_at, "
        "updated_at) SELECT ARRAY['x@example.com'], 's', 't', (ARRAY['sent', 'dead'])[i % 2 + 1],"
        " now() - i * interval '1 minute', now() - i * interval '1 minute' "
        "FROM generate_series(1, 100000) AS i"
    )
    conn.execute("ANALYZE mailroom.outbox")
    for name, index in (("prune_sent", "outbox_sent_at"), ("prune_dead", "outbox_dead")):
        plan = conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + mailroom.outbox.query(name),
            {"queue": "user_action_queue", "keep_seconds": 3600.0, "limit": 500},
        ).fetchall()
        text = "\n".join(line for (line,) in plan)
        assert f"Index Scan using {index} on outbox" in text, text  # the batch, oldest first
        assert "Index Scan using outbox_pkey on outbox m" in text, text  # then each row
        assert "Seq Scan" not in text, text
    # exactly one batch per statement, whatever the plan
    row = conn.execute(
        mailroom.outbox.query("prune_dead"),
        {"queue": "user_action_queue", "keep_seconds": 3600.0, "limit": 500},
    ).fetchone()
    assert row == (500,)


def test_locked_rows_are_skipped_not_waited_for(db: str, conn: psycopg.Connection[Any]) -> None:
    seed(conn, old_sent=2, old_dead=0)
    with psycopg.connect(db) as holder, holder.transaction():
        held = holder.execute(
            "SELECT id FROM mailroom.outbox WHERE status = 'sent' AND sent_at < now() - "
            "interval '7 days' AND queue = 'user_action_queue' ORDER BY id LIMIT 1 FOR UPDATE"
        ).fetchone()
        assert held is not None
        done = threading.Event()
        result: dict[str, int] = {}

        def prune() -> None:
            result.update(prune_once(db, BASE))
            done.set()

        threading.Thread(target=prune, daemon=True).start()
        assert done.wait(10), "pruning waited for a locked row"
    assert result == {"sent": 1, "dead": 0, "cancelled": 1, "events": 0}
    remaining = conn.execute("SELECT id FROM mailroom.outbox WHERE id = %s", held).fetchone()
    assert remaining == held


def test_disabled_retention_prunes_nothing(db: str, conn: psycopg.Connection[Any]) -> None:
    seed(conn)
    before = counts(conn)
    off = configuration.load(
        {"MAILROOM_DATABASE_URL": db, "MAILROOM_RETENTION_ENABLED": "false"}
    )  # fmt: skip
    assert retention.periods(off) == {}
    assert prune_once(db, off) == {}

    async def run_returns_at_once() -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(db, open=False)
        with anyio.fail_after(5):
            await retention.run(Outbox(pool, queue="q", owner="t"), off)

    anyio.run(run_returns_at_once)
    assert counts(conn) == before
    keep_sent = dataclasses.replace(BASE, retention_sent=0.0)
    assert prune_once(db, keep_sent) == {"dead": 3, "cancelled": 1, "events": 0}
    assert counts(conn)[("user_action_queue", "sent")] == before[("user_action_queue", "sent")]


def test_the_background_task_prunes_batch_after_batch(
    db: str, conn: psycopg.Connection[Any]
) -> None:
    seed(conn, old_sent=7, old_dead=0)
    config = dataclasses.replace(BASE, retention_batch=3)

    async def run() -> None:
        async with AsyncConnectionPool(db, kwargs={"autocommit": True}) as pool:
            with anyio.move_on_after(1.5):
                outbox = Outbox(pool, queue="user_action_queue", owner="t")
                await retention.run(outbox, config, pause=0.05, idle=60)

    anyio.run(run)
    assert counts(conn)[("user_action_queue", "sent")] == 2


def test_retention_settings() -> None:
    def load(**env: str) -> configuration.Config:
        return configuration.load({"MAILROOM_DATABASE_URL": "postgresql:///x", **env})

    default = load()
    assert (default.retention_enabled, default.retention_batch) == (True, 500)
    assert (default.retention_sent, default.retention_dead) == (7 * 86400, 30 * 86400)
    assert load(MAILROOM_RETENTION_SENT="604800000").retention_sent == 7 * 86400  # milliseconds
    assert load(MAILROOM_RETENTION_SENT="7d").retention_sent == 7 * 86400
    assert load(MAILROOM_RETENTION_DEAD="12h").retention_dead == 12 * 3600
    assert load(MAILROOM_RETENTION_DEAD="90s").retention_dead == 90
    assert load(MAILROOM_RETENTION_DEAD="0").retention_dead == 0
    shown = dict(configuration.describe(load(MAILROOM_RETENTION_SENT="1d")))
    assert shown["MAILROOM_RETENTION_SENT"] == "86400000"
    assert shown["MAILROOM_RETENTION_ENABLED"] == "true"
    with pytest.raises(configuration.ConfigError) as caught:
        load(MAILROOM_RETENTION_SENT="7 days", MAILROOM_RETENTION_BATCH="0",
             MAILROOM_RETENTION_ENABLED="maybe")  # fmt: skip
    problems = "\n".join(caught.value.problems)
    for variable in ("SENT", "BATCH", "ENABLED"):
        assert f"MAILROOM_RETENTION_{variable}: " in problems


def test_a_running_daemon_prunes_and_counts(conn: psycopg.Connection[Any], spawn: Any) -> None:
    seed(conn)
    port = free_port()
    daemon = spawn(
        MAILROOM_HTTP_PORT=str(port),
        MAILROOM_RETENTION_SENT="7d",
        MAILROOM_RETENTION_DEAD="30d",
        MAILROOM_RETENTION_BATCH="2",
    )
    daemon.wait_listening()

    def old() -> tuple[int, int, int, int]:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'sent' AND sent_at < now() - '7d'::interval),"
            " count(*) FILTER (WHERE status = 'dead' AND updated_at < now() - '30d'::interval),"
            " count(*) FILTER (WHERE status = 'sent' AND sent_at < now() - '5d'::interval),"
            " count(*) FILTER (WHERE status = 'dead') "
            "FROM mailroom.outbox WHERE queue = 'user_action_queue'"
        ).fetchone()
        assert row is not None
        return tuple(row)  # type: ignore[return-value]

    # gone: 5 old sent, 3 old dead; kept: 2 sent 6 days ago, 1 dead 29 days ago
    wait_for(lambda: old() == (0, 0, 2, 1), timeout=30)
    assert orphan_attempts(conn) == 0
    # logged once caught up, after the counters moved (a commit is seen before they do)
    wait_for(lambda: any(e.get("event") == "pruned" for e in daemon.events()))
    pruned = next(e for e in daemon.events() if e.get("event") == "pruned")
    assert (pruned["sent"], pruned["dead"]) == (5, 3)
    samples = _samples(_get(port, "/metrics")[1])
    assert samples[("mailroom_pruned_messages_total", (("status", "sent"),))] == 5
    assert samples[("mailroom_pruned_messages_total", (("status", "dead"),))] == 3
    # live work is the daemon's to send, not to prune
    assert counts(conn)[("bulk", "sent")] == 2


def test_a_daemon_with_retention_disabled_prunes_nothing(
    conn: psycopg.Connection[Any], spawn: Any
) -> None:
    seed(conn)
    final = "SELECT id, status FROM mailroom.outbox WHERE status IN ('sent', 'dead')"
    before = set(conn.execute(final).fetchall())
    daemon = spawn(MAILROOM_RETENTION_ENABLED="false")
    daemon.wait_listening()
    wait_for(lambda: any(e.get("event") == "retention_disabled" for e in daemon.events()))
    # the daemon may send the seeded live rows meanwhile; no final row may disappear
    assert before <= set(conn.execute(final).fetchall())
