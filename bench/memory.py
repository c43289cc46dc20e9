"""``python -m bench.memory``: the resident memory of an idle ``mailroom run`` (issue 21).

A daemon with the defaults (its HTTP endpoints on a free port) sends a few emails through
the SES stand-in, lets its preflight child finish, sits idle for a while, and then its
``/proc/<pid>/status`` (VmRSS) and ``smaps_rollup`` (anonymous against file-backed pages)
are read; ``--events`` runs a second daemon with the SES events reader on
(``MAILROOM_EVENTS_QUEUE_URL``, bench/sqs_standin.py). ``--imports`` adds what each
library costs when imported alone into a bare interpreter (the same venv), and what
``sys.modules`` of the idle daemon holds. Memory is not noisy like throughput: one run
says it, whatever else the machine does.

python -m bench.memory                    # the code in src/ (this work tree)
python -m bench.memory --events --imports
python -m bench.memory --pythonpath /tmp/old/src   # another checkout's code, this venv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench.harness import ROOT, Code, Daemon, Postgres, Standin, settle, wait_for, wait_listening
from bench.scenarios import ENQUEUE
from mailroom.embedded import free_port

IDLE_SECONDS = 20.0  # after the last send: the gauges' loop and the listener run meanwhile
# Imported alone into a fresh interpreter, in this order (each row: what it adds).
LIBRARIES = ("psycopg", "psycopg_pool", "anyio", "structlog", "prometheus_client", "tenacity",
             "aiohttp", "botocore.session", "mailroom.daemon.run")  # fmt: skip
WRAPPER = """
import atexit, runpy, sys, tracemalloc
out = sys.argv[1]
def note():
    open(out, "w").write("\\n".join(sorted(sys.modules)))
    if tracemalloc.is_tracing():  # PYTHONTRACEMALLOC=1: where the Python objects come from
        stats = tracemalloc.take_snapshot().statistics("filename")
        total = sum(s.size for s in stats)
        top = [f"{s.size / 2**20:8.2f} MiB {s.traceback[0].filename}" for s in stats[:40]]
        text = f"{total / 2**20:.2f} MiB traced\\n" + "\\n".join(top)
        open(out + ".tracemalloc", "w").write(text)
atexit.register(note)
sys.argv = ["mailroom", "run"]
runpy.run_module("mailroom", run_name="__main__", alter_sys=True)
"""
PER_IMPORT = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
rows, before = [("interpreter", rss())], rss()
for name in sys.argv[1:]:
    importlib.import_module(name)
    now = rss()
    rows.append((name, now - before))
    before = now
print(json.dumps(rows))
"""


