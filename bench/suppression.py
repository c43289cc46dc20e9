"""``python -m bench.suppression``: what the suppression list costs on the bulk path.

The sender reads the list once per claimed batch (``suppressed_among`` in queries.sql:
the batch's normalized recipients against the table's primary key) before any SES call.
The same bulk drain (every message to its own recipient, stand-in at 0 ms, throughput
settings) runs, alternately, on a copy of a database whose ``mailroom.suppressions`` is

- ``empty``: the list exists but holds nothing (the query still runs: the baseline);
- ``1m``: 1,000,000 addresses, none of them a recipient of the drain;
- ``1m_hits``: 1,000,000 addresses, 1 % of them recipients of the drain (every 100th
  message dies ``suppressed: bounce since ...`` and never reaches SES).

The suppressed addresses are ``user<g>.gone@example.com`` (g up to 1,000,000): in the
index they sort among the recipients (``user<g>@example.com``), so the lookups of one
batch spread over many leaves, as with a real list. The lists are built once per run
into template databases (``VACUUM ANALYZE``d, as autovacuum would leave them) and copied
for each drain.

Then, with no daemon, ``EXPLAIN (ANALYZE, BUFFERS)`` of the query and its round trip from
one psycopg connection (median of 200) for batches of 10, 50 and 500 recipients.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.harness import SNAPSHOT_PATH, TEMPLATE_DB, Postgres, Standin, snapshot
from bench.scenarios import Bench, Result, drain

LIST_SIZE = 1_000_000
HIT_EVERY = 100  # 1_m_hits: every 100th recipient is on the list
VARIANTS = ("empty", "1m", "1m_hits")
LABELS = {
    "empty": "empty list (baseline)",
    "1m": "1,000,000 suppressed, no recipient among them",
    "1m_hits": "1,000,000 suppressed, 1 % of the recipients among them",
}
# One statement per list; the reasons and ages vary as in a real list.
FILL_LIST = """
INSERT INTO mailroom.suppressions (address, reason, detail, created_at)
SELECT 'user' || g || '.gone@example.com',
       (ARRAY['bounce', 'bounce', 'bounce', 'complaint', 'ses_import'])[1 + g %% 5],
       'Bounce Permanent/General',
       now() - make_interval(secs => g %% 31536000)
