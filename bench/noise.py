"""What else runs on the machine while the benchmark does: other test suites and daemons
skew the numbers, so every report says what it ran beside."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def others_busy() -> str:
    """What else runs on the machine: other test suites and daemons skew the numbers."""
    mine = os.getpid()
    found = []
    for pattern in ("pytest", "mailroom run"):
        done = subprocess.run(
            ["pgrep", "-f", pattern],  # noqa: S607 -- procps from PATH
            capture_output=True,
            text=True,
            check=False,
        )
        pids = [int(p) for p in done.stdout.split()]
        foreign = [p for p in pids if p != mine and os.getppid() != p and not _mine(p, mine)]
        if foreign:
            found.append(f"{len(foreign)} `{pattern}` process(es)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (", ".join(found) or "no other test suite or daemon") + f"; load average {load}"


def _mine(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        pid = int(stat[1])
    return False
