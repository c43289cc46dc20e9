"""``python -m bench.search``: recipient search and the overview at size (issue 22).

Fills N messages server-side (generate_series, in statements of 1,000,000): 30 % with a
display name and upper-case letters, 10 % with a Cc, 5 % with a Bcc, 1 % to one customer's
domain (``bigcustomer.example``, 5,000 people), 1 % to an IDN domain (stored in punycode),
the rest to 2,000,000 recipients over 20,000 domains; 97.9 % sent, 1 % dead, 1 % cancelled,
0.1 % live; enqueued over 30 days, ids in time order. The rows go in as an installation
upgraded from 0028 has them (the row triggers off, so no recipient rows); then the upgrade
is timed as ``mailroom migrate`` runs it (``migrate.finish``: the overview's index built
CONCURRENTLY, the recipients backfilled in batches of 10,000), and VACUUM ANALYZE.

Then, through ``operator.find.find`` and ``operator.stats.queues`` as the CLI and the
console call them (one connection, round trip included), p50 / p95 over random targets of:
exact search (an ordinary recipient, typed half the time as ``"Name" <Address>``), exact
for one of the customer's people, the customer's domain (the newest page of 100,000), a
small domain, the same domain with --since 1d, a prefix, and the overview; with the
``EXPLAIN (ANALYZE, BUFFERS)`` shape of each. Last, what the trigger costs an enqueue: one
``mailroom.enqueue`` at a time, and INSERTs of 500 rows, each with the trigger and with it
disabled, in alternating rounds of the same run.

python -m bench.search --n 10000000 --json /tmp/search.json
python -m bench.search --n 200000               # a few minutes
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import mailroom
from bench.harness import Postgres
from bench.noise import others_busy
from bench.scenarios import Bench, Result
from mailroom import migrate
from mailroom.operator import find as admin_find
from mailroom.operator import stats as admin_stats
from mailroom.outbox import query

CHUNK = 1_000_000
RECIPIENTS, DOMAINS, PEOPLE = 2_000_003, 20_000, 5_000
# One statement per chunk of ids; k spreads the recipients over the ids (7919 is prime).
FILL = """
INSERT INTO mailroom.outbox (queue, to_addresses, cc_addresses, bcc_addresses, subject,
    body_text, status, attempts, created_at, updated_at, next_attempt_at, sent_at,
    provider_message_id, last_error)
SELECT (ARRAY['user_action_queue', 'bulk', 'digest'])[1 + i %% 3],
       ARRAY[CASE WHEN i %% 100 = 7 THEN 'person' || k %% %(people)s || '@bigcustomer.example'
                  WHEN i %% 100 = 13 THEN 'kunde' || k %% 1000 || '@xn--bcher-kva.de'
                  WHEN i %% 10 < 3 THEN '"User ' || k || '" <User' || k || '@D'
                                       || k %% %(domains)s || '.example>'
                  ELSE 'user' || k || '@d' || k %% %(domains)s || '.example' END],
       CASE WHEN i %% 10 = 0 THEN ARRAY['cc' || k %% 50000 || '@d' || k %% %(domains)s
                                        || '.example'] ELSE '{}' END,
       CASE WHEN i %% 20 = 1 THEN ARRAY['"Audit" <audit@d' || k %% %(domains)s || '.example>']
            ELSE '{}' END,
       's', 't', s.status, 1, t.at, t.at + interval '1 minute',
       CASE WHEN s.status = 'pending' AND i %% 2 = 0 THEN now() + interval '1 day'
            ELSE t.at END,
       CASE WHEN s.status = 'sent' THEN t.at + interval '1 minute' END,
       CASE WHEN s.status = 'sent' THEN 'ses-' || i END,
       CASE WHEN s.status = 'dead' THEN 'MessageRejected: rejected' END
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS i
CROSS JOIN LATERAL (SELECT (i * 7919) %% %(recipients)s AS k) AS r
CROSS JOIN LATERAL (SELECT now() - interval '30 days' * (1 - i::float8 / %(n)s) AS at) AS t
CROSS JOIN LATERAL (SELECT CASE WHEN i %% 1000 < 979 THEN 'sent' WHEN i %% 1000 < 989 THEN 'dead'
                               WHEN i %% 1000 < 999 THEN 'cancelled'
                               WHEN i %% 2 = 0 THEN 'pending' ELSE 'retrying' END) AS s (status)