def rollup(pid: int) -> dict[str, float]:
    """VmRSS and smaps_rollup's Anonymous / file-backed split, MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            number = int(value.split()[0])
            out[key] = number if key == "Threads" else number / 1024
    return out


def idle_daemon(pg: Postgres, standin: Standin, settings: dict[str, str], code: Code, *,
                workdir: Path, sends: int = 20) -> dict[str, Any]:  # fmt: skip
    """One daemon: start, send ``sends`` emails one transaction each, idle; its memory."""
    with pg.database() as dsn:
        log_path = workdir / f"daemon-{len(list(workdir.iterdir()))}.log"
        modules = workdir / f"modules-{len(list(workdir.iterdir()))}.txt"
        daemon = Daemon(dsn, standin.url, settings, log_path, code)
        # the daemon's own entry point, wrapped to note sys.modules when it exits
        env = {**_env(daemon), **settings}
        with log_path.open("ab") as log:
            daemon.proc = subprocess.Popen(
                [code.python, "-c", WRAPPER, str(modules)], env=env, stdout=log, stderr=log
            )
        try:
            wait_listening(dsn, "mailroom-listener", 1)
            standin.reset(0)
            with psycopg.connect(dsn, autocommit=True) as conn:
                for i in range(sends):
                    conn.execute(ENQUEUE, (f"user{i}@example.com", Jsonb({"seq": i})))
                    time.sleep(0.05)
            wait_for(lambda: standin.sent_count() >= sends, 60)
            # the preflight's child has answered (its findings are logged at info)
            wait_for(lambda: b'"preflight"' in log_path.read_bytes(), 120, interval=0.2)
            settle([daemon.pid], timeout=30)
            time.sleep(IDLE_SECONDS)
            memory = rollup(daemon.pid)
        finally:
            daemon.stop()
        memory["modules"] = len(modules.read_text().split()) if modules.exists() else 0
        memory["module_names"] = modules.read_text().split() if modules.exists() else []
        return memory


def _env(daemon: Daemon) -> dict[str, str]:
    from bench.harness import aws_env  # noqa: PLC0415 -- the harness's AWS environment

    return {
        **aws_env(daemon.endpoint, daemon.code.pythonpath),
        "MAILROOM_DATABASE_URL": daemon.dsn,
        "MAILROOM_LOG_FORMAT": "json",
        "MAILROOM_HTTP_PORT": str(free_port()),  # the defaults serve /metrics: so does this
    }


def per_import(python: str, pythonpath: list[str]) -> list[tuple[str, float]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    done = subprocess.run(
        [python, "-c", PER_IMPORT, *LIBRARIES], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return [(str(name), float(mib)) for name, mib in json.loads(done.stdout)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--events", action="store_true", help="also with the events reader on")
    parser.add_argument("--imports", action="store_true", help="per-import RSS, sys.modules")
    parser.add_argument("--pythonpath", default=str(ROOT / "src"), help="mailroom's source")
    parser.add_argument("--json", type=Path, help="keep the raw numbers")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="for the daemons too (MALLOC_ARENA_MAX=2, PYTHONTRACEMALLOC=1)",
    )
    parser.add_argument("--keep", type=Path, help="keep logs and module lists here")
    args = parser.parse_args(argv)
    extra = dict(item.partition("=")[::2] for item in args.env)
    code = Code(pythonpath=[args.pythonpath])
    load = os.getloadavg()
    rows: dict[str, Any] = {"load_before": load}
    pg, standin = Postgres(), Standin()
    sqs = None
    try:
        pg.start()
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
            work = args.keep or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            rows["defaults"] = idle_daemon(pg, standin, extra, code, workdir=work)
            if args.events:
                from bench.events import SqsServer  # noqa: PLC0415 -- only with --events

                sqs = SqsServer("standin")
                with sqs.queue(0) as url:
                    events = {"MAILROOM_EVENTS_QUEUE_URL": url, "AWS_ENDPOINT_URL_SQS": sqs.url}
                    rows["events"] = idle_daemon(
                        pg, standin, {**extra, **events}, code, workdir=work
                    )
    finally:
        if sqs is not None:
            sqs.stop()
        standin.stop()
        pg.stop()
    rows["load_after"] = os.getloadavg()
    if args.imports:
        rows["imports"] = per_import(code.python, code.pythonpath or [])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(render(rows, show_modules=args.imports))
    return 0


def render(rows: dict[str, Any], *, show_modules: bool = False) -> str:
    before, after = rows["load_before"], rows["load_after"]
    lines = [
        f"load average {before[0]:.2f} before, {after[0]:.2f} after (1 min)",
        "",
        "| daemon, idle | VmRSS MiB | anonymous | file-backed | peak | threads | modules |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("defaults", "events"):
        if key in rows:
            m = rows[key]
            lines.append(
                f"| {key} | {m['VmRSS']:.1f} | {m['RssAnon']:.1f} | {m['RssFile']:.1f} "
                f"| {m['VmHWM']:.1f} | {m['Threads']} | {m['modules']} |"
            )
    if "imports" in rows:
        lines += ["", "| imported alone, in order | adds MiB |", "|---|---|"]
        lines += [f"| {name} | {mib:.1f} |" for name, mib in rows["imports"]]
    if show_modules and "defaults" in rows:
        tops = sorted({m.split(".")[0] for m in rows["defaults"]["module_names"]})
        lines += ["", "top-level packages of the idle daemon: " + " ".join(tops)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
