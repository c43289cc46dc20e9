"""``python -m bench --compare REF``: the code under test against another commit, in one
run on one database server, so that a regression shows as a ratio and not as a guess
across days.

REF's ``src/mailroom`` and ``sql/`` are archived from git into the work dir; its own
migrations make its database template, and its daemons run from that copy (in this venv).
Rounds interleave REF and HEAD (machine noise hits both alike); every drain also records
the server's CPU and WAL, and pg_stat_statements per statement (the last round's table
is printed for each side). Nothing here asserts: the targets are printed, met or not.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import statements
from bench.formats import Runs, median
from bench.harness import ROOT, THROUGHPUT, Code
from bench.peer import raw_ceiling
from bench.scenarios import Bench, Result, drain, steady

REF_TEMPLATE = "bench_template_ref"
# Smaller than the scenarios' N (a round runs every side): 30,000 emails take 2-4 s at
# the bulk rates, long enough for the steady state, short enough for 3 rounds of 3 sides.
FULL: dict[str, Any] = {"bulk": 30_000, "defaults": 20_000, "simple": 5_000, "raw": 30_000,
                        "latency": (10.0, 10.0)}  # fmt: skip
SMOKE: dict[str, Any] = {"bulk": 1_000, "defaults": 500, "simple": 200, "raw": 1_000,
                         "latency": (5.0, 0.6)}  # fmt: skip
CEILING_SHARE = 0.85  # bulk at 0 ms >= 85 % of the raw claim + mark-sent ceiling
DEFAULTS_SHARE = 0.80  # defaults at 50 ms >= 80 % of tuned
DB_CPU_MARGIN = 0.20  # database CPU per 1,000 emails <= REF's + 20 %


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ref_code(bench: Bench, ref: str) -> tuple[Code, str]:
    """REF archived into the work dir, with its own migrated template; (code, commit).
    The same commit twice is one template."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", ref],  # noqa: S607 -- git from PATH, read-only
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    tree = bench.workdir / f"ref-{commit}"
    template = f"{REF_TEMPLATE}_{commit}"
    code = Code(pythonpath=[str(tree / "src")], template=template)
    if tree.exists():
        return code, commit
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src/mailroom", "sql"],  # noqa: S607
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)  # noqa: S607
    bench.pg.add_template(template, code)
    return code, commit


def plan(bench: Bench, code: Code, sizes: dict[str, Any]) -> list[tuple[str, Callable[[], Result]]]:
    """One side's measurements for one round, as (key, measurement)."""
    rate, seconds = sizes["latency"]

    def bulk(
        latency: int, settings: dict[str, str], n: int, with_statements: bool = False
    ) -> Result:
        into: dict[str, Any] = {}
        during = statements.watch(bench.pg, into) if with_statements else None
        result = drain(bench, n, latency_ms=latency, settings=settings, code=code, during=during)
        return {**result, **into}

    return [
        ("bulk0", lambda: bulk(0, THROUGHPUT, sizes["bulk"], with_statements=True)),
        ("bulk50", lambda: bulk(50, THROUGHPUT, sizes["bulk"])),
        ("defaults50", lambda: bulk(50, {}, sizes["defaults"])),
        ("simple0", lambda: drain(bench, sizes["simple"], latency_ms=0, simple=True, code=code)),
        ("latency", lambda: steady(bench, rate=rate, seconds=seconds, settings={}, code=code)),
    ]


def run(bench: Bench, refs: list[str], *, runs: int, smoke: bool) -> dict[str, Any]:
    statements.enable(bench.pg)
    sizes = SMOKE if smoke else FULL
    sides: dict[str, Code] = {}
    for ref in refs:
        code, commit = ref_code(bench, ref)
        log(f"reference: {ref} = {commit}")
        sides[commit] = code
    sides["HEAD"] = Code()
    results: dict[str, dict[str, Runs]] = {side: {} for side in [*sides, "raw"]}
    for round_ in range(1, runs + 1):
        log(f"round {round_} of {runs}")
        # the order turns each round: no side always runs first (or last) on the server
        order = list(sides.items())
        shift = (round_ - 1) % len(order)
        for side, side_code in order[shift:] + order[:shift]:
            for key, measure in plan(bench, side_code, sizes):
                result = measure()
                results[side].setdefault(key, []).append(result)
                log(f"{side} {key}: {_brief(result)}")
        raw = raw_ceiling(bench, sizes["raw"], batch=int(THROUGHPUT["MAILROOM_BATCH_LIMIT"]))
        results["raw"].setdefault("raw", []).append(raw)
        log(f"raw ceiling: {_brief(raw)}")
    return {"refs": [s for s in sides if s != "HEAD"], "runs": results}


def _brief(result: Result) -> str:
    keys = ("rate", "p50_ms", "p99_ms", "cpu_per_1000", "pg_cpu_per_1000", "rss_mib")
    return ", ".join(f"{k} {result[k]:,.3f}" for k in keys if k in result)


def _cell(runs: Runs | None, key: str, fmt: str) -> str:
    if not runs or key not in runs[0]:
        return "—"
    return format(median(runs, key), fmt)


