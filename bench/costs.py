"""``python -m bench.costs``: what each guarantee of the bulk path costs the database alone.

The raw ceiling of ``python -m bench --compare`` (a bare claim + mark-sent loop) and the
daemon's bulk drain differ in two ways at once: the daemon's statements do more (an
attempt row per try, the changes feed, provider ids) and the daemon and the SES stand-in
share the machine's cores with PostgreSQL. This takes the second away: one psycopg
connection, no daemon, no SES call, loops over the same 500-message batches of the same
fill, either with the raw ceiling's two statements or with the daemon's own ``claim`` and
``record`` (queries.sql, binary, as outbox.py sends them, every message sent), on a fresh
copy of the migrated schema per run; each variant then removes one thing from that copy,
to show its price:

- ``daemon``: the shipped schema and statements (the baseline of the rows below);
- ``no_changes_feed``: without the outbox trigger of the changes feed (0030/0034);
- ``no_attempts_fk``: without the attempts' foreign key to the outbox (its check runs
  once per attempt row);
- ``no_provider_index``: without ``outbox_provider_message_id`` (the events' lookup);
- with ``--ref REF``, ``daemon@REF``: REF's own claim and record (its queries.sql) on a
  database its own migrations made (as ``python -m bench --compare`` archives it).

Rounds interleave the variants; medians are printed as markdown: the rate, and the CPU
the loop's backends used per email (``/proc/PID/schedstat``, nanoseconds: the figure the
drain's "PostgreSQL CPU per 1,000 emails" counts, without the daemon and the stand-in on
the same cores). ``--connections N`` drains with N connections at once, each claiming and
recording its own batches, as the daemon's pool does: rows written by concurrent
transactions into the same tables and index pages cost more than one loop's. The removed
parts are not optional in the product: this says where the time goes, not what to drop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import Postgres, fill
from bench.peer import RAW_CLAIM, RAW_MARK_SENT
from bench.regress import ref_code
from bench.scenarios import Bench
from mailroom.sqltext import QUERIES, parse

BATCH = 500
VARIANTS: dict[str, tuple[str, ...]] = {
    "raw": (),
    "daemon": (),
    "no_changes_feed": ("DROP TRIGGER outbox_changes ON mailroom.outbox",),
    "no_attempts_fk": ("ALTER TABLE mailroom.attempts DROP CONSTRAINT attempts_message_id_fkey",),
    "no_provider_index": ("DROP INDEX mailroom.outbox_provider_message_id",),
}
LABELS = {
    "raw": "raw ceiling: claim + mark-sent (bench/peer.py)",
    "daemon": "the daemon's claim + record (queries.sql), shipped schema",
    "no_changes_feed": "... without the changes feed's outbox trigger",
    "no_attempts_fk": "... without the attempts' foreign key",
    "no_provider_index": "... without the provider-id index",
}


def drain_raw(conn: psycopg.Connection[Any]) -> int:
    done = 0
    while ids := [r[0] for r in conn.execute(RAW_CLAIM, {"limit": BATCH}).fetchall()]:
        conn.execute(RAW_MARK_SENT, {"ids": ids})
        done += len(ids)
    return done


def drain_daemon(conn: psycopg.Connection[Any], owner: str, queries: dict[str, str]) -> int:
    claim = {"queue": "user_action_queue", "limit": BATCH, "owner": owner, "lease_seconds": 300.0}
    done = 0
    while rows := conn.cursor(binary=True).execute(queries["claim"], claim).fetchall():
        ids = [r[0] for r in rows]
        outcome = {
            "owner": owner,
            "ids": ids,
            # as long as the stand-in's message ids (uuid4, 36 characters); unique, increasing
            "provider_ids": [f"bench-{i:030d}" for i in ids],
            "statuses": None,  # every message sent, as outbox.record sends it
            "refunds": None,
            "delays": None,
            "errors": None,
            "attempt_outcomes": None,
            # the try number and the lease end, as claimed (a REF before 0023 ignores them)
            "tries": [r[1] for r in rows],
            "leases": [r[-1] for r in rows],
        }
        conn.execute(queries["record"], outcome).fetchone()
        done += len(ids)
    return done


def backend_cpu(pid: int) -> float:
    """Seconds on CPU of one backend (schedstat: nanoseconds, not /proc's 10 ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def measure(
    pg: Postgres,
    variant: str,
    n: int,
    refs: dict[str, tuple[str, dict[str, str]]],
    connections: int = 1,
) -> tuple[float, float]:
    """(emails per second, backend CPU seconds per email) of one drain of n messages."""
    template, queries = refs.get(variant, (None, QUERIES))
    with pg.database(template=template) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for ddl in VARIANTS.get(variant, ()):
                conn.execute(ddl)  # the bench's own constants, run as the superuser
        fill(dsn, n)  # checkpoints before its commit: the fill's pages are not the drain's
        ready = threading.Barrier(connections + 1)
        drained: list[tuple[int, float]] = []

        def loop() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                pid = conn.info.backend_pid
                owner = f"bench-{pid}"  # a lease holder per connection, as each daemon is
                conn.execute("SELECT 1")  # connected and authenticated before the clock
                ready.wait()
                before = backend_cpu(pid)
                done = drain_raw(conn) if variant == "raw" else drain_daemon(conn, owner, queries)
                drained.append((done, backend_cpu(pid) - before))

        threads = [threading.Thread(target=loop) for _ in range(connections)]
        for thread in threads:
            thread.start()
        ready.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        done = sum(d for d, _ in drained)
        if done != n:
            raise RuntimeError(f"{variant}: drained {done} of {n}")
        return n / seconds, sum(c for _, c in drained) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    parser.add_argument("--n", type=int, default=30_000, help="messages per drain")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are printed)")
    parser.add_argument("--ref", action="append", default=[], help="also a commit's own loop")
    parser.add_argument(
        "--connections", type=int, default=1, help="connections draining at once (default 1)"
    )
    args = parser.parse_args(argv)
    pg = Postgres()
    pg.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mailroom-costs-") as work:
            bench = Bench(pg=pg, standin=None, workdir=Path(work))  # type: ignore[arg-type]
            refs: dict[str, tuple[str, dict[str, str]]] = {}
            for ref in args.ref:
                code, commit = ref_code(bench, ref)
                text = (Path(work) / f"ref-{commit}/src/mailroom/queries.sql").read_text()
                assert code.template is not None
                refs[f"daemon@{commit[:7]}"] = (code.template, parse(text))
                LABELS[f"daemon@{commit[:7]}"] = f"{commit[:7]}'s claim + record, its schema"
            runs: dict[str, list[tuple[float, float]]] = {v: [] for v in [*VARIANTS, *refs]}
            for _ in range(args.runs):
                for variant, results in runs.items():
                    results.append(measure(pg, variant, args.n, refs, args.connections))
    finally:
        pg.stop()
    print_table(args, runs)


