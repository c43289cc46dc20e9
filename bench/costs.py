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

Rounds interleave the variants; medians of the rates are printed as markdown. The removed
parts are not optional in the product: this says where the time goes, not what to drop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
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


def drain_daemon(conn: psycopg.Connection[Any], queries: dict[str, str]) -> int:
    claim = {"queue": "user_action_queue", "limit": BATCH, "owner": "bench", "lease_seconds": 300.0}
    done = 0
    while rows := conn.cursor(binary=True).execute(queries["claim"], claim).fetchall():
        ids = [r[0] for r in rows]
        outcome = {
            "owner": "bench",
            "ids": ids,
            "provider_ids": [f"bench-{i}" for i in ids],
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


def measure(
    pg: Postgres, variant: str, n: int, refs: dict[str, tuple[str, dict[str, str]]]
) -> float:
    template, queries = refs.get(variant, (None, QUERIES))
    with pg.database(template=template) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for ddl in VARIANTS.get(variant, ()):
                conn.execute(ddl)  # the bench's own constants, run as the superuser
        fill(dsn, n)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the fill's dirty pages are not this drain's
            started = time.perf_counter()
            done = drain_raw(conn) if variant == "raw" else drain_daemon(conn, queries)
            seconds = time.perf_counter() - started
        if done != n:
            raise RuntimeError(f"{variant}: drained {done} of {n}")
        return n / seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__)
    parser.add_argument("--n", type=int, default=30_000, help="messages per drain")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are printed)")
    parser.add_argument("--ref", action="append", default=[], help="also a commit's own loop")
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
            rates: dict[str, list[float]] = {v: [] for v in [*VARIANTS, *refs]}
            for _ in range(args.runs):
                for variant, runs in rates.items():
                    runs.append(measure(pg, variant, args.n, refs))
    finally:
        pg.stop()
    raw = statistics.median(rates["raw"])
    daemon = statistics.median(rates["daemon"])
    print(f"{args.n:,} messages per drain, batches of {BATCH}, medians of {args.runs}:\n")
    print("| loop | emails/s (range) | of the raw ceiling | µs per email | HEAD minus this row |")
    print("|---|---|---|---|---|")
    for variant, runs in rates.items():
        rate = statistics.median(runs)
        spread = f"{min(runs):,.0f} to {max(runs):,.0f}"
        delta = "—" if variant in ("raw", "daemon") else f"{1e6 / daemon - 1e6 / rate:+.1f} µs"
        print(
            f"| {LABELS[variant]} | {rate:,.0f} ({spread}) | {rate / raw:.0%} "
            f"| {1e6 / rate:.1f} | {delta} |"
        )


if __name__ == "__main__":
    main()
