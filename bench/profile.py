"""Sample the daemon with py-spy during a bulk drain; summarise where its CPU goes."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Where a leaf frame's file lives -> the component its samples are charged to.
COMPONENTS = (
    ("mailroom/", "mailroom"),
    ("botocore/", "botocore (request build, signing, parsing)"),
    ("boto3/", "botocore (request build, signing, parsing)"),
    # before "http/client", which "aiohttp/client.py" also contains
    ("aiohttp/", "aiohttp + yarl + multidict (HTTP exchange)"),
    ("yarl/", "aiohttp + yarl + multidict (HTTP exchange)"),
    ("multidict/", "aiohttp + yarl + multidict (HTTP exchange)"),
    ("urllib3/", "urllib3 + http.client"),
    ("http/client", "urllib3 + http.client"),
    ("psycopg_pool/", "psycopg / psycopg_pool"),
    ("psycopg/", "psycopg / psycopg_pool"),
    ("structlog/", "structlog"),
    ("prometheus_client/", "prometheus_client"),
    ("anyio/", "anyio / asyncio / threads"),
    ("asyncio/", "anyio / asyncio / threads"),
    ("threading", "anyio / asyncio / threads"),
    ("concurrent/", "anyio / asyncio / threads"),
    ("json/", "json"),
    ("<string>", "dataclass __init__ (generated code)"),
    ("uuid", "uuid"),
)
ROOTS = ("mailroom/__main__.py", "mailroom/cli/commands.py")  # on every main-thread stack


def py_spy() -> str:
    candidate = Path(sys.executable).with_name("py-spy")
    found = str(candidate) if candidate.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


def recorder(output: Path, rate: int = 250) -> Callable[[list[int]], Callable[[], None]]:
    """A ``during`` hook for scenarios.drain: record the first daemon until stopped.

    ``--gil`` samples only the thread holding the GIL: the daemon's Python CPU time (C code
    that releases the GIL, such as libpq I/O, is not in it)."""

    def start(pids: list[int]) -> Callable[[], None]:
        command = [py_spy(), "record", "--pid", str(pids[0]), "--rate", str(rate)]
        command += ["--format", "raw", "--output", str(output), "--nonblocking", "--gil"]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop() -> None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

        return stop

    return start


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rpartition(" ")
    frames = []
    for frame in stack.split(";"):
        match = FRAME.match(frame.strip())
        if match:
            frames.append((match["function"], match["file"]))
        else:
            frames.append((frame.strip(), ""))
    return frames, int(count)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def component(file: str) -> str:
    return next((name for key, name in COMPONENTS if key in file), "other")


def summarise(output: Path, top: int = 15) -> dict[str, Any]:
    """Shares of all samples: self time by function and by component, and each sample
    charged to the innermost mailroom function on its stack (what src/ calls that costs)."""
    own: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    total = 0
    for line in output.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _parse(line)
        if not frames:
            continue
        total += count
        function, file = frames[-1]
        own[f"{function} ({_short(file)})"] += count
        by_component[component(file)] += count
        ours = [(f, p) for f, p in frames if p.startswith("mailroom/") and not p.startswith(ROOTS)]
        if ours:
            function, file = ours[-1]
            charged[f"{function} ({_short(file)})"] += count
        else:
            charged["(no mailroom frame: event loop, thread pool, pool workers)"] += count
    if not total:
        return {"samples": 0, "self": [], "components": [], "charged": []}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(own),
        "components": share(by_component),
        "charged": share(charged),
    }
