"""``python -m bench.changes``: what the changes feed's triggers (sql/0030) cost the daemon.

The daemon's own statements, through its own code (mailroom.outbox.Outbox: the claim, the
record of a batch of successes, the events ingest), on one embedded PostgreSQL, with the
triggers ``outbox_changes`` and ``events_changes`` as migrated and with both disabled
(``ALTER TABLE ... DISABLE TRIGGER``, the same database otherwise), in interleaved rounds:

- send: N messages of one application claimed and recorded sent in batches of B (the
  daemon's claim size under backlog is tens to hundreds); time per message of claim +
  record, i.e. of the two statements the trigger sits behind (the claim fires it too, and
  writes nothing);
- events: one Delivery event per sent message, stored in batches of 10 (one SQS receive)
  by P connections at once (the events reader's pollers; the trigger takes an exclusive
  advisory lock, so P > 1 shows what that serialisation costs); time per event.

Wall-clock times on a shared machine are noisy; the time PostgreSQL itself counts inside
the two trigger functions (``track_functions``, pg_stat_user_functions) is the steadier
figure. Prints a markdown table of the medians, and the machine's load average.

    python -m bench.changes --messages 20000 --history 100000 --batch 100 --pollers 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from mailroom import migrate
from mailroom.config.settings import Config
from mailroom.embedded import EmbeddedPostgres
from mailroom.events.parsing import Event
from mailroom.events.storing import ingest_params
from mailroom.outbox import Disposition, Outbox

TRIGGERS = (("mailroom.outbox", "outbox_changes"), ("mailroom.events", "events_changes"))
CONFIG = Config(database_url="")


def set_triggers(dsn: str, *, enabled: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        verb = sql.SQL("ENABLE" if enabled else "DISABLE")
        for table, trigger in TRIGGERS:
            conn.execute(
                sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                    sql.SQL(table), verb, sql.Identifier(trigger)
                )
            )


def fill(dsn: str, n: int, history: int) -> None:
    """N pending messages of the application 'shop', after ``history`` sent messages with
    a Delivery event each (what a running system keeps: the lookups the triggers make go
    through indexes, or they would grow with this)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE mailroom.outbox, mailroom.events, mailroom.changes CASCADE")
        conn.execute(
            "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, enqueued_by, status,"
            " provider_message_id, sent_at) SELECT ARRAY['h' || i || '@example.com'], 's', 't',"
            " 'shop', 'sent', 'h-' || i, now() FROM generate_series(1, %s) AS i",
            [history],
        )
        conn.execute(
            "INSERT INTO mailroom.events (event_key, provider_message_id, recipient,"
            " event_type, occurred_at) SELECT 'h-' || i, 'h-' || i, 'h' || i || '@example.com',"
            " 'Delivery', now() FROM generate_series(1, %s) AS i",
            [history],
        )
        conn.execute("TRUNCATE mailroom.changes")
        conn.execute(
            "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, enqueued_by)"
            " SELECT ARRAY['u' || i || '@example.com'], 's', 't', 'shop'"
            " FROM generate_series(1, %s) AS i",
            [n],
        )
        conn.execute("VACUUM ANALYZE mailroom.outbox, mailroom.events")


# the time spent inside each trigger function, from pg_stat_user_functions
KWARGS = {"autocommit": True, "options": "-c track_functions=pl"}


def trigger_time(dsn: str) -> dict[str, float]:
    """Milliseconds spent in each trigger function so far (statistics of this database)."""
    time.sleep(1.5)  # backends flush their function statistics when idle, at most each 1 s
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT funcname, total_time FROM pg_stat_user_functions"
            " WHERE schemaname = 'mailroom' AND funcname LIKE 'changes_from_%'"
        ).fetchall()
    return {str(name): float(ms) for name, ms in rows}


async def send(dsn: str, batch: int) -> tuple[float, int]:
    """Claim and record every pending message; (seconds, messages)."""
    async with AsyncConnectionPool(dsn, kwargs=KWARGS, min_size=1,
                                   max_size=2, open=False) as pool:  # fmt: skip
        outbox = Outbox(pool, queue="user_action_queue", owner="bench")
        done = 0
        start = time.perf_counter()
        while messages := await outbox.claim(batch, 60.0):
            outcomes = [(m.id, Disposition("sent", 0, 0.0, "sent", f"p-{m.id}"))
                        for m in messages]  # fmt: skip
            await outbox.record(outcomes)
            done += len(messages)
        return time.perf_counter() - start, done


