"""``python -m bench``: set everything up, run the scenarios, print (and write) the report.

python -m bench --smoke                          # tiny N, one run, < 30 s, writes nothing
python -m bench --runs 3 --write docs/BENCHMARKS.md
python -m bench --only bulk,peer --runs 1        # a subset
python -m bench --compare 9fb73c5 --runs 3       # HEAD against a commit, side by side
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import compare, peer, profile, regress, report
from bench import events as bench_events
from bench import search as bench_search
from bench import suppression as bench_suppression
from bench.harness import BASE, THROUGHPUT, Code, Postgres, Standin, snapshot
from bench.noise import others_busy
from bench.scenarios import Bench, Result, drain, steady
from bench.transport import OPS as TRANSPORT_OPS
from bench.transport import VARIANTS as TRANSPORTS
from mailroom.config.settings import Config

SCENARIOS = (
    "bulk", "defaults", "simple", "oldcode", "transport", "peer", "raw", "whatif", "latency",
    "sweep", "profile", "suppression", "events", "search",
)  # fmt: skip
FULL = {
    "bulk": 50_000,
    "simple": 20_000,
    "peer": 10_000,
    "raw": 50_000,
    "floor": 300,
    "low": (5.0, 20.0),  # rate per second, seconds
    "high": (1000.0, 10.0),
    "sweep": 50_000,
    "profile": (50_000, 5_000),  # bulk, simple
    "defaults": 50_000,
    "transport": 3_000,  # calls per variant and operation
}
PEER_THREADS_AT_50MS = 64
DEFAULTS = Config(database_url="")  # the daemon's defaults, as the code under test has them
SMOKE = {
    "bulk": 2_000,
    "simple": 300,
    "peer": 200,
    "raw": 2_000,
    "floor": 20,
    "low": (5.0, 0.6),
    "high": (200.0, 0.5),
    "sweep": 1_000,
    "profile": (0, 0),
    "defaults": 2_000,
    "transport": 50,
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny N, one run, no doc write")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (medians)")
    parser.add_argument("--sweep-runs", type=int, default=1, help="runs per sweep point")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--write", type=Path, help="update this markdown file (docs/BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="also save raw results as JSON here")
    parser.add_argument(
        "--old",
        type=Path,
        help="a checkout of the code before aiohttp (git worktree add /tmp/old 9fb73c5) with"
        " its own .venv: scenario oldcode (simple drain) and transport ours_old",
    )
    parser.add_argument(
        "--compare",
        metavar="REF",
        help="instead of the scenarios: REF (a commit, or several: a,b) against the code"
        " under test, in interleaved rounds on one server, with ratios and statement tables",
    )
    parser.add_argument(
        "--source",
        default="HEAD",
        help="code under test: a git commit (default HEAD), or 'worktree' for uncommitted src/",
    )
    args = parser.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.smoke:
        args.runs, args.sweep_runs, args.write = 1, 1, None
    if "oldcode" in args.only and args.old is None:
        args.only.discard("oldcode")  # needs --old
    return args


def round_plan(
    args: argparse.Namespace, bench: Bench, sizes: dict[str, Any]
) -> list[tuple[str, str, Callable[[], Result]]]:
    """One round: (scenario group, result key, measurement). Ours and the peer alternate,
    so that noise hits both alike. A smoke run exercises each code path once."""
    batch = int(THROUGHPUT["MAILROOM_BATCH_LIMIT"])
    threads = int(THROUGHPUT["MAILROOM_SES_CONCURRENCY"])
    low_rate, low_seconds = sizes["low"]
    high_rate, high_seconds = sizes["high"]
    full = not args.smoke

    def bulk(latency: int) -> Callable[[], Result]:
        return lambda: drain(bench, sizes["bulk"], latency_ms=latency)

    def pgqueuer(latency: int) -> Callable[[], Result]:
        # At 50 ms, 16 threads would cap the peer at 320 calls/s: give it enough threads
        # to be limited by its CPU, not by the stand-in's latency.
        width = threads if latency == 0 else PEER_THREADS_AT_50MS
        return lambda: peer.pgqueuer_drain(
            bench, sizes["peer"], latency_ms=latency, batch_size=batch, threads=width
        )

    def defaults(latency: int) -> Callable[[], Result]:
        # every daemon setting at its default (BASE only: HTTP off, logs at warning)
        return lambda: drain(bench, sizes["defaults"], latency_ms=latency, settings={})

    def simple(code: Code | None = None) -> Callable[[], Result]:
        return lambda: drain(bench, sizes["simple"], latency_ms=0, simple=True, code=code)

    def transport(variant: str, op: str) -> Callable[[], Result]:
        calls = sizes["transport"]
        return lambda: compare.transport_cpu(bench, variant, op, calls, args.old)

    transports = [
        ("transport", f"transport_{v}_{op}", transport(v, op))
        for v in TRANSPORTS
        if v != "ours_old" or args.old is not None
        for op in TRANSPORT_OPS
    ]
    plan: list[tuple[str, str, Callable[[], Result]] | None] = [
        ("bulk", "bulk0", bulk(0)),
        ("defaults", "defaults0", defaults(0)),
        ("peer", "peer0", pgqueuer(0)),
        ("bulk", "bulk50", bulk(50)) if full else None,
        ("defaults", "defaults50", defaults(50)) if full else None,
        ("peer", "peer50", pgqueuer(50)) if full else None,
        ("simple", "simple", simple()),
        ("oldcode", "simple_old", simple(bench.old)) if bench.old else None,
        *transports,
        ("raw", "raw", lambda: peer.raw_ceiling(bench, sizes["raw"], batch=batch)),
        (
            "whatif",
            "bulk0_no_checks",
            lambda: drain(bench, sizes["bulk"], latency_ms=0, checks=False),
        ),
        (
            "whatif",
            "raw_no_checks",
            lambda: peer.raw_ceiling(bench, sizes["raw"], batch=batch, checks=False),
        )
        if full
        else None,
        ("latency", "floor", lambda: peer.latency_floor(bench, sizes["floor"])),
        (
            "latency",
            "latency_low",
            lambda: steady(bench, rate=low_rate, seconds=low_seconds, settings={}),
        ),
        (
            "latency",
            "latency_high",
            lambda: steady(bench, rate=high_rate, seconds=high_seconds, settings=THROUGHPUT),
        )
        if full
        else None,
        # suppression, events and search are measured by their own commands (python -m
        # bench.suppression, python -m bench.events, python -m bench.search); --smoke runs
        # a tiny version of each here, so that CI keeps them working
        ("suppression", "suppression", lambda: bench_suppression.smoke(bench))
        if not full
        else None,
        ("events", "events", lambda: bench_events.smoke(bench)) if not full else None,
        ("search", "search", lambda: bench_search.smoke(bench)) if not full else None,
    ]
    return [step for step in plan if step is not None and step[0] in args.only]


def run_all(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    sizes = SMOKE if args.smoke else FULL
    runs: dict[str, list[Result]] = {}
    for round_ in range(1, args.runs + 1):
        log(f"round {round_} of {args.runs}")
        for _, key, what in round_plan(args, bench, sizes):
            started = time.perf_counter()
            result = what()
            runs.setdefault(key, []).append(result)
            shown = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
            log(f"{key}: {shown} ({time.perf_counter() - started:.1f} s)")

    results: dict[str, Any] = {"runs": runs, "sweeps": [], "profiles": []}
    if "sweep" in args.only:
        results["sweeps"] = sweeps(args, bench, sizes["sweep"])
    if "profile" in args.only and not args.smoke:
        results["profiles"] = profiles(args, bench, *sizes["profile"])
    return results


def profiles(
    args: argparse.Namespace, bench: Bench, bulk_n: int, simple_n: int
) -> list[dict[str, Any]]:
    out = []
    for label, simple, n in (("bulk", False, bulk_n), ("simple", True, simple_n)):
        output = bench.workdir / f"profile-{label}.txt"
        log(f"profile: {label} drain under py-spy")
        result = drain(bench, n, latency_ms=0, simple=simple, during=profile.recorder(output))
        out.append({**profile.summarise(output), "label": label, "n": n, "rate": result["rate"]})
        if args.json:
            args.json.with_name(f"{args.json.stem}.profile-{label}.txt").write_text(
                output.read_text()
            )
    return out


BATCH, CONCURRENCY, REPLICAS = "MAILROOM_BATCH_LIMIT", "MAILROOM_SES_CONCURRENCY", "replicas"


@dataclass(frozen=True)
class Sweep:
    key: str
    title: str
    varies: str  # a daemon setting, or REPLICAS
    values: list[int]
    smoke_values: list[int] = field(default_factory=list)
    latency_ms: int = 0
    checks: bool = True  # False: the what-if schema without content CHECKs
    simple: bool = False  # simple messages (N / 5) instead of templated ones


SWEEPS = (
    Sweep("batch", f"{BATCH}, 0 ms", BATCH, [50, 200, 500, 1000]),
    Sweep("concurrency0", f"{CONCURRENCY}, 0 ms", CONCURRENCY, [2, 8, 16]),
    Sweep("concurrency50", f"{CONCURRENCY}, 50 ms", CONCURRENCY, [2, 8, 16, 32], latency_ms=50),
    Sweep("replicas", "daemon processes on one database, 0 ms", REPLICAS, [1, 2, 4], [2]),
    Sweep(
        "replicas50", "daemon processes on one database, 50 ms", REPLICAS, [1, 2, 4], latency_ms=50
    ),
    Sweep(
        "replicas_no_checks",
        "daemon processes on one database, 0 ms, what-if schema without content CHECKs",
        REPLICAS,
        [1, 2, 4],
        checks=False,
    ),
    Sweep(
        "replicas_simple",
        "daemon processes on one database, simple messages, 0 ms",
        REPLICAS,
        [1, 2, 4],
        simple=True,
    ),
)


def sweeps(args: argparse.Namespace, bench: Bench, n: int) -> list[dict[str, Any]]:
    out = []
    for sweep in SWEEPS:
        points = []
        for value in sweep.smoke_values if args.smoke else sweep.values:
            settings, replicas = dict(THROUGHPUT), 1
            if sweep.varies == REPLICAS:
                replicas = value
            else:
                settings[sweep.varies] = str(value)
            rows = []
            for _ in range(args.sweep_runs):
                started = time.perf_counter()
                result = drain(
                    bench,
                    n // 5 if sweep.simple else n,
                    latency_ms=sweep.latency_ms,
                    simple=sweep.simple,
                    settings=settings,
                    replicas=replicas,
                    checks=sweep.checks,
                )
                rows.append(result)
                log(
                    f"sweep {sweep.key} {value}: {result['rate']:,.0f}/s, "
                    f"{result['cpu_per_1000']:.3f} CPU s/1000 "
                    f"({time.perf_counter() - started:.1f} s)"
                )
            points.append({"value": value, "runs": rows})
        if points:
            param = "daemon processes" if sweep.varies == REPLICAS else sweep.varies
            out.append({"key": sweep.key, "title": sweep.title, "param": param, "points": points})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    noise_before = others_busy()
    log(f"other load: {noise_before}")
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-") as workdir:
        commit, digest = snapshot(Path(workdir), args.source)
        log(f"code under test: {commit}, src/mailroom + sql digest {digest}")
        pg = Postgres()
        pg.start()
        standin = Standin()
        try:
            bench = Bench(pg, standin, Path(workdir))
            if args.compare:
                return regress.main(bench, args.compare, runs=args.runs, smoke=args.smoke,
                                    save=args.json)  # fmt: skip
            if args.old is not None and "oldcode" in args.only:
                bench.old = compare.old_code(bench, args.old)
            begun = time.strftime("%Y-%m-%d %H:%M")
            results = run_all(args, bench)
            postgres = pg.version()
        finally:
            standin.stop()
            pg.stop()
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    settings = (
        f"throughput daemons: {_env(BASE | THROUGHPUT)}, other variables at their defaults;"
        f" idle-latency and defaults daemons: {_env(BASE)} and the defaults (batch limit"
        f" {DEFAULTS.batch_limit}, concurrency {DEFAULTS.ses_concurrency})."
        " PostgreSQL: embedded server (mailroom.embedded), fsync=off, full_page_writes=off,"
        " synchronous_commit on, otherwise defaults; a fresh database per run. SES stand-in:"
        " tests/sesv2_standin.py in its own process. pgqueuer: one worker process, asyncpg"
        f" driver, batch_size={THROUGHPUT['MAILROOM_BATCH_LIMIT']}, one boto3 client,"
        f" {THROUGHPUT['MAILROOM_SES_CONCURRENCY']} threads for send_email at 0 ms and"
        f" {PEER_THREADS_AT_50MS} at 50 ms (so that latency does not cap it), botocore retries"
        " off (as the daemon). Raw ceiling: one psycopg process, the daemon's claim shape,"
        f" batch {THROUGHPUT['MAILROOM_BATCH_LIMIT']}."
    )
    results["meta"] = {
        "started": begun,
        "finished": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "runs": args.runs,
        "machine": report.machine(),
        "versions": {**report.versions(postgres, commit), "code digest": digest}
        | ({"old code": f"{args.old} at {_head(args.old)}"} if args.old else {}),
        "noise": f"before: {noise_before}; after: {others_busy()} (the load average at the"
        " end counts the benchmark's own threads).",
        "settings": settings,
    }
    print(report.render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.write:
        report.write(args.write, results)
        log(f"wrote {args.write}")
    log(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _head(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def _env(settings: dict[str, str]) -> str:
    return " ".join(f"`{k}={v}`" for k, v in settings.items())


if __name__ == "__main__":
    sys.exit(main())