def print_table(args: argparse.Namespace, runs: dict[str, list[tuple[float, float]]]) -> None:
    rate = {v: statistics.median(r for r, _ in results) for v, results in runs.items()}
    cpu = {v: statistics.median(c for _, c in results) * 1e6 for v, results in runs.items()}
    print(
        f"{args.n:,} messages per drain, batches of {BATCH}, {args.connections} connection(s),"
        f" medians of {args.runs}:\n"
    )
    print(
        "| loop | emails/s (range) | of the raw ceiling | backend CPU µs per email (range)"
        " | HEAD minus this row, CPU | HEAD / this row, CPU |"
    )
    print("|---|---|---|---|---|---|")
    for variant, results in runs.items():
        rates = [r for r, _ in results]
        cpus = [c * 1e6 for _, c in results]
        shown = f"{rate[variant]:,.0f} ({min(rates):,.0f} to {max(rates):,.0f})"
        spent = f"{cpu[variant]:.1f} ({min(cpus):.1f} to {max(cpus):.1f})"
        delta = "—" if variant in ("raw", "daemon") else f"{cpu['daemon'] - cpu[variant]:+.1f} µs"
        print(
            f"| {LABELS[variant]} | {shown} | {rate[variant] / rate['raw']:.0%} | {spent} "
            f"| {delta} | {cpu['daemon'] / cpu[variant]:.0%} |"
        )


if __name__ == "__main__":
    main()
