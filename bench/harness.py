"""Processes under test: PostgreSQL, the SES stand-in, daemons; and what /proc says of them."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mailroom.embedded import EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "sesv2_standin.py"
TEMPLATE_DB = "bench_template"
# What-if schema: the outbox without its content CHECK constraints. PostgreSQL evaluates
# every CHECK on every UPDATE, so the claim and the record pay for the address regexes
# again and again; validating at insert time only (a trigger) would cost what this shows.
NO_CHECKS_DB = "bench_template_no_checks"
CONTENT_CHECKS = """
SELECT conname FROM pg_constraint
WHERE conrelid = 'mailroom.outbox'::regclass AND contype = 'c' AND conname <> 'outbox_status_known'
"""
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Fills: one INSERT ... SELECT, one transaction, one NOTIFY (statement-level trigger).
FILL_TEMPLATED = """
INSERT INTO mailroom.outbox (to_addresses, template, template_data)
SELECT ARRAY['user' || g || '@example.com'], 'activationv1', jsonb_build_object('n', g)
FROM generate_series(1, %(n)s) AS g
"""
FILL_SIMPLE = """
INSERT INTO mailroom.outbox (to_addresses, subject, body_text)
SELECT ARRAY['user' || g || '@example.com'], 'Hello user ' || g,
       'Hello user ' || g || E',\\n\\nthis is message number ' || g || E'.\\n'