ROWS = (
    ("bulk0", "rate", "bulk, throughput settings, 0 ms: emails/s", ",.0f"),
    ("bulk0", "cpu_per_1000", "  daemon CPU s per 1,000 emails", ".3f"),
    ("bulk0", "pg_cpu_per_1000", "  PostgreSQL CPU s per 1,000 emails", ".3f"),
    ("bulk0", "wal_per_email", "  WAL bytes per email", ",.0f"),
    ("bulk0", "rss_mib", "  daemon RSS after the drain, MiB", ".0f"),
    ("bulk50", "rate", "bulk, throughput settings, 50 ms: emails/s", ",.0f"),
    ("defaults50", "rate", "bulk, defaults, 50 ms: emails/s", ",.0f"),
    ("defaults50", "rss_mib", "  daemon RSS after the drain (defaults), MiB", ".0f"),
    ("simple0", "rate", "simple (SendEmail each), 0 ms: emails/s", ",.0f"),
    ("simple0", "cpu_per_1000", "  daemon CPU s per 1,000 emails", ".3f"),
    ("latency", "p50_ms", "idle latency commit → SES request, p50 ms", ".2f"),
    ("latency", "p99_ms", "idle latency, p99 ms", ".2f"),
    ("latency", "rss_mib", "daemon RSS at steady state (defaults, idle), MiB", ".0f"),
)


def render(out: dict[str, Any]) -> str:
    refs, runs = out["refs"], out["runs"]
    head, raw = runs["HEAD"], runs["raw"]["raw"]
    lines = [
        f"HEAD against {', '.join(refs)}, medians of {len(raw)} interleaved round(s):",
        "",
        "| figure | " + " | ".join(refs) + " | HEAD | " + " | ".join(f"HEAD / {r}" for r in refs)
        + " |",
        "|---" * (2 * len(refs) + 2) + "|",
    ]  # fmt: skip
    for key, field, label, fmt in ROWS:
        cells = [_cell(runs[r].get(key), field, fmt) for r in refs]
        ratios = []
        for r in refs:
            a, b = runs[r].get(key), head.get(key)
            ok = a and b and field in a[0] and field in b[0] and median(a, field)
            ratios.append(f"{median(b, field) / median(a, field):.0%}" if ok else "—")
        row = [label, *cells, _cell(head.get(key), field, fmt), *ratios]
        lines.append("| " + " | ".join(row) + " |")
    ceiling = median(raw, "rate")
    label = "raw claim + mark-sent ceiling (HEAD's schema): emails/s"
    lines.append("| " + " | ".join([label, *["—"] * len(refs), f"{ceiling:,.0f}",
                                    *["—"] * len(refs)]) + " |")  # fmt: skip
    lines += ["", "Targets (issue 21):", ""]
    bulk, tuned, dflt = median(head["bulk0"], "rate"), head["bulk50"], head["defaults50"]
    share = median(dflt, "rate") / median(tuned, "rate")
    # A round's drains ran minutes apart on the same server: per-round ratios show how far
    # one run can move a ratio; a target counts as met only if the ratio of the medians and
    # the median round both meet it.
    by_round = paired(head["bulk0"], raw, "rate")
    fast = min(bulk / ceiling, statistics.median(by_round)) >= CEILING_SHARE
    lines += [
        f"- bulk at 0 ms: {bulk / ceiling:.0%} of the raw ceiling"
        f" (target ≥ {CEILING_SHARE:.0%}{spread(by_round)}) — {'met' if fast else 'NOT met'}",
        f"- defaults at 50 ms: {share:.0%} of tuned (target ≥ {DEFAULTS_SHARE:.0%})"
        f" — {'met' if share >= DEFAULTS_SHARE else 'NOT met'}",
    ]
    db_head = median(head["bulk0"], "pg_cpu_per_1000")
    for r in refs:
        db_ref = median(runs[r]["bulk0"], "pg_cpu_per_1000")
        by_round = paired(head["bulk0"], runs[r]["bulk0"], "pg_cpu_per_1000")
        limit = 1 + DB_CPU_MARGIN
        met = max(db_head / db_ref, statistics.median(by_round)) <= limit
        lines.append(
            f"- PostgreSQL CPU per 1,000 bulk emails: {db_head / db_ref:.0%} of {r}'s"
            f" (target ≤ {limit:.0%}{spread(by_round)}) — {'met' if met else 'NOT met'}"
        )
    for side in [*refs, "HEAD"]:
        last = runs[side]["bulk0"][-1]
        title = f"Statements of {side}'s bulk drain at 0 ms (last round), by total time:"
        lines += ["", title, ""]
        lines += statements.table(last.get("statements", []), last["n"])
    return "\n".join(lines)


def paired(head: Runs, other: Runs, field: str) -> list[float]:
    """HEAD's figure over the other side's, round by round (round k of each: the k-th)."""
    return [h[field] / o[field] for h, o in zip(head, other, strict=True) if o[field]]


def spread(ratios: list[float]) -> str:
    if len(ratios) < 2:
        return ""
    low, high, mid = min(ratios), max(ratios), statistics.median(ratios)
    return f"; round by round {low:.0%} to {high:.0%}, median round {mid:.0%}"


def main(bench: Bench, refs: str, *, runs: int, smoke: bool, save: Path | None) -> int:
    """``refs``: one commit, or several separated by commas."""
    out = run(bench, [r.strip() for r in refs.split(",") if r.strip()], runs=runs, smoke=smoke)
    if save is not None:
        import json  # noqa: PLC0415

        save.write_text(json.dumps(out, indent=1, default=str))
    print(render(out))
    return 0
