"""mailroom's own scenarios: drain a filled outbox, and steady-state latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.harness import (
    BASE,
    THROUGHPUT,
    Code,
    Daemon,
    Postgres,
    Standin,
    cpu_seconds,
    daemons,
    fill,
    left_to_do,
    machine_busy,
    memory_mib,
    wait_for,
)
from bench.statements import server_cpu, wal_position

Result = dict[str, Any]
# What mailroom.enqueue() sends (the SQL function), so the harness needs no mailroom code.
ENQUEUE = """
SELECT mailroom.enqueue(to_addresses => ARRAY[%s::text], template => 'activationv1',
                        template_data => %s::jsonb)
"""


@dataclass
class Bench:
    pg: Postgres
    standin: Standin
    workdir: Path
    old: Code | None = None  # the code before aiohttp (--old), for the oldcode scenario


def wait_drained(bench: Bench, dsn: str, n: int, procs: Sequence[Daemon], timeout: float) -> float:
    """Until every message is recorded as sent (or dead); returns that moment (time.time()).

    The stand-in's counter is polled every 20 ms (cheap); the database only every 2 s
    until then (a count over the table costs PostgreSQL CPU), then every 10 ms."""
    deadline = time.monotonic() + timeout
    next_db = time.monotonic() + 2.0
    while bench.standin.sent_count() < n:
        if not all(p.alive() for p in procs):
            raise RuntimeError("daemon exited:\n" + "\n".join(p.log_tail() for p in procs))
        if time.monotonic() > next_db:
            todo, dead = left_to_do(dsn)
            if todo == dead:
                break
            next_db = time.monotonic() + 2.0
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bench.standin.sent_count()} of {n} sent after {timeout} s")
        time.sleep(0.02)
    wait_for(lambda: _recorded(dsn), 60, interval=0.01)
    return time.time()


def _recorded(dsn: str) -> bool:
    todo, dead = left_to_do(dsn)
    return todo == dead


def drain(
    bench: Bench,
    n: int,
    *,
    latency_ms: float,
    simple: bool = False,
    settings: Mapping[str, str] = THROUGHPUT,
    replicas: int = 1,
    checks: bool = True,
    during: Callable[[list[int]], Callable[[], None]] | None = None,
    code: Code | None = None,
    template: str | None = None,
    sends: int | None = None,
    counted: Callable[[], Callable[[], None]] | None = None,
) -> Result:
    """Daemons idle and listening; n messages committed in one INSERT; time until the
    last one is recorded as sent. ``during(pids)`` may start a profiler (returns its stop);
    ``counted()`` starts one at the fill's commit, stopped when the last outcome is recorded
    (the span the counters count).
    ``template``: the database to copy (default: the migrated one, or ``code``'s);
    ``sends``: how many of the n reach SES (fewer when some are suppressed)."""
    bench.standin.reset(latency_ms)
    template = template or (code.template if code else None)
    with (
        bench.pg.database(checks=checks, template=template) as dsn,
        daemons(dsn, bench.standin.url, settings, bench.workdir, replicas, code=code) as procs,
    ):
        pids = [p.pid for p in procs]
        stop = during(pids) if during else None
        # Daemons and stand-in are idle during the fill: their counters start before it;
        # the clock and the machine's counter start at its commit.
        cpu_before = sum(cpu_seconds(p) for p in pids)
        standin_before = cpu_seconds(bench.standin.pid)
        fill_seconds, committed = fill(dsn, n, simple=simple)
        machine_before = machine_busy()
        pg_before, wal_before = server_cpu(bench.pg), wal_position(bench.pg)
        stop_counted = counted() if counted else None
        expected = n if sends is None else sends
        done = wait_drained(bench, dsn, expected, procs, timeout=max(120.0, n / 100))
        if stop_counted:
            stop_counted()
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
        standin_cpu = cpu_seconds(bench.standin.pid) - standin_before
        machine_cpu = machine_busy() - machine_before
        pg_cpu = server_cpu(bench.pg) - pg_before
        wal = wal_position(bench.pg) - wal_before
        memory = [memory_mib(p) for p in pids]
        if stop:
            stop()
        _, dead = left_to_do(dsn)
        stats = bench.standin.stats()
    seconds = done - committed
    return {
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "fill_seconds": fill_seconds,
        "cpu_seconds": cpu,
        "cpu_per_1000": cpu / n * 1000,
        "daemon_cores": cpu / seconds,
        "standin_cores": standin_cpu / seconds,
        "machine_cores": machine_cpu / seconds,
        "pg_cpu_per_1000": pg_cpu / n * 1000,
        "pg_cores": pg_cpu / seconds,
        "wal_per_email": wal / n,
        "rss_mib": max(m["VmRSS"] for m in memory),
        "hwm_mib": max(m["VmHWM"] for m in memory),
        "dead": dead,
        "calls": stats["calls"],
        "connections": stats["connections"],
        "replicas": replicas,
        "settings": {**BASE, **settings},
        "latency_ms": latency_ms,
    }


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[round(p * 10) - 1]


QUIET_CORES = 0.25  # the machine counts as quiet below this many busy cores


def settle_machine(bench: Bench, timeout: float = 30.0) -> None:
    """Let the previous scenario's aftermath (PostgreSQL's checkpoint, autovacuum of the
    drained tables) pass before a latency run: it measures the daemon, not the backlog of
    the server it shares the machine with."""
    with psycopg.connect(bench.pg.admin_dsn, autocommit=True) as admin:
        admin.execute("CHECKPOINT")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before, started = machine_busy(), time.monotonic()
        time.sleep(0.5)
        if (machine_busy() - before) / (time.monotonic() - started) < QUIET_CORES:
            return


def steady(
    bench: Bench,
    *,
    rate: float,
    seconds: float,
    settings: Mapping[str, str],
    code: Code | None = None,
) -> Result:
    """A producer enqueues at a fixed rate with mailroom.enqueue(), one transaction per
    message (autocommit: the statement's end is its commit); latency = the stand-in's
    received_at - commit time."""
    bench.standin.reset(0)
    count = max(1, round(rate * seconds))
    commits = [0.0] * count
    with (
        bench.pg.database(template=code.template if code else None) as dsn,
        daemons(dsn, bench.standin.url, settings, bench.workdir, code=code) as procs,
    ):
        pid = procs[0].pid
        settle_machine(bench)
        cpu_before = cpu_seconds(pid)
        with psycopg.connect(dsn, autocommit=True) as conn:
            start = time.perf_counter() + 0.05
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                conn.execute(ENQUEUE, (f"user{i}@example.com", Jsonb({"seq": i})))
                commits[i] = time.time()
        wait_drained(bench, dsn, count, procs, timeout=120)
        cpu = cpu_seconds(pid) - cpu_before
        memory = memory_mib(pid)
        records = bench.standin.sent()
    latencies = [
        (r["received_at"] - commits[int(r["template_data"]["seq"])]) * 1000 for r in records
    ]
    return {
        "n": count,
        "target_rate": rate,
        "achieved_rate": (count - 1) / (commits[-1] - commits[0]) if count > 1 else 0.0,
        "samples": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "cpu_seconds": cpu,
        "cpu_per_1000": cpu / count * 1000,
        "rss_mib": memory["VmRSS"],
        "hwm_mib": memory["VmHWM"],
        "settings": {**BASE, **settings},
    }