FROM generate_series(1, %(n)s) AS g
"""
LEFT_TO_DO = """
SELECT count(*) FILTER (WHERE status <> 'sent'), count(*) FILTER (WHERE status = 'dead')
FROM mailroom.outbox
"""


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout} s: {predicate}")
        time.sleep(interval)


# -- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident), MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def settle(pids: list[int], quiet: float = 0.01, window: float = 0.3, timeout: float = 10) -> None:
    """Wait until the processes use (almost) no CPU: start-up work is over."""
    deadline = time.monotonic() + timeout
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = sum(cpu_seconds(p) for p in pids)
        if now - before <= quiet:
            return
        before = now


# -- PostgreSQL -------------------------------------------------------------------------


class Postgres:
    """One embedded server for the whole benchmark; a fresh database per run."""

    def __init__(self) -> None:
        self.server = EmbeddedPostgres()
        self.admin_dsn = ""

    def start(self) -> None:
        self.admin_dsn = self.server.start()
        self.add_template(TEMPLATE_DB, Code())
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
            admin.execute(create.format(sql.Identifier(NO_CHECKS_DB), sql.Identifier(TEMPLATE_DB)))
        with psycopg.connect(self.dsn(NO_CHECKS_DB), autocommit=True) as conn:
            for (name,) in conn.execute(CONTENT_CHECKS).fetchall():
                drop = sql.SQL("ALTER TABLE mailroom.outbox DROP CONSTRAINT {}")
                conn.execute(drop.format(sql.Identifier(name)))

    def add_template(self, name: str, code: Code) -> None:
        """A database migrated by ``code``'s own ``mailroom migrate``."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        env = {**aws_env("", code.pythonpath), "MAILROOM_DATABASE_URL": self.dsn(name)}
        subprocess.run(
            [code.python, "-m", "mailroom", "migrate"], env=env, capture_output=True, check=True
        )

    def stop(self) -> None:
        self.server.stop(cleanup=True)

    def dsn(self, dbname: str) -> str:
        return self.server.dsn(dbname)

    def version(self) -> str:
        with psycopg.connect(self.admin_dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    @contextmanager
    def database(
        self, *, migrated: bool = True, checks: bool = True, template: str | None = None
    ) -> Iterator[str]:
        """A fresh database (a copy of the migrated template, or empty); dropped after."""
        name = f"b_{uuid.uuid4().hex[:10]}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if migrated:
            template = template or (TEMPLATE_DB if checks else NO_CHECKS_DB)
            create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(create)
        try:
            yield self.dsn(name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                admin.execute(drop.format(sql.Identifier(name)))


def fill(dsn: str, n: int, *, simple: bool = False) -> tuple[float, float]:
    """Insert n messages in one statement, ANALYZE the outbox (as autovacuum soon would) and
    checkpoint (untimed: else the drain's backends write the fill's pages, and the last
    run's) before the commit that wakes the daemons; returns (seconds taken, commit time)."""
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as other:
        backend = conn.info.backend_pid
        started = time.perf_counter()
        conn.execute(FILL_SIMPLE if simple else FILL_TEMPLATED, {"n": n})
        conn.execute("ANALYZE mailroom.outbox")
        paused = time.perf_counter()
        other.execute("CHECKPOINT")  # the bench's superuser; writes uncommitted pages too
        started += time.perf_counter() - paused
        conn.commit()
        committed = time.time()
        seconds = time.perf_counter() - started
    # gone before a caller counts the server's CPU: its second of CPU is the fill's
    wait_for(lambda: not Path(f"/proc/{backend}").exists(), 10, interval=0.001)
    return seconds, committed


def left_to_do(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(LEFT_TO_DO).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_listening(
    dsn: str, application: str, count: int, *, timeout: float = 30, check_query: bool = True
) -> None:
    """Until ``count`` sessions of ``application`` on dsn's database have run LISTEN (their
    last statement, or the listener's heartbeat); with ``check_query=False`` until they
    exist (for a client that listens and queries on one session)."""
    dbname = conninfo_to_dict(dsn)["dbname"]
    query = """SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s
        AND (NOT %s OR query ILIKE 'LISTEN%%' OR query ILIKE '%%pg_listening_channels%%')"""

    def listening() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(query, (dbname, application, check_query)).fetchone()
        return bool(row and row[0] >= count)

    wait_for(listening, timeout, interval=0.05)


# -- the SES stand-in -------------------------------------------------------------------


class Standin:
    """tests/sesv2_standin.py as its own process, driven through its control endpoints."""

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, str(STANDIN), "--port", str(self.port)]
        command += ["--latency-ms", str(latency_ms), "--max-send-rate", "100000"]
        self._conn: http.client.HTTPConnection | None = None
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"SES stand-in did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        # One kept-alive connection: polling every 20 ms must not cost the stand-in a new
        # connection (and thread) each time.
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self._conn.request(method, path, body=data)
                response = self._conn.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"stand-in {method} {path}: {response.status} {payload[:200]!r}")
        return json.loads(payload)

    def reset(self, latency_ms: float = 0.0) -> None:
        self._call("POST", "/_standin/reset", {})
        self._call("POST", "/_standin/config", {"latency_ms": latency_ms})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/_standin/stats"))

    def sent_count(self) -> int:
        return int(self.stats()["sent"])

    def sent(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_standin/sent"))

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- daemons ----------------------------------------------------------------------------

# Settings for throughput: big batches, enough SES calls in flight to hide 50 ms of
# latency, a long lease, no HTTP endpoints, and no per-batch info logs.
THROUGHPUT: dict[str, str] = {
    "MAILROOM_BATCH_LIMIT": "500",
    "MAILROOM_SES_CONCURRENCY": "16",
    "MAILROOM_LEASE_DURATION": "300000",
}
# What every benchmark daemon gets; everything else keeps the daemon's defaults.
BASE: dict[str, str] = {"MAILROOM_HTTP_PORT": "0", "MAILROOM_LOG_LEVEL": "warning"}


# Daemons (and `mailroom migrate`) import mailroom from here: a frozen copy, see snapshot().
SNAPSHOT_PATH: list[str] = []


def snapshot(workdir: Path, source: str = "HEAD") -> tuple[str, str]:
    """Freeze the code under test: ``git archive`` of ``source`` (a commit), or a copy of
    the work tree (``source="worktree"``), of src/mailroom and sql/ (the migrations).
    Every daemon runs from it, so a run measures one version even while src/ changes.
    Returns the commit (resolved now) and a digest of the copy."""
    tree = workdir / "tree"
    tree.mkdir()
    commit = git("rev-parse", "--short=12", "HEAD" if source == "worktree" else source)
    if source == "worktree":
        dirty = git("status", "--porcelain", "--", "src", "sql")
        commit += " + uncommitted changes in src/ or sql/" if dirty else " (work tree)"
        for part in ("src/mailroom", "sql"):
            shutil.copytree(ROOT / part, tree / part, symlinks=True, ignore=_no_caches)
    else:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", source, "src/mailroom", "sql"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)  # noqa: S607
    digest = hashlib.sha256()
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(tree)).encode() + path.read_bytes())
    SNAPSHOT_PATH[:] = [str(tree / "src")]
    return commit, digest.hexdigest()[:12]


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args],  # noqa: S607 -- git from PATH, read-only commands
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def _no_caches(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


@dataclass(frozen=True)
class Code:
    """Which mailroom a process runs: the frozen snapshot in this venv (the default), or
    another checkout with its own venv (``pythonpath=[]``: its editable install)."""

    python: str = sys.executable
    pythonpath: list[str] | None = None  # None: the snapshot (SNAPSHOT_PATH)
    template: str | None = None  # the database template its migrations made


def aws_env(endpoint: str, pythonpath: list[str] | None = None) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    first = SNAPSHOT_PATH if pythonpath is None else pythonpath
    pythonpath = [*first, *filter(None, [os.environ.get("PYTHONPATH")])]
    if pythonpath:
        keep["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return {
        **keep,
        "AWS_ENDPOINT_URL_SESV2": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",  # the stand-in takes anything
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@dataclass
class Daemon:
    """``python -m mailroom run`` as a child process; logs (JSON lines) to a file."""

    dsn: str
    endpoint: str
    settings: Mapping[str, str]
    log_path: Path
    code: Code = field(default_factory=Code)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Daemon:
        env = {
            **aws_env(self.endpoint, self.code.pythonpath),
            **BASE,
            "MAILROOM_DATABASE_URL": self.dsn,
            "MAILROOM_LOG_FORMAT": "json",
            **self.settings,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.code.python, "-m", "mailroom", "run"], env=env, stdout=log, stderr=log
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def daemons(
    dsn: str,
    endpoint: str,
    settings: Mapping[str, str],
    workdir: Path,
    count: int = 1,
    *,
    code: Code | None = None,
) -> Iterator[list[Daemon]]:
    """``count`` daemons on one database, listening and idle when the block starts."""
    started = [
        Daemon(
            dsn, endpoint, settings, workdir / f"daemon-{uuid.uuid4().hex[:6]}.log", code or Code()
        ).start()
        for _ in range(count)
    ]
    try:
        try:
            wait_listening(dsn, "mailroom-listener", count)
        except TimeoutError:
            tails = "\n".join(d.log_tail() for d in started)
            raise RuntimeError(f"daemon did not start listening:\n{tails}") from None
        settle([d.pid for d in started])
        yield started
    finally:
        for daemon in started:
            daemon.stop()
