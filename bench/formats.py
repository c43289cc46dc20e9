"""The benchmark's numbers as text: the median and range of several runs and one
formatter per unit. A module of its own so that report.py and compare.py, which both
format, import it rather than each other."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Runs = list[dict[str, Any]]


def median(runs: Runs, key: str) -> float:
    return statistics.median(r[key] for r in runs)


def spread(runs: Runs, key: str, fmt: Callable[[float], str]) -> str:
    """Median, and the range when there are several runs."""
    values = [r[key] for r in runs]
    text = fmt(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt(min(values))} to {fmt(max(values))})"
    return text


def per_s(value: float) -> str:
    return f"{value:,.0f}/s"


def ms(value: float) -> str:
    return f"{value:.1f} ms"


def fine_ms(value: float) -> str:
    return f"{value:.2f} ms"


def cpu(value: float) -> str:
    return f"{value:.3f} s"


def mib(value: float) -> str:
    return f"{value:.0f} MiB"
