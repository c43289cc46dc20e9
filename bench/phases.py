"""``python -m bench.phases``: where PostgreSQL's CPU goes during the bulk drain, by phase
of the server's work, for the code under test and another commit, in one run.

pg_stat_statements times a statement by the clock: on a machine whose cores PostgreSQL
shares with the daemon and the SES stand-in, that time includes waiting for a core, so a
statement can take longer while costing less CPU (and the reverse). This counts CPU
instead: ``perf record -a`` samples every process's stack with DWARF call graphs from the
fill's commit to the last recorded outcome (the span the drain's CPU counter counts); the
samples of PostgreSQL's processes are charged to a phase by the functions on their stacks
(:func:`phase`), and a sample is 1/``FREQUENCY`` s of one core's time. The drains are the
compare run's bulk drain at 0 ms with the throughput settings, the sides in turns, on one
server and one stand-in. Needs ``perf`` (Debian: linux-perf) and the right to sample every
process (root, or ``kernel.perf_event_paranoid`` at -1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.harness import THROUGHPUT, Code, Postgres, Standin, snapshot
from bench.regress import ref_code
from bench.scenarios import Bench, drain

FREQUENCY = 499  # samples per second and core: not a multiple of the kernel's tick

PARSING = ("pg_parse_query", "pg_analyze_and_rewrite_varparams", "exec_bind_message",
           "exec_parse_message", "CreateCachedPlan", "CompleteCachedPlan")  # fmt: skip
# Phases in the order they are tested: the first whose functions are on a stack takes the
# sample (planning inside a trigger's statement is planning; a trigger's statement runs
# inside the outer statement's executor finish).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("autovacuum", ("AutoVacWorkerMain", "AutoVacLauncherMain")),
    (
        "WAL writer, checkpointer, background writer",
        ("WalWriterMain", "CheckpointerMain", "BackgroundWriterMain"),
    ),
    ("connection start-up (a new backend)", ("InitPostgres", "BackendInitialize")),
    ("planning", ("pg_plan_queries", "pg_plan_query", "standard_planner")),
    ("after triggers: PL/pgSQL (the changes feed, the token trigger)", ("plpgsql_exec_trigger",)),
    ("after triggers: foreign-key checks", ("RI_FKey_check_ins", "RI_FKey_check")),
    ("after triggers: other", ("AfterTriggerEndQuery", "AfterTriggerFireDeferred")),
    ("data-modifying CTEs run to the end after the main query", ("standard_ExecutorFinish",)),
    ("executing the statements' plans", ("standard_ExecutorRun",)),
    ("commit", ("CommitTransactionCommand", "finish_xact_command")),
    ("parsing, analysis, binding", PARSING),
    ("client protocol (the socket)", ("pq_getbyte", "pq_getmessage", "socket_flush")),
    ("other work of backends", ("PostgresMain",)),
)
POSTMASTER = "postmaster (starting backends) and other server processes"


def phase(stack: Iterable[str]) -> str:
    """The phase a sample belongs to, from its stack's function names (any order)."""
    names = set(stack)
    for label, functions in RULES:
        if names.intersection(functions):
            return label
    return POSTMASTER


def phases(samples: Iterable[Sequence[str]]) -> Counter[str]:
    return Counter(phase(stack) for stack in samples)


def perf() -> str:
    found = shutil.which("perf")
    if not found:
        raise RuntimeError("perf is not installed (Debian: apt-get install linux-perf)")
    return found


