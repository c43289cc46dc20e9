"""``python -m bench --compare``'s verdicts: a target counts as met only when the ratio of
the medians and the median round both meet it (bench/regress.py). Pure logic: synthetic
runs, no server."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def regress(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ is the repository's, not installed
    import bench.regress  # noqa: PLC0415 -- needs the path above

    return bench.regress


def drains(pg_cpu: list[float], rate: float = 10_000.0) -> list[dict[str, Any]]:
    return [{"n": 1000, "rate": rate, "pg_cpu_per_1000": c, "statements": []} for c in pg_cpu]


def out(head_cpu: list[float], ref_cpu: list[float]) -> dict[str, Any]:
    rounds = len(head_cpu)
    tuned = [{"rate": 5_000.0}] * rounds
    return {
        "refs": ["REF"],
        "runs": {
            "HEAD": {"bulk0": drains(head_cpu), "bulk50": tuned, "defaults50": tuned},
            "REF": {"bulk0": drains(ref_cpu), "bulk50": tuned, "defaults50": tuned},
            "raw": {"raw": [{"rate": 11_000.0}] * rounds},
        },
    }


def db_line(text: str) -> str:
    return next(line for line in text.splitlines() if "PostgreSQL CPU per 1,000" in line)


def test_a_good_ratio_of_medians_with_a_bad_median_round_is_not_met(regress: Any) -> None:
    # medians 1.15 / 1.00 = 115 %; the rounds 122 %, 125 %, 96 %: median round 122 %
    line = db_line(regress.render(out([1.10, 1.25, 1.15], [0.90, 1.00, 1.20])))
    assert "115% of REF's" in line
    assert "round by round 96% to 125%, median round 122%" in line
    assert line.endswith("NOT met")


def test_both_within_the_margin_is_met(regress: Any) -> None:
    line = db_line(regress.render(out([1.10, 1.12, 1.08], [1.0, 1.0, 1.0])))
    assert "110% of REF's" in line
    assert line.endswith("— met")


def test_bulk_against_the_ceiling_is_judged_round_by_round_too(regress: Any) -> None:
    text = regress.render(out([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))
    bulk = next(line for line in text.splitlines() if line.startswith("- bulk at 0 ms"))
    assert "91% of the raw ceiling" in bulk  # 10,000 / 11,000
    assert "median round 91%" in bulk
    assert bulk.endswith("— met")