"""
# An installation at 0028: no recipient rows, no outbox_live, everything left to backfill.
AS_BEFORE = """
DROP INDEX IF EXISTS mailroom.outbox_live;
UPDATE mailroom.recipients_backfill
SET below = (SELECT max(id) FROM mailroom.outbox), finished_at = NULL
"""
SAMPLES = 200


def fill(dsn: str, n: int, log: Callable[[str], None]) -> dict[str, float]:
    """N messages, then the upgrade as ``mailroom migrate`` runs it; the times."""
    params = {"n": n, "recipients": RECIPIENTS, "domains": DOMAINS, "people": PEOPLE}
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # the row triggers off: the rows are written in the form they would have been
        # stored in (addresses as ses_address() leaves them), recipients left to the upgrade
        conn.execute("SET session_replication_role = replica")
        for lo in range(1, n + 1, CHUNK):
            hi = min(n, lo + CHUNK - 1)
            conn.execute(FILL, {**params, "lo": lo, "hi": hi})
            log(f"filled {hi:,} of {n:,}")
        conn.execute("RESET session_replication_role")
        conn.execute(AS_BEFORE)
        filled = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE mailroom.outbox")
        started = time.perf_counter()
        index_started = time.perf_counter()
        conn.execute(query("outbox_live_index_create"))
        index_s = time.perf_counter() - index_started
        backfill_started = time.perf_counter()
        done = migrate.finish(conn, progress=lambda mark: _every(mark, log))
        backfill_s = time.perf_counter() - backfill_started
        upgrade_s = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE mailroom.outbox_recipients")
        size = conn.execute(
            "SELECT pg_total_relation_size('mailroom.outbox'),"
            " pg_total_relation_size('mailroom.outbox_recipients'),"
            " (SELECT count(*) FROM mailroom.outbox_recipients)"
        ).fetchone()
    assert size is not None
    return {
        "fill_s": filled, "index_s": index_s, "backfill_s": backfill_s, "upgrade_s": upgrade_s,
        "batches": float(done.batches), "outbox_mb": size[0] / 2**20,
        "recipients_mb": size[1] / 2**20, "recipient_rows": float(size[2]),
    }  # fmt: skip


def _every(mark: int, log: Callable[[str], None]) -> None:
    if mark % 1_000_000 < 10_000:
        log(f"backfill: ids below {mark:,} left")


def _targets(n: int, seed: int = 22) -> dict[str, list[str]]:
    """Random search targets that exist in the fill."""
    rng = random.Random(seed)
    ids = [rng.randrange(1, n + 1) for _ in range(SAMPLES)]
    ks = [(i * 7919) % RECIPIENTS for i in ids if i % 100 not in (7, 13)]
    return {
        "exact": [f'"Someone" <USER{k}@d{k % DOMAINS}.EXAMPLE>' if j % 2 else
                  f" user{k}@d{k % DOMAINS}.example " for j, k in enumerate(ks)],
        "exact_customer": [f"person{rng.randrange(PEOPLE)}@BigCustomer.example"
                           for _ in range(SAMPLES)],
        "domain_customer": ["@bigcustomer.example"] * SAMPLES,
        "domain_small": [f"@d{k % DOMAINS}.example" for k in ks],
        "domain_customer_since_1d": ["@bigcustomer.example"] * SAMPLES,
        "prefix": [f"user{k}*" for k in ks],
    }  # fmt: skip


def measure(dsn: str, n: int) -> dict[str, Any]:
    """p50 / p95 (ms) and rows found per kind, and each kind's plan shape."""
    out: dict[str, Any] = {}
    targets = _targets(n)
    since = None
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT now() - interval '1 day'").fetchone()
        since = row[0] if row else None
        for kind, texts in targets.items():
            timings, found = [], []
            for text in texts[:10]:  # warm-up
                admin_find.find(conn, admin_find.Filter(recipient=text))
            for text in texts:
                wanted = admin_find.Filter(
                    recipient=text, since=since if kind.endswith("since_1d") else None
                )
                started = time.perf_counter()
                rows, _ = admin_find.find(conn, wanted)
                timings.append(time.perf_counter() - started)
                found.append(len(rows))
            out[kind] = _summary(timings) | {"found_mean": statistics.fmean(found)}
            out[kind]["plan"] = plan_of(conn, texts[0], since if "since" in kind else None)
        timings = []
        for i in range(SAMPLES // 4 + 5):
            started = time.perf_counter()
            admin_stats.queues(conn)
            if i >= 5:  # warm-up
                timings.append(time.perf_counter() - started)
        explained = sql.Composed([sql.SQL("EXPLAIN (ANALYZE, BUFFERS) "), query("queues_overview")])
        lines = [r[0] for r in conn.execute(explained).fetchall()]
        out["overview"] = _summary(timings) | {"plan": _shape(lines)}
    return out


def plan_of(conn: psycopg.Connection[Any], text: str, since: Any) -> str:
    wanted = admin_find.Filter(recipient=text, since=since)
    params = {**wanted.params(), "limit": 51, "cursor": None, "cursor_at": None}
    explained = sql.Composed([sql.SQL("EXPLAIN (ANALYZE, BUFFERS) "), query("find_by_recipient")])
    lines = [r[0] for r in conn.execute(explained, params, prepare=False).fetchall()]
    return _shape(lines)


def _shape(lines: list[str]) -> str:
    """The plan's nodes, innermost last, and its execution time: one line."""
    nodes = []
    for line in lines:
        text = line.strip().removeprefix("->").strip()
        if "(cost=" in text or "(actual" in text:
            nodes.append(text.split("  (")[0])
    timing = next((ln for ln in lines if ln.startswith("Execution Time")), "")
    return " > ".join(nodes) + (f"; {timing}" if timing else "")


def _summary(timings: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in timings)
    return {"p50_ms": ms[len(ms) // 2], "p95_ms": ms[int(len(ms) * 0.95) - 1], "max_ms": ms[-1]}


BULK = """
INSERT INTO mailroom.outbox (to_addresses, cc_addresses, subject, body_text, queue)
SELECT ARRAY['"Bulk ' || g || '" <Bulk' || g || '@example.com>'],
       ARRAY['cc' || g || '@example.org'], 's', 't', 'enqueue_bench'
FROM generate_series(1, 500) AS g
"""


def enqueue_cost(dsn: str, rounds: int = 4, singles: int = 300, bulks: int = 10) -> dict[str, Any]:
    """Per-message cost of one enqueue at a time and of 500-row INSERTs, with the recipient
    trigger and without it, alternating rounds (medians of the rounds)."""
    results: dict[str, list[float]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for round_ in range(rounds):
            for trigger in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                action = "ENABLE" if trigger == "on" else "DISABLE"
                conn.execute(f"ALTER TABLE mailroom.outbox {action} TRIGGER outbox_recipients_add")
                started = time.perf_counter()
                for i in range(singles):
                    mailroom.enqueue(conn, f'"One {i}" <One{i}@example.com>', subject="s", text="t",
                                     queue="enqueue_bench")  # fmt: skip
                single = (time.perf_counter() - started) / singles
                started = time.perf_counter()
                for _ in range(bulks):
                    conn.execute(BULK)
                bulk = (time.perf_counter() - started) / bulks
                results.setdefault(f"single_{trigger}_ms", []).append(single * 1000)
                results.setdefault(f"bulk500_{trigger}_ms", []).append(bulk * 1000)
        conn.execute("ALTER TABLE mailroom.outbox ENABLE TRIGGER outbox_recipients_add")
        conn.execute("DELETE FROM mailroom.outbox WHERE queue = 'enqueue_bench'")
    return {key: statistics.median(values) for key, values in results.items()}


def run(pg: Postgres, n: int, log: Callable[[str], None]) -> dict[str, Any]:
    with pg.database() as dsn:
        built = fill(dsn, n, log)
        log(f"filled and upgraded: {built}")
        searches = measure(dsn, n)
        log("searches measured")
        cost = enqueue_cost(dsn)
    return {"n": n, "build": built, "search": searches, "enqueue": cost}


def smoke(bench: Bench, n: int = 20_000) -> Result:
    """``python -m bench --smoke``: the whole path at a tiny size; every target is found."""
    out = run(bench.pg, n, lambda _: None)
    # (at this size most of the customer's 5,000 people have no mail yet: not checked)
    for kind in ("exact", "domain_customer", "domain_small", "prefix"):
        assert out["search"][kind]["found_mean"] >= 1, (kind, out["search"][kind])
    return {"overview_p95_ms": float(out["search"]["overview"]["p95_ms"]),
            "exact_p95_ms": float(out["search"]["exact"]["p95_ms"])}  # fmt: skip


def render(out: dict[str, Any], busy: str) -> str:
    b, s, e = out["build"], out["search"], out["enqueue"]
    per_m = out["n"] / 1e6
    lines = [
        f"{out['n']:,} messages; {busy}",
        "",
        f"fill {b['fill_s']:.0f} s; upgrade (migrate's post-migration step) {b['upgrade_s']:.0f} s:"
        f" outbox_live built CONCURRENTLY in {b['index_s']:.1f} s ({b['index_s'] / per_m:.1f} s"
        f" per million), recipients backfilled in {b['backfill_s']:.0f} s"
        f" ({b['backfill_s'] / per_m:.1f} s per million messages, {b['batches']:.0f} batches);"
        f" outbox {b['outbox_mb']:,.0f} MiB, outbox_recipients {b['recipients_mb']:,.0f} MiB"
        f" ({b['recipient_rows']:,.0f} rows)",
        "",
        "| search | p50 | p95 | max | rows per page | plan |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind, m in s.items():
        found = f"{m['found_mean']:.1f}" if "found_mean" in m else "-"
        times = f"{m['p50_ms']:.1f} ms | {m['p95_ms']:.1f} ms | {m['max_ms']:.1f} ms"
        lines.append(f"| {kind} | {times} | {found} | {m['plan']} |")
    lines += [
        "",
        "| enqueue | with the trigger | without | cost |",
        "| --- | ---: | ---: | ---: |",
        f"| one `mailroom.enqueue` | {e['single_on_ms']:.3f} ms | {e['single_off_ms']:.3f} ms |"
        f" {(e['single_on_ms'] / e['single_off_ms'] - 1) * 100:+.1f} % |",
        f"| INSERT of 500 rows | {e['bulk500_on_ms']:.1f} ms | {e['bulk500_off_ms']:.1f} ms |"
        f" {(e['bulk500_on_ms'] / e['bulk500_off_ms'] - 1) * 100:+.1f} % |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="messages (10,000,000 for docs)")
    parser.add_argument("--json", type=Path, help="also save raw results as JSON here")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[bench.search {time.strftime('%H:%M:%S')}] {message}", flush=True)

    pg = Postgres()
    pg.start()
    try:
        busy_before = others_busy()
        out = run(pg, args.n, log)
        busy_after = others_busy()
    finally:
        pg.stop()
    print(render(out, f"before: {busy_before}; after: {busy_after}"))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