def recorder(output: Path) -> Callable[[], Callable[[], None]]:
    """A ``counted`` hook for scenarios.drain: the whole machine, until stopped."""

    def start() -> Callable[[], None]:
        command = [perf(), "record", "-a", "--call-graph", "dwarf,16384"]
        command += ["-F", str(FREQUENCY), "-o", str(output)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop() -> None:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            if proc.returncode not in (0, -signal.SIGINT) or not output.exists():
                raise RuntimeError(f"perf record failed: {err.decode(errors='replace')[-500:]}")

        return stop

    return start


def stacks(data: Path, comm: str = "postgres") -> Iterator[list[str]]:
    """Each sample's function names, innermost first, of processes named ``comm``."""
    script = subprocess.run(
        [perf(), "script", "-i", str(data), "--comm", comm, "-F", "comm,ip,sym"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    current: list[str] | None = None
    for line in script.stdout.splitlines():
        if not line.strip():
            if current is not None:
                yield current
            current = None
        elif not line[0].isspace():
            current = []  # a sample's header line: its process name
        elif current is not None:
            parts = line.split()
            if len(parts) >= 2:
                current.append(parts[1].split("+", 1)[0])
    if current is not None:
        yield current


def measure(bench: Bench, code: Code, n: int, work: Path) -> dict[str, Any]:
    data = work / "perf.data"
    result = drain(bench, n, latency_ms=0, settings=THROUGHPUT, code=code, counted=recorder(data))
    counts = phases(stacks(data))
    data.unlink()
    per_email = {k: v / FREQUENCY / n * 1e6 for k, v in counts.items()}  # µs
    return {"rate": result["rate"], "pg_us": result["pg_cpu_per_1000"] * 1000, "phases": per_email}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--ref", default="9fb73c5", help="the other commit (default 9fb73c5)")
    parser.add_argument("--runs", type=int, default=3, help="rounds (medians are printed)")
    parser.add_argument("--n", type=int, default=30_000, help="messages per drain")
    parser.add_argument("--json", type=Path, help="also save the rounds as JSON here")
    args = parser.parse_args(argv)
    perf()  # before minutes of set-up
    with tempfile.TemporaryDirectory(prefix="mailroom-phases-") as workdir:
        work = Path(workdir)
        snapshot(work)
        pg = Postgres()
        pg.start()
        standin = Standin()
        try:
            bench = Bench(pg, standin, work)
            ref, commit = ref_code(bench, args.ref)
            sides = {"HEAD": Code(), commit[:7]: ref}
            runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
            for round_ in range(args.runs):
                order = list(sides.items())
                order = order[round_ % 2 :] + order[: round_ % 2]  # no side always first
                for side, code in order:
                    runs[side].append(measure(bench, code, args.n, work))
        finally:
            standin.stop()
            pg.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1))
    print("\n".join(table(runs, args.n)))


def table(runs: dict[str, list[dict[str, Any]]], n: int) -> list[str]:
    """Markdown: µs of PostgreSQL CPU per email by phase, medians of the rounds."""
    head, other = list(runs)
    rounds = len(runs[head])

    def med(side: str, key: str) -> float:
        return statistics.median(float(r["phases"].get(key, 0.0)) for r in runs[side])

    seen = {k for rs in runs.values() for r in rs for k in r["phases"]}
    names = sorted(seen, key=lambda k: -med(head, k))  # HEAD's biggest first

    lines = [
        f"{n:,} emails per drain, medians of {rounds} round(s); µs of CPU per email:",
        "",
        f"| phase | {head} | {other} | {head} minus {other} |",
        "|---|---|---|---|",
    ]
    for key in names:
        a, b = med(head, key), med(other, key)
        lines.append(f"| {key} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    totals = {s: statistics.median(sum(r["phases"].values()) for r in runs[s]) for s in runs}
    lines.append(
        f"| **all PostgreSQL processes (perf)** | {totals[head]:.1f} | {totals[other]:.1f}"
        f" | {totals[head] - totals[other]:+.1f} |"
    )
    counter = {s: statistics.median(r["pg_us"] for r in runs[s]) for s in runs}
    lines.append(
        f"| the drain's counter (/proc), same drains | {counter[head]:.1f} | {counter[other]:.1f}"
        f" | {counter[head] - counter[other]:+.1f} |"
    )
    ratios = [h["pg_us"] / o["pg_us"] for h, o in zip(runs[head], runs[other], strict=True)]
    lines += [
        "",
        f"{head} / {other}, PostgreSQL CPU per email (the counter), round by round: "
        + ", ".join(f"{r:.0%}" for r in ratios),
        "emails/s: " + "; ".join(
            f"{s} " + ", ".join(f"{r['rate']:,.0f}" for r in runs[s]) for s in runs
        ),
    ]  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
