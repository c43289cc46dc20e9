"""Issue 12's comparisons, in the same run as the rest: the daemon's defaults against the
throughput settings, the simple path against the code before the move to aiohttp, and the
CPU per SES call of each way to carry one (bench/transport.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.formats import Runs, median, per_s, spread
from bench.harness import ROOT, SNAPSHOT_PATH, Code, aws_env
from bench.scenarios import Bench, Result
from bench.transport import OPS

OLD_TEMPLATE = "bench_template_old"
DEFAULTS_TARGET = 0.80  # defaults reach >= 80 % of the tuned rate at 50 ms
SIMPLE_REGRESSION = 0.20  # the simple path is not slower than before by more than 20 %
TRANSPORT_LABELS = {
    "ours": "mailroom now: its exchange + own SigV4 signer",
    "ours_old": "mailroom before (9fb73c5): hand-written HTTP/1.1 client + own signer",
    "aiohttp_botocore": "its exchange + botocore's SigV4Auth",
    "boto3_threads": "boto3 client in 16 threads",
}


def old_code(bench: Bench, checkout: Path) -> Code:
    """Another checkout (``git worktree add /tmp/old 9fb73c5``) with its own ``.venv``; its
    own migrations make its database template."""
    code = Code(python=str(checkout / ".venv" / "bin" / "python"), pythonpath=[],
                template=OLD_TEMPLATE)  # fmt: skip
    bench.pg.add_template(OLD_TEMPLATE, code)
    return code


def transport_cpu(bench: Bench, variant: str, op: str, calls: int, old: Path | None) -> Result:
    bench.standin.reset(0)
    if variant == "ours_old":
        assert old is not None
        python, path = str(old / ".venv" / "bin" / "python"), [str(ROOT)]
    else:
        python, path = sys.executable, [*SNAPSHOT_PATH, str(ROOT)]
    done = subprocess.run(
        [python, "-m", "bench.transport", variant, op, str(calls)],
        env=aws_env(bench.standin.url, path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"transport {variant} {op}: {done.stderr[-2000:]}")
    result: Result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _met(ok: bool) -> str:
    return "**yes**" if ok else "**no**"


def defaults_rows(runs: dict[str, Runs]) -> list[str]:
    """Rows for the results table: defaults against tuned, and the old simple path."""
    lines = []
    for latency in (0, 50):
        ours, tuned = runs.get(f"defaults{latency}"), runs.get(f"bulk{latency}")
        if not ours:
            continue
        peer = runs.get(f"peer{latency}")
        share = median(ours, "rate") / median(tuned, "rate") if tuned else None
        target = f"≥ {DEFAULTS_TARGET:.0%} of tuned" if latency == 50 else "—"
        met = _met(share >= DEFAULTS_TARGET) if latency == 50 and share is not None else "—"
        lines.append(
            _row(
                f"bulk drain with the **defaults**, stand-in {latency} ms",
                spread(ours, "rate", per_s),
                per_s(median(peer, "rate")) if peer else "—",
                f"{share:.0%} of tuned" if share is not None else "—",
                target,
                met,
            )
        )
    new, old = runs.get("simple"), runs.get("simple_old")
    if new and old:
        ratio = median(new, "rate") / median(old, "rate")
        lines.append(
            _row(
                "simple drain, 9fb73c5 (before aiohttp), same settings",
                spread(old, "rate", per_s),
                "—",
                f"now {ratio:.0%} of it",
                f"now ≥ {1 - SIMPLE_REGRESSION:.0%} of it",
                _met(ratio >= 1 - SIMPLE_REGRESSION),
            )
        )
    return lines


def details_keys() -> tuple[tuple[str, str], ...]:
    return (
        ("defaults0", "mailroom bulk 0 ms, defaults"),
        ("defaults50", "mailroom bulk 50 ms, defaults"),
        ("simple_old", "mailroom simple 0 ms, 9fb73c5"),
    )


def transport_table(runs: dict[str, Runs]) -> list[str]:
    rows = []
    for variant, label in TRANSPORT_LABELS.items():
        cells = []
        for op in OPS:
            rs: list[dict[str, Any]] | None = runs.get(f"transport_{variant}_{op}")
            cells.append(spread(rs, "us_per_call", lambda v: f"{v:,.0f} µs") if rs else "—")
        first = runs.get(f"transport_{variant}_{OPS[0]}")
        if first:
            rows.append(_row(label, *cells, f"{median(first, 'hwm_mib'):.0f} MiB"))
    if not rows:
        return []
    calls = next(r for k, r in runs.items() if k.startswith("transport_"))[0]["calls"]
    return [
        f"CPU per call (every thread of the calling process, after a warm-up), {calls:,} calls"
        " per variant and operation, 16 in flight, stand-in at 0 ms in its own process:",
        "",
        _row("transport", "SendEmail", "SendBulkEmail (50 entries)", "peak RSS (SendEmail run)"),
        _row(*["---"] * 4),
        *rows,
        "",
    ]
