"""``python -m bench.caps``: what per-recipient caps cost on the bulk path.

The same bulk drain (every message to its own recipient, stand-in at 0 ms) alternately
without caps and with a cap that applies to every message and never triggers
(``MAILROOM_RECIPIENT_CAP=1000/1h``): the difference is the price of counting, one
transaction per batch (advisory locks, one read, one insert). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.harness import THROUGHPUT, Postgres, Standin, snapshot
from bench.scenarios import Bench, Result, drain

CAPPED = {**THROUGHPUT, "MAILROOM_RECIPIENT_CAP": "1000/1h"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.caps", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="messages per drain")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--source", default="HEAD", help="git commit, or 'worktree'")
    args = parser.parse_args(argv)
    results: dict[str, list[Result]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-") as workdir:
        commit, _ = snapshot(Path(workdir), args.source)
        pg = Postgres()
        pg.start()
        standin = Standin()
        try:
            bench = Bench(pg, standin, Path(workdir))
            for _ in range(args.runs):
                results["off"].append(drain(bench, args.n, latency_ms=0))
                results["on"].append(drain(bench, args.n, latency_ms=0, settings=CAPPED))
        finally:
            standin.stop()
            pg.stop()
    print(f"code {commit}, {args.n} messages per drain, {args.runs} alternating runs, medians")
    print("| caps | emails/s | daemon CPU s per 1000 | dead |")
    print("|---|---:|---:|---:|")
    for key, label in (("off", "off"), ("on", "on: 1000/1h (never reached)")):
        rate = statistics.median(r["rate"] for r in results[key])
        cpu = statistics.median(r["cpu_per_1000"] for r in results[key])
        dead = max(r["dead"] for r in results[key])
        print(f"| {label} | {rate:,.0f} | {cpu:.3f} | {dead} |")
    off = statistics.median(r["rate"] for r in results["off"])
    on = statistics.median(r["rate"] for r in results["on"])
    print(f"throughput with caps: {on / off * 100:.1f} % of without")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