async def ingest(dsn: str, pollers: int) -> tuple[float, int]:
    """A Delivery event per sent message, 10 per statement, ``pollers`` at once."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT provider_message_id, to_addresses[1] FROM mailroom.outbox"
            " WHERE provider_message_id LIKE 'p-%' ORDER BY id"
        ).fetchall()
    now = datetime.now(UTC)
    events = [Event(f"k-{pid}", pid, to, "Delivery", "", "250 ok", now) for pid, to in rows]
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]
    async with AsyncConnectionPool(dsn, kwargs=KWARGS, min_size=pollers,
                                   max_size=pollers, open=False) as pool:  # fmt: skip
        outbox = Outbox(pool, queue="user_action_queue", owner="bench")

        async def poller(mine: list[list[Event]]) -> None:
            for chunk in mine:
                await outbox.ingest_events(ingest_params(chunk, CONFIG))

        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for k in range(pollers):
                group.create_task(poller(batches[k::pollers]))
        return time.perf_counter() - start, len(events)


def changes_written(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM mailroom.changes").fetchone()
    return int(row[0]) if row else 0


def run(n: int, batch: int, pollers: int, rounds: int, history: int) -> dict[str, Any]:
    server = EmbeddedPostgres()
    admin = server.start()
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_changes")
        dsn = server.dsn("bench_changes")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate.migrate(conn, channel="token_insert")
        times: dict[tuple[str, bool], list[float]] = {}
        inside: dict[str, list[float]] = {}
        load = [os.getloadavg()[0]]
        for _ in range(rounds):
            for enabled in (True, False):
                set_triggers(dsn, enabled=enabled)
                fill(dsn, n, history)
                before = trigger_time(dsn)
                seconds, sent = asyncio.run(send(dsn, batch))
                times.setdefault(("send", enabled), []).append(seconds / sent * 1e6)
                middle = trigger_time(dsn)
                seconds, stored = asyncio.run(ingest(dsn, pollers))
                times.setdefault(("events", enabled), []).append(seconds / stored * 1e6)
                after = trigger_time(dsn)
                if enabled:
                    name = "changes_from_outbox"
                    spent = middle.get(name, 0.0) - before.get(name, 0.0)
                    inside.setdefault("send", []).append(spent * 1000 / sent)
                    name = "changes_from_events"
                    spent = after.get(name, 0.0) - middle.get(name, 0.0)
                    inside.setdefault("events", []).append(spent * 1000 / stored)
                expected = 2 * n if enabled else 0  # a sent and a delivered per message
                assert changes_written(dsn) == expected, (changes_written(dsn), expected)
                load.append(os.getloadavg()[0])
        version = psycopg.connect(dsn).execute("SHOW server_version").fetchone()
        return {"times": times, "inside": inside, "load": load,
                "server": version[0] if version else "?"}  # fmt: skip
    finally:
        server.stop(cleanup=True)


def table(result: dict[str, Any], n: int, batch: int, pollers: int, history: int) -> str:
    times = result["times"]
    lines = [
        f"PostgreSQL {result['server']}, {n} messages after {history} sent ones and their"
        f" events, claim/record batches of {batch},"
        f" events 10 per statement by {pollers} connections; load average (1 min) during"
        f" the run {min(result['load']):.2f}-{max(result['load']):.2f} on {os.cpu_count()}"
        " cores. Median of the rounds (all rounds in brackets), µs per message or event:",
        "",
        "| step | triggers off | triggers on | cost of the feed | inside the trigger |",
        "|---|---|---|---|---|",
    ]
    for step, label in (("send", "claim + record sent, per message"),
                        ("events", "events ingest, per event")):  # fmt: skip
        off, on = times[(step, False)], times[(step, True)]
        mo, mn = statistics.median(off), statistics.median(on)
        lines.append(
            f"| {label} | {mo:.1f} ({', '.join(f'{v:.1f}' for v in off)}) |"
            f" {mn:.1f} ({', '.join(f'{v:.1f}' for v in on)}) |"
            f" {mn - mo:+.1f} µs ({(mn / mo - 1) * 100:+.0f} %) |"
            f" {statistics.median(result['inside'][step]):.1f} µs |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=100_000)
    args = parser.parse_args()
    result = run(args.messages, args.batch, args.pollers, args.rounds, args.history)
    print(table(result, args.messages, args.batch, args.pollers, args.history))


if __name__ == "__main__":
    main()