FROM generate_series(1, %(count)s::int) AS g
"""
# 1m_hits: the same size, with every HIT_EVERY-th recipient of the drain in place of
# as many of the others.
SWAP_IN_HITS = """
WITH gone AS (
    DELETE FROM mailroom.suppressions
    WHERE address IN (SELECT 'user' || g || '.gone@example.com'
                      FROM generate_series(1, %(hits)s::int) AS g)
)
INSERT INTO mailroom.suppressions (address, reason, detail)
SELECT 'user' || g || '@example.com', 'bounce', 'Bounce Permanent/General'
FROM generate_series(%(every)s::int, %(n)s::int, %(every)s::int) AS g
"""
BATCHES = (10, 50, 500)
ROUND_TRIPS = 200


def build_lists(pg: Postgres, n: int, size: int = LIST_SIZE) -> dict[str, str]:
    """The template database of each variant (made once, copied for every drain)."""
    templates = {"empty": TEMPLATE_DB}
    for variant in ("1m", "1m_hits"):
        name = f"bench_suppressed_{size}_{variant}"
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
            admin.execute(create.format(sql.Identifier(name), sql.Identifier(TEMPLATE_DB)))
        with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
            conn.execute(FILL_LIST, {"count": size})
            if variant == "1m_hits":
                params = {"hits": n // HIT_EVERY, "every": HIT_EVERY, "n": n}
                conn.execute(SWAP_IN_HITS, params)
            conn.execute("VACUUM ANALYZE mailroom.suppressions")
            row = conn.execute("SELECT count(*) FROM mailroom.suppressions").fetchone()
            assert row is not None
            assert row[0] == size, row
        templates[variant] = name
    return templates


def snapshot_query(name: str) -> str:
    """A named query from the frozen code under test (not the installed package)."""
    text = (Path(SNAPSHOT_PATH[0]) / "mailroom" / "queries.sql").read_text()
    for block in text.split("-- name: ")[1:]:
        head, _, body = block.partition("\n")
        if head.strip() == name:
            return body
    raise KeyError(name)


def probe(pg: Postgres, template: str, n: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE and round-trip time of suppressed_among, batches of 10/50/500
    recipients of the drain (``user<g>@example.com``), no daemon running."""
    statement = snapshot_query("suppressed_among")
    out: dict[str, Any] = {}
    with pg.database(template=template) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_custom_plan")  # what psycopg's first runs get
        for size in BATCHES:
            starts = range(1, max(2, n - size), max(1, (n - size) // ROUND_TRIPS))
            batches = [[f"user{g}@example.com" for g in range(s, s + size)] for s in starts]
            batches = batches[:ROUND_TRIPS]
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement,
                {"addresses": batches[0]},
            ).fetchone()
            assert plan is not None
            top = plan[0][0]
            found = 0
            timings = []
            for addresses in batches:
                started = time.perf_counter()
                found += len(conn.execute(statement, {"addresses": addresses}).fetchall())
                timings.append(time.perf_counter() - started)
            out[str(size)] = {
                "node": top["Plan"]["Node Type"],
                "index": top["Plan"].get("Index Name", ""),
                "planning_ms": top["Planning Time"],
                "execution_ms": top["Execution Time"],
                "buffers": top["Plan"].get("Shared Hit Blocks", 0)
                + top["Plan"].get("Shared Read Blocks", 0),
                "round_trip_ms": statistics.median(timings) * 1000,
                "found_per_batch": found / len(batches),
            }
    return out


def smoke(bench: Bench, n: int = 2_000, size: int = 10_000) -> Result:
    """``python -m bench --smoke``: a small list with 1 % of the recipients on it; every
    one of those messages dies suppressed, every other one is sent."""
    templates = build_lists(bench.pg, n, size)
    hits = n // HIT_EVERY
    result = drain(bench, n, latency_ms=0, template=templates["1m_hits"], sends=n - hits)
    assert result["dead"] == hits, (result["dead"], hits)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suppression", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="messages per drain")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--source", default="HEAD", help="git commit, or 'worktree'")
    parser.add_argument("--json", type=Path, help="also save raw results as JSON here")
    args = parser.parse_args(argv)
    results: dict[str, list[Result]] = {v: [] for v in VARIANTS}
    probes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-") as workdir:
        commit, _ = snapshot(Path(workdir), args.source)
        pg = Postgres()
        pg.start()
        standin = Standin()
        try:
            bench = Bench(pg, standin, Path(workdir))
            started = time.perf_counter()
            templates = build_lists(pg, args.n)
            built = time.perf_counter() - started
            for round_ in range(args.runs):
                # the order turns every round: no variant always follows the same one
                order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]
                for variant in order:
                    sends = args.n - (args.n // HIT_EVERY if variant == "1m_hits" else 0)
                    result = drain(
                        bench, args.n, latency_ms=0, template=templates[variant], sends=sends
                    )
                    results[variant].append(result)
                    print(
                        f"[round {round_ + 1}] {variant}: {result['rate']:,.0f}/s,"
                        f" {result['cpu_per_1000']:.3f} CPU s/1000, dead {result['dead']}",
                        flush=True,
                    )
            for variant in VARIANTS:
                probes[variant] = probe(pg, templates[variant], args.n)
        finally:
            standin.stop()
            pg.stop()
    print(
        f"\ncode {commit}, {args.n:,} messages per drain, {args.runs} runs of each variant in"
        f" turn, medians (range); lists built in {built:.0f} s"
    )
    print("\n| suppression list | emails/s | % of empty | daemon CPU s / 1,000 | dead |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = statistics.median(r["rate"] for r in results["empty"])
    for variant in VARIANTS:
        runs = results[variant]
        rates = [r["rate"] for r in runs]
        cpus = [r["cpu_per_1000"] for r in runs]
        rate = statistics.median(rates)
        print(
            f"| {LABELS[variant]} | {rate:,.0f} ({min(rates):,.0f} to {max(rates):,.0f})"
            f" | {rate / base * 100:.1f} % | {statistics.median(cpus):.3f}"
            f" ({min(cpus):.3f} to {max(cpus):.3f}) | {max(r['dead'] for r in runs):,} |"
        )
    print("\n`suppressed_among` alone (no daemon): plan, EXPLAIN ANALYZE, round trip (median)")
    print("\n| list | recipients | plan | execution | buffers | round trip | found |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for variant in VARIANTS:
        for size, p in probes[variant].items():
            plan = p["node"] + (f" on {p['index']}" if p["index"] else "")
            print(
                f"| {variant} | {size} | {plan} | {p['execution_ms']:.3f} ms | {p['buffers']}"
                f" | {p['round_trip_ms']:.3f} ms | {p['found_per_batch']:.1f} |"
            )
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "probes": probes}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
