"""Peers for ratios: pgqueuer with one boto3 ``sesv2.send_email`` per job, the raw
database ceiling (a bare psycopg claim + mark-sent loop, no SES at all), and the
database's floor under the idle latency (notification and one-row claim, no daemon).

Each peer runs as its own process (``python -m bench.peer pgqueuer|raw ...``); the
harness-side functions start them, feed them and time them like the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import (
    ROOT,
    aws_env,
    cpu_seconds,
    fill,
    memory_mib,
    settle,
    wait_for,
    wait_listening,
)
from bench.scenarios import ENQUEUE, Bench, Result, percentile, settle_machine
from bench.statements import server_cpu

PGQUEUER_APP = "bench-pgqueuer"
ENTRYPOINT = "send_activation"

# The raw ceiling: the daemon's claim shape (same partial index, SKIP LOCKED, lease
# columns), then a mark-sent update; one autocommit connection, one process.
RAW_CLAIM = """
WITH due AS (
    SELECT id FROM mailroom.outbox
    WHERE queue = 'user_action_queue' AND status IN ('pending', 'retrying')
      AND next_attempt_at <= now()
    ORDER BY priority DESC, next_attempt_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE mailroom.outbox AS m
SET status = 'sending', attempts = m.attempts + 1, locked_by = 'raw',
    locked_until = now() + interval '5 minutes', updated_at = now()
FROM due WHERE m.id = due.id
RETURNING m.id, m.to_addresses, m.template, m.template_data
"""
RAW_MARK_SENT = """
UPDATE mailroom.outbox
SET status = 'sent', sent_at = now(), locked_by = NULL, locked_until = NULL, updated_at = now()
WHERE id = ANY (%(ids)s)
"""


# -- inside the peer processes ----------------------------------------------------------


async def _pgqueuer_worker(dsn: str, batch_size: int, threads: int) -> None:
    import asyncpg  # noqa: PLC0415 -- only the peer process needs these
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415
    from pgqueuer.db import AsyncpgDriver  # noqa: PLC0415
    from pgqueuer.models import Job  # noqa: PLC0415
    from pgqueuer.qm import QueueManager  # noqa: PLC0415
    from pgqueuer.queries import Queries  # noqa: PLC0415

    client = boto3.session.Session().client(
        "sesv2",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=threads,
            tcp_keepalive=True,
        ),
    )
    pool = ThreadPoolExecutor(threads)
    loop = asyncio.get_running_loop()
    connection = await asyncpg.connect(dsn, server_settings={"application_name": PGQUEUER_APP})
    qm = QueueManager(Queries(AsyncpgDriver(connection)))
    loop.add_signal_handler(signal.SIGTERM, qm.shutdown.set)

    @qm.entrypoint(ENTRYPOINT)
    async def send(job: Job) -> None:
        data = json.loads(job.payload or b"{}")
        call = functools.partial(
            client.send_email,
            FromEmailAddress="noreply@localhost",
            Destination={"ToAddresses": [data["to"]]},
            Content={
                "Template": {
                    "TemplateName": "activationv1",
                    "TemplateData": json.dumps({"n": data["n"]}),
                }
            },
            ConfigurationSetName="default",
        )
        await loop.run_in_executor(pool, call)

    await qm.run(batch_size=batch_size)
    pool.shutdown()


def _raw_loop(dsn: str, batch: int) -> dict[str, float]:
    rows = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        while True:
            claimed = conn.execute(RAW_CLAIM, {"limit": batch}).fetchall()
            if not claimed:
                break
            conn.execute(RAW_MARK_SENT, {"ids": [r[0] for r in claimed]})
            rows += len(claimed)
        seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("peer", choices=["pgqueuer", "raw"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    if args.peer == "raw":
        print(json.dumps(_raw_loop(args.dsn, args.batch_size)), flush=True)
        return
    try:
        import uvloop  # noqa: PLC0415 -- pgqueuer's own recommendation, when installed

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_pgqueuer_worker(args.dsn, args.batch_size, args.threads))


# -- harness side -----------------------------------------------------------------------


async def _pgqueuer_queries(dsn: str, action: str, n: int = 0) -> None:
    import asyncpg  # noqa: PLC0415
    from pgqueuer.db import AsyncpgDriver  # noqa: PLC0415
    from pgqueuer.queries import Queries  # noqa: PLC0415

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        if action == "install":
            await queries.install()
            return
        payloads: list[bytes | None] = [
            json.dumps({"to": f"user{i}@example.com", "n": i}).encode() for i in range(1, n + 1)
        ]
        await queries.enqueue([ENTRYPOINT] * n, payloads, [0] * n)  # one statement
    finally:
        await connection.close()


def pgqueuer_drain(
    bench: Bench, n: int, *, latency_ms: float, batch_size: int, threads: int
) -> Result:
    """pgqueuer worker idle and listening; n jobs enqueued in one statement; time until
    the stand-in has received the last email (lenient to the peer: its completion log
    may be written later)."""
    bench.standin.reset(latency_ms)
    with bench.pg.database(migrated=False) as dsn:
        asyncio.run(_pgqueuer_queries(dsn, "install"))
        command = [sys.executable, "-m", "bench.peer", "pgqueuer", "--dsn", dsn]
        command += ["--batch-size", str(batch_size), "--threads", str(threads)]
        log = (bench.workdir / "pgqueuer.log").open("ab")
        proc = subprocess.Popen(
            command, cwd=ROOT, env=aws_env(bench.standin.url), stdout=log, stderr=log
        )
        try:
            wait_listening(dsn, PGQUEUER_APP, 1, check_query=False)
            settle([proc.pid])  # start-up done: waiting on its LISTEN session
            cpu_before = cpu_seconds(proc.pid)
            started = time.perf_counter()
            asyncio.run(_pgqueuer_queries(dsn, "enqueue", n))
            committed = time.time()
            enqueue_seconds = time.perf_counter() - started

            def done() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError("pgqueuer worker exited; see pgqueuer.log")
                return bench.standin.sent_count() >= n

            wait_for(done, timeout=max(120.0, n / 50))
            cpu = cpu_seconds(proc.pid) - cpu_before
            memory = memory_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.close()
        last = max(r["received_at"] for r in bench.standin.sent())
    seconds = last - committed
    return {
        "n": n,
        "seconds": seconds,
        "rate": n / seconds,
        "fill_seconds": enqueue_seconds,
        "cpu_seconds": cpu,
        "cpu_per_1000": cpu / n * 1000,
        "rss_mib": memory["VmRSS"],
        "hwm_mib": memory["VmHWM"],
        "latency_ms": latency_ms,
        "batch_size": batch_size,
        "threads": threads,
    }


def raw_ceiling(bench: Bench, n: int, *, batch: int, checks: bool = True) -> Result:
    """The same outbox filled the same way, drained by a bare claim + mark-sent loop."""
    with bench.pg.database(checks=checks) as dsn:
        fill(dsn, n)
        pg_before = server_cpu(bench.pg)
        done = subprocess.run(
            [sys.executable, "-m", "bench.peer", "raw", "--dsn", dsn, "--batch-size", str(batch)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        pg_cpu = server_cpu(bench.pg) - pg_before
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rate = out["rows"] / out["seconds"]
    return {**out, "n": n, "rate": rate, "batch": batch, "pg_cpu_per_1000": pg_cpu / n * 1000}


def latency_floor(bench: Bench, n: int, *, rate: float = 50.0) -> Result:
    """What the database alone puts under the idle latency, from a bare psycopg loop:
    a commit's notification reaching a LISTEN session, and a one-row claim's round trip
    (next to a SELECT 1's). The daemon cannot deliver faster than their sum."""
    notify_ms, claim_ms, select_ms = [], [], []
    with (
        bench.pg.database() as dsn,
        psycopg.connect(dsn, autocommit=True) as producer,
        psycopg.connect(dsn, autocommit=True) as listener,
        psycopg.connect(dsn, autocommit=True) as claimer,
    ):
        row = listener.execute("SELECT channel FROM mailroom.settings").fetchone()
        assert row is not None  # the migrated schema has exactly one settings row
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
        settle_machine(bench)
        for i in range(n):
            time.sleep(1 / rate)
            started = time.perf_counter()
            claimer.execute("SELECT 1").fetchall()
            select_ms.append((time.perf_counter() - started) * 1000)
            producer.execute(ENQUEUE, (f"user{i}@example.com", Jsonb({"seq": i})))
            committed = time.perf_counter()
            if not list(listener.notifies(timeout=5.0, stop_after=1)):
                raise RuntimeError("no notification within 5 s of a commit")
            notify_ms.append((time.perf_counter() - committed) * 1000)
            started = time.perf_counter()
            ids = [r[0] for r in claimer.execute(RAW_CLAIM, {"limit": 10}).fetchall()]
            claim_ms.append((time.perf_counter() - started) * 1000)
            if len(ids) != 1:
                raise RuntimeError(f"claimed {len(ids)} rows, expected the one just enqueued")
            claimer.execute(RAW_MARK_SENT, {"ids": ids})
    return {
        "n": n,
        "notify_p50_ms": percentile(notify_ms, 50),
        "select_p50_ms": percentile(select_ms, 50),
        "claim_p50_ms": percentile(claim_ms, 50),
        "floor_p50_ms": percentile(notify_ms, 50) + percentile(claim_ms, 50),
    }


if __name__ == "__main__":
    main()
