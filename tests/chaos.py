"""Chaos run: real daemons, a real PostgreSQL and the SES stand-in, broken on a schedule,
then every message counted.

    python tests/chaos.py --messages 20000 --record docs/RELIABILITY.md

What runs (everything on 127.0.0.1, in a work directory this run owns):

- its own embedded PostgreSQL (so that it can be restarted and SIGKILLed), one migrated
  database;
- the SES v2 stand-in, in process, with latency and faults injected on a schedule;
- ``--daemons`` ``mailroom run`` processes (default 2), each reaching PostgreSQL through its
  own TCP proxy, so that its connections can be reset (cut) or blackholed (stall);
- a producer enqueuing the messages (template ``chaos``, data ``{"n": i}``) in transactions
  of varying size at ``--rate`` per second; it retries a failed transaction, which the
  idempotency key ``chaos-<n>`` makes safe;
- a scheduler repeating a cycle of faults while the producer runs: SIGKILL of a daemon
  (restarted at once, under a new worker name), PostgreSQL restarts (fast stop + start) and
  a crash (SIGKILL of the postmaster, then start and recovery), connection cuts, a stall,
  and throttling / 5xx / timeout faults at the stand-in;
- a supervisor that restarts a daemon that exits on its own (counted: it must not happen)
  and one that stops making progress while work is due (counted: it must not happen), and
  checks that a daemon whose connections were stalled claims new work afterwards.

At the end (every row final, or ``--drain-timeout``): each daemon must still deliver on its
own (the others are SIGSTOPped while probe messages are sent), every daemon must stop with
exit code 0 on SIGTERM, and the counts are checked:

- every message is ``sent`` (none ``dead``), seen at least once by the stand-in, and its
  row carries one of the MessageIds the stand-in gave it;
- duplicates (extra sends of the same n) <= the measured bound

      sum over kills of K  +  L  +  A

  K: rows ``sending`` locked by the killed worker, counted right after its SIGKILL;
  L: leases reclaimed from workers while they were alive (each worker's ``lease_expired``
     attempt rows beyond its K): a daemon that lost the database (restart, cut, stall) or
     could not record within its lease; the message may have been accepted by SES and is
     sent again by whoever reclaims it;
  A: tries that ended in a client-side network error or timeout after the request may have
     reached SES (attempt rows with ``NetworkError``/``InternalError``): the stand-in's
     ``timeout`` fault, like real SES, accepts the message after the client gave up;

  and <= the static bound of SPEC §3.2, (kills + database losses per daemon) x
  MAILROOM_SES_CONCURRENCY x max(MAILROOM_BATCH_LIMIT, 100) + A (what one daemon may
  hold leased). See docs/RELIABILITY.md.

Exit status 0 when every check passes, 1 otherwise. ``--record FILE`` writes the counts
table between ``<!-- chaos-run:begin -->`` and ``<!-- chaos-run:end -->`` in FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

import mailroom
from chaos_events import EventFlow
from mailroom import migrate
from mailroom.daemon.batcher import lease_cap
from mailroom.embedded import EmbeddedPostgres
from sesv2_standin import SesStandin
from tcp_proxy import TcpProxy

TEMPLATE = "chaos"
DATABASE = "chaos"
BEGIN_MARK = "<!-- chaos-run:begin -->"
END_MARK = "<!-- chaos-run:end -->"
# Attempt errors that leave it open whether SES accepted the message (no SES answer seen).
AMBIGUOUS = ("%NetworkError%", "%InternalError%")
LEASE_EXPIRED = re.compile(r"lease expired: (.*) did not record an outcome")
# Errors a daemon may log when the database goes away; any other error class in a
# database_unavailable / record_failed / listen_* event is a bug (e.g. invalid SQL).
CONNECTION_ERRORS = frozenset(
    {
        "OperationalError",
        "AdminShutdown",
        "CrashShutdown",
        "CannotConnectNow",
        "ConnectionTimeout",
        "PoolTimeout",
        "InterfaceError",
        "TimeoutError",
        "ListenerLost",
    }
)
DB_ERROR_EVENTS = frozenset(
    {"database_unavailable", "record_failed", "listen_connection_lost", "listen_connect_failed"}
)


@dataclass
class Settings:
    messages: int = 20_000
    rate: float = 100.0  # messages enqueued per second
    cycle: float = 15.0  # seconds per fault cycle; the cycle repeats while messages arrive
    daemons: int = 2
    batch_limit: int = 10
    concurrency: int = 4
    lease_ms: int = 3000
    latency: float = 0.3  # stand-in latency per SES call, seconds: calls are in flight
    timeout_sleep: float = 1.5  # a "timeout" fault answers (and accepts) after this long
    max_attempts: int = 50
    drain_timeout: float = 120.0  # after the last message is enqueued
    stuck_after: float = 20.0  # no batch for this long while work is overdue: stuck
    probe_timeout: float = 20.0
    seed: int = 20_261_122
    verbose: bool = True
    skip: frozenset[str] = frozenset()  # actions of CYCLE left out, e.g. {"stall"}
    events: bool = False  # SES events flow through SQS during the run (tests/chaos_events.py)

    def daemon_env(self, standin_url: str) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
        env = {k: v for k, v in os.environ.items() if k in keep}
        return {
            **env,
            "MAILROOM_LOG_FORMAT": "json",
            "MAILROOM_LOG_LEVEL": "info",
            "MAILROOM_HTTP_PORT": "0",
            "MAILROOM_POLL_INTERVAL": "500",
            "MAILROOM_BATCH_TIMEOUT": "200",
            "MAILROOM_BATCH_LIMIT": str(self.batch_limit),
            "MAILROOM_SES_CONCURRENCY": str(self.concurrency),
            "MAILROOM_SES_CONNECT_TIMEOUT": "500",
            "MAILROOM_SES_READ_TIMEOUT": "1000",
            "MAILROOM_LEASE_DURATION": str(self.lease_ms),
            "MAILROOM_RETRY_BASE": "100",
            "MAILROOM_RETRY_CAP": "1000",
            "MAILROOM_PAUSE_DURATION": "1000",
            "MAILROOM_SHUTDOWN_TIMEOUT": "8000",
            "MAILROOM_HEALTHCHECK_INTERVAL": "5000",
            "AWS_ENDPOINT_URL_SESV2": standin_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }


DB_TIMEOUT = 10.0  # the daemons' MAILROOM_DB_TIMEOUT (its default), seconds


# One fault cycle: (fraction of the cycle, action, argument). Daemon indices are offset by
# the cycle number, so that successive cycles hit the daemons in turn.
CYCLE: tuple[tuple[float, str, Any], ...] = (
    (0.03, "inject", ("throttle", 4)),
    (0.08, "kill", 0),
    (0.15, "cut", (1,)),
    (0.20, "inject", ("server_error", 4)),
    (0.27, "pg_restart", None),
    (0.35, "inject", ("timeout", 2)),
    (0.41, "kill", 1),
    (0.46, "stall", (0,)),  # a daemon under load, 14 s before this slot's next kill
    (0.52, "cut", (0, 1)),
    (0.58, "pg_crash", None),
    (0.64, "inject", ("throttle", 3)),
    (0.66, "inject", ("server_error", 3)),
    (0.76, "pg_restart", None),
    (0.84, "kill", 1),
    (0.90, "cut", (0,)),
    (0.95, "inject", ("timeout", 1)),
)


@dataclass
class Kill:
    at: float
    worker: str
    in_flight: int | None  # rows sending locked by the worker right after the kill
    reason: str = "scheduled"


@dataclass
class DbEvent:
    at: float
    kind: str  # pg_restart | pg_crash | cut | stall
    daemons: int  # daemons whose database connections it broke
    in_flight: int | None  # rows sending (any worker) just before it
    seconds: float = 0.0  # how long it took (PostgreSQL down)


@dataclass
class Result:
    settings: Settings
    workdir: Path
    elapsed: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    db_events: list[DbEvent] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    unconsumed_faults: int = 0
    startup_failures: int = 0  # exit 3 before listening: the database was down at start
    unexpected_exits: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    after_stalls: dict[str, str] = field(default_factory=dict)  # "recovered" or what not
    probes: dict[str, str] = field(default_factory=dict)  # worker -> "ok" or what failed
    sigterm: dict[str, str] = field(default_factory=dict)  # worker -> "exit 0" or failure
    producer_retries: int = 0
    drained: bool = False
    rows: int = 0
    distinct: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)
    unsent_rows: list[int] = field(default_factory=list)
    wrong_message_id: list[int] = field(default_factory=list)
    ses_sends: int = 0
    duplicates: int = 0
    duplicated_messages: int = 0
    max_sends_per_message: int = 0
    attempts_by_outcome: dict[str, int] = field(default_factory=dict)
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    lease_expired_by_worker: dict[str, int] = field(default_factory=dict)
    ambiguous: int = 0
    log_events: Counter[str] = field(default_factory=Counter)
    log_errors: list[str] = field(default_factory=list)
    unexpected_db_errors: Counter[str] = field(default_factory=Counter)
    tracebacks: int = 0
    plain_lines: int = 0  # not JSON: stdlib logging (psycopg_pool) bypassing structlog
    # with events: a message SES accepted, then re-sent after its lease was reclaimed and
    # found suppressed by its own bounce meanwhile, dies "suppressed": not lost
    suppressed_after_send: list[int] = field(default_factory=list)
    event_problems: list[str] = field(default_factory=list)
    event_rows: list[tuple[str, str]] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)

    # -- the bound ---------------------------------------------------------------------------

    @property
    def in_flight_at_kills(self) -> int:
        return sum(self._kill_in_flight(k) for k in self.kills)

    def _kill_in_flight(self, kill: Kill) -> int:
        if kill.in_flight is not None:
            return kill.in_flight
        return self.lease_expired_by_worker.get(kill.worker, 0)  # not measurable: reaped rows

    @property
    def live_leases_expired(self) -> int:
        """Leases reclaimed from workers while they were alive: each worker's
        ``lease_expired`` rows beyond those in flight at its kill (all of them for a worker
        never killed; a stalled worker's leases expire before its kill)."""
        at_kill: Counter[str] = Counter()
        for kill in self.kills:
            at_kill[kill.worker] += self._kill_in_flight(kill)
        return sum(max(0, n - at_kill[w]) for w, n in self.lease_expired_by_worker.items())

    @property
    def bound(self) -> int:
        return self.in_flight_at_kills + self.live_leases_expired + self.ambiguous

    @property
    def per_crash(self) -> int:
        # what one daemon may hold leased: MAILROOM_SES_CONCURRENCY x max(BATCH_LIMIT, 100)
        return lease_cap(self.settings.batch_limit, self.settings.concurrency)

    @property
    def spec_bound(self) -> int:
        losses = len(self.kills) + sum(e.daemons for e in self.db_events)
        return losses * self.per_crash + self.ambiguous

    def count(self, kind: str) -> int:
        return sum(1 for e in self.db_events if e.kind == kind)

    # -- verdict -----------------------------------------------------------------------------

    def failures(self) -> list[str]:
        s = self.settings
        problems = []
        if not self.drained:
            problems.append(f"not every message final after the drain timeout: {self.statuses}")
        if self.rows != s.messages or self.distinct != s.messages:
            problems.append(f"{self.rows} rows, {self.distinct} distinct n; {s.messages} enqueued")
        if self.dead_by_reason:
            problems.append(f"messages dead-lettered by transient faults: {self.dead_by_reason}")
        if self.unsent_rows:
            problems.append(f"{len(self.unsent_rows)} rows not sent, e.g. {self.unsent_rows[:10]}")
        if self.lost:
            problems.append(f"{len(self.lost)} messages never reached SES: {self.lost[:20]}")
        if self.wrong_message_id:
            problems.append(
                f"{len(self.wrong_message_id)} sent rows whose MessageId SES never issued:"
                f" {self.wrong_message_id[:10]}"
            )
        if self.duplicates > self.bound:
            problems.append(
                f"{self.duplicates} duplicates exceed the measured bound {self.bound}"
                f" (in flight at kills {self.in_flight_at_kills} + live leases expired"
                f" {self.live_leases_expired} + ambiguous SES outcomes {self.ambiguous})"
            )
        if self.duplicates > self.spec_bound:
            problems.append(f"{self.duplicates} duplicates exceed SPEC §3.2 {self.spec_bound}")
        too_many = [k for k in self.kills if self._kill_in_flight(k) > self.per_crash]
        if too_many:
            problems.append(f"more than {self.per_crash} in flight at a kill: {too_many}")
        problems += [
            f"{n} x {e} logged by the daemons (not a connection fault)"
            for e, n in self.unexpected_db_errors.items()
        ]
        if self.tracebacks:
            problems.append(f"{self.tracebacks} tracebacks in the daemon logs")
        problems += self.event_problems
        problems += [f"daemon exited on its own: {e}" for e in self.unexpected_exits]
        problems += [f"daemon stopped making progress: {e}" for e in self.stuck]
        problems += [
            f"no progress after a stall: {w} {o}"
            for w, o in self.after_stalls.items()
            if o not in ("recovered", "not observed")
        ]
        problems += [f"probe {w}: {p}" for w, p in self.probes.items() if p != "ok"]
        problems += [f"SIGTERM {w}: {p}" for w, p in self.sigterm.items() if p != "exit 0"]
        return problems

    # -- report ------------------------------------------------------------------------------

    def rows_for_table(self) -> list[tuple[str, str]]:
        s = self.settings
        injected = ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items())) or "none"
        dead = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_by_reason.items())) or "none"
        retries = ", ".join(f"{k} {v}" for k, v in sorted(self.retries_by_reason.items()))
        attempts = ", ".join(f"{k} {v}" for k, v in sorted(self.attempts_by_outcome.items()))
        db_in_flight = sum(e.in_flight or 0 for e in self.db_events)
        downtime = sum(e.seconds for e in self.db_events if e.kind.startswith("pg_"))
        return [
            ("messages enqueued", str(s.messages)),
            ("daemons", f"{s.daemons} (concurrency {s.concurrency} x batch {s.batch_limit})"),
            ("elapsed", f"{self.elapsed:.1f} s"),
            ("daemon SIGKILLs", str(len(self.kills))),
            ("PostgreSQL restarts (fast stop + start)", str(self.count("pg_restart"))),
            ("PostgreSQL crashes (SIGKILL + recovery)", str(self.count("pg_crash"))),
            ("PostgreSQL down, total", f"{downtime:.1f} s"),
            ("connection cuts (per proxy)", str(self.count("cut"))),
            ("connection stalls", str(self.count("stall"))),
            ("SES faults injected", injected),
            ("SES faults not consumed", str(self.unconsumed_faults)),
            ("producer transactions retried", str(self.producer_retries)),
            ("daemon start-ups refused (database down, exit 3)", str(self.startup_failures)),
            ("sent", str(self.statuses.get("sent", 0))),
            ("dead, by reason", dead),
            ("lost", str(len(self.lost))),
            ("SES sends of the messages", str(self.ses_sends)),
            ("duplicates (extra sends)", str(self.duplicates)),
            ("messages sent more than once", str(self.duplicated_messages)),
            ("most sends of one message", str(self.max_sends_per_message)),
            ("in flight at kills (K)", str(self.in_flight_at_kills)),
            ("live leases expired (L)", str(self.live_leases_expired)),
            ("ambiguous SES outcomes (A)", str(self.ambiguous)),
            ("measured bound K + L + A", str(self.bound)),
            ("SPEC §3.2 bound", str(self.spec_bound)),
            ("in flight at database events (informative)", str(db_in_flight)),
            ("attempt rows by outcome", attempts),
            ("retries by reason", retries or "none"),
            ("LISTEN sessions lost / database errors logged", self._log_summary()),
            ("database errors that are not connection faults", _counts(self.unexpected_db_errors)),
            (
                "tracebacks / plain-text lines in the JSON logs",
                f"{self.tracebacks} / {self.plain_lines}",
            ),
            ("daemons exited on their own", str(len(self.unexpected_exits))),
            ("daemons stuck (found by the supervisor)", str(len(self.stuck))),
            ("stalled daemons that worked on (new claims)", self._stall_summary()),
            ("end probes (each daemon alone delivers)", _summary(self.probes, "ok")),
            ("SIGTERM at the end", _summary(self.sigterm, "exit 0")),
            *self.event_rows,
            ("verdict", "PASS" if not self.failures() else "FAIL"),
        ]

    def _stall_summary(self) -> str:
        outcomes = list(self.after_stalls.values())
        observed = [o for o in outcomes if o != "not observed"]
        recovered = observed.count("recovered")
        hung = len(observed) - recovered
        return f"{recovered} of {len(observed)} observed ({hung} hung; {len(outcomes)} stalls)"

    def _log_summary(self) -> str:
        events = ("listen_connection_lost", "database_unavailable", "record_failed")
        return " / ".join(str(self.log_events.get(e, 0)) for e in events)

    def table(self) -> str:
        rows = self.rows_for_table()
        width = max(len(k) for k, _ in rows)
        lines = [f"| {'count':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {k:<{width}} | {v} |" for k, v in rows]
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


def _summary(outcomes: dict[str, str], good: str) -> str:
    bad = {k: v for k, v in outcomes.items() if v != good}
    if not outcomes:
        return "not run"
    if not bad:
        return f"{len(outcomes)}/{len(outcomes)} {good}"
    return "; ".join(f"{k}: {v}" for k, v in bad.items())


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


class LogTail:
    """Reads a daemon's JSON-lines log as it grows."""

    batches_everywhere = 0  # batches done by every daemon so far, as seen by the tails

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.last_batch: float | None = None
        self.batch_times: list[float] = []
        self.everywhere_at_last_batch = LogTail.batches_everywhere
        self.listening = False
        self.recent: list[str] = []

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace")
            self.recent = [*self.recent[-19:], text]
            try:
                event = json.loads(text).get("event")
            except (ValueError, AttributeError):
                continue
            if event == "batch_done":
                LogTail.batches_everywhere += 1
                self.last_batch = time.monotonic()
                self.batch_times.append(self.last_batch)
                self.everywhere_at_last_batch = LogTail.batches_everywhere
            elif event == "listening":
                self.listening = True


class Slot:
    """One daemon position: a proxy and successive incarnations of ``mailroom run``."""

    def __init__(self, index: int, proxy: TcpProxy, env: dict[str, str], logs: Path) -> None:
        self.index = index
        self.proxy = proxy
        self.env = env
        self.logs = logs
        self.incarnation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker = ""
        self.tail: LogTail | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.incarnation += 1
        self.worker = f"chaos-d{self.index}-{self.incarnation}"
        path = self.logs / f"{self.worker}.log"
        env = {**self.env, "MAILROOM_WORKER_NAME": self.worker}
        with path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailroom", "run"], env=env, stdout=log, stderr=log
            )
        self.tail = LogTail(path)
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Chaos:
    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.result = Result(settings, workdir)
        self.rng = random.Random(settings.seed)
        self.t0 = time.monotonic()
        self.pg = EmbeddedPostgres(data_dir=workdir / "pgdata")
        self.standin = SesStandin(latency=settings.latency, timeout_sleep=settings.timeout_sleep)
        self.proxies: list[TcpProxy] = []
        self.slots: list[Slot] = []
        self.dsn = ""
        self._monitor: psycopg.Connection[Any] | None = None
        self._produced = 0
        self._producer_done = threading.Event()
        self._abort = threading.Event()
        self._last_check = 0.0
        self._overdue = 0
        self._stalls: list[tuple[Slot, str, float]] = []  # (slot, worker, when), not yet judged
        self._drained_at: float | None = None  # when every message was final (monotonic)
        self.events = EventFlow(settings.seed, workdir) if settings.events else None

    # -- helpers -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        line = f"{self.now():7.2f}s {text}"
        self.result.timeline.append(line)
        if self.s.verbose:
            print(line, file=sys.stderr, flush=True)

    def query(self, text: str, params: Any = None, *, tries: int = 1) -> list[tuple[Any, ...]]:
        """Run a query on the harness's own (direct) connection, reconnecting as needed;
        raises psycopg.OperationalError after ``tries`` failures."""
        for attempt in range(tries):
            try:
                if self._monitor is None or self._monitor.closed:
                    self._monitor = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                return self._monitor.execute(text, params).fetchall()
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    if self._monitor is not None:
                        self._monitor.close()
                self._monitor = None
                if attempt == tries - 1:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def sending(self, worker: str | None = None) -> int | None:
        text = "SELECT count(*) FROM mailroom.outbox WHERE status = 'sending'"
        params: list[Any] = []
        if worker is not None:
            text += " AND locked_by = %s"
            params.append(worker)
        try:
            return int(self.query(text, params, tries=5)[0][0])
        except psycopg.OperationalError:
            return None

    # -- set-up and tear-down ----------------------------------------------------------------

    def setup(self) -> None:
        admin = self.pg.start()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        self.dsn = self.pg.dsn(DATABASE)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate.migrate(conn, channel="token_insert")
        self.standin.start()
        env = self.s.daemon_env(self.standin.url)
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.events is not None:
            env.update(self.events.start())
            self.standin.on_sent = self.events.on_sent
            self.events.foreign(span=self.s.messages / self.s.rate)
        for index in range(self.s.daemons):
            proxy = TcpProxy("127.0.0.1", self.pg.port).start()
            self.proxies.append(proxy)
            url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{DATABASE}"
            slot = Slot(index, proxy, {**env, "MAILROOM_DATABASE_URL": url}, logs)
            self.slots.append(slot)
            slot.start()
        deadline = time.monotonic() + 60
        while not all(s.tail and s.tail.listening for s in self.slots):
            for slot in self.slots:
                assert slot.tail is not None
                slot.tail.poll()
                if not slot.alive():
                    raise RuntimeError(f"{slot.worker} exited at start: {slot.tail.recent}")
            if time.monotonic() > deadline:
                raise RuntimeError("daemons did not start listening within 60 s")
            time.sleep(0.1)
        self.note(f"{self.s.daemons} daemons listening; PostgreSQL on port {self.pg.port}")

    def teardown(self) -> None:
        self._abort.set()
        for slot in self.slots:
            with contextlib.suppress(Exception):
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.send_signal(signal.SIGCONT)
                slot.kill()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        with contextlib.suppress(Exception):
            self.standin.stop()
        if self.events is not None:
            with contextlib.suppress(Exception):
                self.events.stop()
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                self._monitor.close()
        with contextlib.suppress(Exception):
            self.pg.stop()

    # -- the producer ------------------------------------------------------------------------

    def produce(self) -> None:
        rng = random.Random(self.s.seed + 1)
        sizes = (1, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 100)
        start = time.monotonic()
        conn: psycopg.Connection[Any] | None = None
        n = 0
        try:
            while n < self.s.messages and not self._abort.is_set():
                size = min(self.s.messages - n, rng.choice(sizes))
                delay = start + n / self.s.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while not self._abort.is_set():
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                        with conn.transaction():
                            for i in range(n, n + size):
                                mailroom.enqueue(
                                    conn,
                                    f"user{i}@example.com",
                                    template=TEMPLATE,
                                    data={"n": i},
                                    idempotency_key=f"chaos-{i}",
                                    max_attempts=self.s.max_attempts,
                                )
                        break
                    except psycopg.OperationalError:
                        self.result.producer_retries += 1
                        if conn is not None:
                            with contextlib.suppress(Exception):
                                conn.close()
                        conn = None
                        time.sleep(0.2)
                n += size
                self._produced = n
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._producer_done.set()

    # -- supervision -------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart daemons that exited on their own; find daemons that stopped working."""
        for slot in self.slots:
            assert slot.tail is not None
            assert slot.proc is not None
            slot.tail.poll()
            code = slot.proc.poll()
            if code is None:
                continue
            slot.tail.poll()
            if code == 3 and not slot.tail.listening:
                self.result.startup_failures += 1
                self.note(f"{slot.worker} refused to start (exit 3): restarting it")
            else:
                last = " | ".join(slot.tail.recent[-5:])
                self.result.unexpected_exits.append(f"{slot.worker} exit {code}: {last[-1500:]}")
                self.note(f"{slot.worker} EXITED with {code}: restarting it")
            time.sleep(0.3)
            slot.start()
        if time.monotonic() - self._last_check < 1.0:
            return
        self._last_check = time.monotonic()
        try:
            rows = self.query(
                "SELECT count(*) FROM mailroom.outbox WHERE status IN ('pending', 'retrying')"
                " AND next_attempt_at < now() - interval '2 seconds'"
            )
            self._overdue = int(rows[0][0])
        except psycopg.OperationalError:
            self._overdue = 0
        for slot in self.slots:
            reason = self.stuck_reason(slot)
            if reason is None:
                continue
            assert slot.tail is not None
            recent = " | ".join(slot.tail.recent[-5:])
            self.result.stuck.append(f"{slot.worker}: {reason}; last log lines: {recent[-1500:]}")
            self.note(f"{slot.worker} STUCK ({reason}): killing and restarting it")
            self.kill(slot.index, reason="stuck")

    def stuck_reason(self, slot: Slot) -> str | None:
        """Why ``slot``'s daemon counts as stuck, or None: it completed no batch for
        ``stuck_after`` seconds while messages were overdue, or while the other daemons
        completed 20 batches (with SKIP LOCKED both get work at this rate)."""
        assert slot.tail is not None
        now = time.monotonic()
        idle = now - (slot.tail.last_batch or slot.started_at)
        if min(idle, now - slot.started_at) < self.s.stuck_after:
            return None
        others = LogTail.batches_everywhere - slot.tail.everywhere_at_last_batch
        if self._overdue:
            return f"no batch for {idle:.0f} s while {self._overdue} messages were overdue"
        if others >= 20:
            return f"no batch for {idle:.0f} s while the other daemons did {others}"
        return None

    def wait_until(self, at: float) -> None:
        while self.now() < at:
            self.supervise()
            time.sleep(min(0.1, max(at - self.now(), 0.0)))

    # -- faults ------------------------------------------------------------------------------

    def kill(self, index: int, reason: str = "scheduled") -> None:
        slot = self.slots[index]
        if not slot.alive():
            return
        worker = slot.worker
        self.judge_stalls(slot)
        slot.kill()
        in_flight = self.sending(worker)
        self.result.kills.append(Kill(self.now(), worker, in_flight, reason))
        self.note(f"SIGKILL {worker}: {in_flight} in flight")
        time.sleep(self.rng.uniform(0.1, 0.8))
        slot.start()

    def judge_stalls(self, slot: Slot | None = None) -> None:
        """Did the daemon of a stalled proxy work on? A batch done more than a lease after
        the stall was claimed after it: the daemon got past its blackholed connections."""
        lease = self.s.lease_ms / 1000
        now = time.monotonic()
        for entry in list(self._stalls):
            stalled, worker, when = entry
            if slot is not None and stalled is not slot:
                continue
            self._stalls.remove(entry)
            assert stalled.tail is not None
            stalled.tail.poll()
            # before its round trips time out and its leases lapse the daemon cannot work
            # on; if every message was final by then, there was nothing left to show it
            ran_out = self._drained_at is not None and self._drained_at < when + DB_TIMEOUT + lease
            if stalled.worker != worker or now - when < lease + 2 or ran_out:
                self.result.after_stalls[worker] = "not observed"
            elif any(t > when + lease + 1 for t in stalled.tail.batch_times):
                self.result.after_stalls[worker] = "recovered"
            else:
                self.result.after_stalls[worker] = f"no new batch in the {now - when:.0f} s after"
                self.note(f"{worker} did no new batch in the {now - when:.0f} s after its stall")

    def pg_event(self, kind: str) -> None:
        in_flight = self.sending()
        started = time.monotonic()
        if kind == "pg_restart":
            self.pg.restart()
        else:
            self.pg.kill()
            time.sleep(self.rng.uniform(0.2, 1.0))
            self.pg.start()
        seconds = time.monotonic() - started
        alive = sum(1 for slot in self.slots if slot.alive())
        self.result.db_events.append(DbEvent(self.now(), kind, alive, in_flight, seconds))
        self.note(f"{kind}: PostgreSQL down {seconds:.2f} s, {in_flight} in flight before")

    def proxy_event(self, kind: str, indices: tuple[int, ...]) -> None:
        for index in indices:
            in_flight = self.sending(self.slots[index].worker)
            proxy = self.proxies[index]
            broken = proxy.cut() if kind == "cut" else proxy.stall()
            if kind == "stall":
                self._stalls.append((self.slots[index], self.slots[index].worker, time.monotonic()))
            self.result.db_events.append(DbEvent(self.now(), kind, 1, in_flight))
            self.note(f"{kind} d{index}: {broken} connections, {in_flight} in flight")

    def act(self, action: str, argument: Any, cycle: int) -> None:
        n = self.s.daemons
        if action == "inject":
            kind, count = argument
            self.standin.inject(kind, count)
            self.result.injected[kind] += count
            self.note(f"inject {kind} x{count}")
        elif action == "kill":
            self.kill((argument + cycle) % n)
        elif action in ("pg_restart", "pg_crash"):
            self.pg_event(action)
        elif action in ("cut", "stall"):
            indices = tuple(sorted({(i + cycle) % n for i in argument}))
            self.proxy_event(action, indices)
        else:
            raise ValueError(action)

    def schedule(self) -> Iterator[tuple[float, str, Any, int]]:
        production = self.s.messages / self.s.rate
        cycles = max(1, round(production / self.s.cycle))
        start = self.now()
        for cycle in range(cycles):
            for fraction, action, argument in CYCLE:
                if action in self.s.skip:
                    continue
                yield start + (cycle + fraction) * self.s.cycle, action, argument, cycle

    # -- the end -----------------------------------------------------------------------------

    def drain(self) -> None:
        self._producer_done.wait()
        self.note(f"producer done: {self._produced} messages")
        deadline = time.monotonic() + self.s.drain_timeout
        while time.monotonic() < deadline:
            self.supervise()
            try:
                rows = self.query(
                    "SELECT count(*) FROM mailroom.outbox WHERE status IN ('sent', 'dead')"
                )
            except psycopg.OperationalError:
                time.sleep(0.2)
                continue
            if int(rows[0][0]) >= self.s.messages:
                self.result.drained = True
                self._drained_at = time.monotonic()
                self.note("every message final")
                return
            time.sleep(0.2)
        self.note("DRAIN TIMEOUT")

    def probe(self) -> None:
        """Each daemon alone (the others SIGSTOPped) must still deliver: a daemon that
        stopped making progress is found even when the others did its work."""
        for slot in self.slots:
            if not slot.alive():
                self.result.probes[slot.worker] = "not running"
                continue
            others = [o for o in self.slots if o is not slot and o.alive()]
            for other in others:
                assert other.proc is not None
                other.proc.send_signal(signal.SIGSTOP)
            try:
                base = self.s.messages + 1000 * (slot.index + 1)
                with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
                    for k in range(3):
                        mailroom.enqueue(
                            conn,
                            f"probe{slot.index}-{k}@example.com",
                            template=TEMPLATE,
                            data={"n": base + k},
                            max_attempts=self.s.max_attempts,
                        )
                deadline = time.monotonic() + self.s.probe_timeout
                outcome = f"3 probe messages not sent within {self.s.probe_timeout:.0f} s"
                while time.monotonic() < deadline:
                    sent = self.query(
                        "SELECT count(*) FROM mailroom.outbox WHERE status = 'sent'"
                        " AND (template_data->>'n')::int BETWEEN %s AND %s",
                        [base, base + 2],
                    )
                    if int(sent[0][0]) == 3:
                        outcome = "ok"
                        break
                    time.sleep(0.1)
                self.result.probes[slot.worker] = outcome
                self.note(f"probe {slot.worker}: {outcome}")
            finally:
                for other in others:
                    assert other.proc is not None
                    other.proc.send_signal(signal.SIGCONT)

    def sigterm(self) -> None:
        """Every daemon must exit 0 on SIGTERM, and, as nothing is due any more, with no
        batch in flight: a batch still in flight now never finished (a hung query)."""
        time.sleep(1.0)  # the probes' last batch_done is logged just before its slot frees
        for slot in self.slots:
            if slot.alive():
                assert slot.proc is not None
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self.slots:
            assert slot.proc is not None
            assert slot.tail is not None
            try:
                code = slot.proc.wait(12)  # MAILROOM_SHUTDOWN_TIMEOUT is 8 s
            except subprocess.TimeoutExpired:
                self.result.sigterm[slot.worker] = "still running 12 s after SIGTERM"
                slot.kill()
                continue
            outcome = f"exit {code}"
            hung = [
                e.get("batches_in_flight", 0)
                for e in _events(slot.tail.path)
                if e.get("event") == "draining"
            ]
            if code == 0 and hung and hung[-1]:
                outcome += f" after waiting for {hung[-1]} batches that never finished"
            self.result.sigterm[slot.worker] = outcome
        self.note(f"SIGTERM: {self.result.sigterm}")

    def collect(self) -> None:
        r, n = self.result, self.s.messages
        time.sleep(self.s.timeout_sleep + 0.5)  # let "timeout" faults finish accepting
        r.unconsumed_faults = self.standin.pending_faults()
        sends: dict[int, list[str]] = {}
        for record in self.standin.sent():
            if record["template"] == TEMPLATE:
                sends.setdefault(int(record["template_data"]["n"]), []).append(record["message_id"])
        rows = self.query(
            "SELECT (template_data->>'n')::int, status, provider_message_id, last_error"
            " FROM mailroom.outbox WHERE (template_data->>'n')::int < %s",
            [n],
            tries=20,
        )
        r.rows = len(rows)
        r.distinct = len({row[0] for row in rows})
        r.statuses = dict(Counter(row[1] for row in rows))
        if self.events is not None:
            r.suppressed_after_send = sorted(
                row[0] for row in rows
                if row[1] == "dead" and (row[3] or "").startswith("suppressed:") and row[0] in sends
            )  # fmt: skip
        excused = set(r.suppressed_after_send)
        dead = Counter(
            (row[3] or "").split(":")[0]
            for row in rows
            if row[1] == "dead" and row[0] not in excused
        )
        r.dead_by_reason = dict(dead)
        r.unsent_rows = sorted(row[0] for row in rows if row[1] != "sent" and row[0] not in excused)
        r.wrong_message_id = sorted(
            row[0] for row in rows if row[1] == "sent" and row[2] not in sends.get(row[0], [])
        )
        r.lost = [i for i in range(n) if i not in sends]
        counts = [len(sends[i]) for i in range(n) if i in sends]
        r.ses_sends = sum(counts)
        r.duplicates = sum(c - 1 for c in counts)
        r.duplicated_messages = sum(1 for c in counts if c > 1)
        r.max_sends_per_message = max(counts, default=0)
        r.attempts_by_outcome = {
            str(k): int(v)
            for k, v in self.query("SELECT outcome, count(*) FROM mailroom.attempts GROUP BY 1")
        }
        r.retries_by_reason = {
            str(k): int(v)
            for k, v in self.query(
                "SELECT split_part(error, ':', 1), count(*) FROM mailroom.attempts"
                " WHERE outcome = 'retry' GROUP BY 1"
            )
        }
        expired: Counter[str] = Counter()
        for (error,) in self.query(
            "SELECT error FROM mailroom.attempts WHERE outcome = 'lease_expired'"
        ):
            match = LEASE_EXPIRED.match(error or "")
            expired[match.group(1) if match else "?"] += 1
        r.lease_expired_by_worker = dict(expired)
        ambiguous = self.query(
            "SELECT count(*) FROM mailroom.attempts WHERE outcome IN ('retry', 'dead')"
            " AND (error LIKE %s OR error LIKE %s)",
            list(AMBIGUOUS),
        )
        r.ambiguous = int(ambiguous[0][0])
        for path in sorted((self.workdir / "logs").glob("*.log")):
            self.read_log(path)
        if self.events is not None:
            self.collect_events()

    def collect_events(self) -> None:
        assert self.events is not None
        stored = self.query(
            "SELECT event_type, provider_message_id, recipient FROM mailroom.events", tries=20
        )
        suppressed = {str(a) for (a,) in self.query("SELECT address FROM mailroom.suppressions")}
        r = self.result
        r.event_problems = self.events.verify(stored, suppressed)
        r.event_rows = [
            *self.events.table_rows(len(suppressed)),
            ("dead as suppressed by their own bounce after SES took them",
             str(len(r.suppressed_after_send))),
        ]  # fmt: skip

    def read_log(self, path: Path) -> None:
        r = self.result
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                r.plain_lines += 1
                if line.startswith("Traceback"):
                    r.tracebacks += 1
                    r.log_errors.append(f"{path.name}: traceback")
                continue
            name = str(event.get("event"))
            r.log_events[name] += 1
            error = event.get("error")
            if name in DB_ERROR_EVENTS and error and error not in CONNECTION_ERRORS:
                detail = str(event.get("detail", "")).splitlines()[0][:120]
                r.unexpected_db_errors[f"{name} {error} ({detail})"] += 1
            if event.get("level") in ("error", "critical") and len(r.log_errors) < 40:
                r.log_errors.append(f"{path.name}: {line[:300]}")

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Result:
        try:
            self.setup()
            producer = threading.Thread(target=self.produce, name="producer", daemon=True)
            producer.start()
            for at, action, argument, cycle in self.schedule():
                self.wait_until(at)
                self.act(action, argument, cycle)
            self.drain()
            # A stalled daemon gets past its blackholed connections only when its database
            # round trip times out (MAILROOM_DB_TIMEOUT, 10 s) and its leases lapse: a drain
            # that ends sooner must not count it as hung.
            for _, _, when in self._stalls:
                self.wait_until(when - self.t0 + DB_TIMEOUT + self.s.lease_ms / 1000 + 2)
            self.judge_stalls()
            if self.result.drained:
                self.probe()
            if self.events is not None:  # the daemons read the last events before SIGTERM
                drained = self.events.wait_drained(self.s.drain_timeout)
                self.note("events drained" if drained else "EVENTS NOT DRAINED")
            self.sigterm()
            self.collect()
        finally:
            self.result.elapsed = self.now()
            self.teardown()
        return self.result


def run(settings: Settings, workdir: Path | None = None) -> Result:
    """One chaos run in ``workdir`` (a new temporary directory if None; kept)."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="mailroom-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Chaos(settings, workdir).run()


def record(path: Path, result: Result, command: str) -> None:
    """Write the counts between the chaos-run markers of ``path`` (appended if absent)."""
    s = result.settings
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join(
        [
            BEGIN_MARK,
            f"Recorded {when} on {os.cpu_count()} CPU(s), seed {s.seed}:",
            "",
            "```sh",
            command,
            "```",
            "",
            result.table(),
            END_MARK,
        ]
    )
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=defaults.messages)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="enqueued per second")
    parser.add_argument("--cycle", type=float, default=defaults.cycle, help="seconds per cycle")
    parser.add_argument("--daemons", type=int, default=defaults.daemons)
    parser.add_argument("--batch-limit", type=int, default=defaults.batch_limit)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--lease-ms", type=int, default=defaults.lease_ms)
    parser.add_argument("--latency-ms", type=float, default=defaults.latency * 1000)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    actions = sorted({action for _, action, _ in CYCLE})
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=actions,
        help="leave this fault out of the cycle (repeatable)",
    )
    parser.add_argument(
        "--events", action="store_true", help="SES events flow through SQS during the run"
    )
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--record", type=Path, metavar="FILE", help="write the counts into FILE")
    parser.add_argument("--quiet", action="store_true", help="no timeline on stderr")
    args = parser.parse_args(argv)
    settings = Settings(
        messages=args.messages,
        rate=args.rate,
        cycle=args.cycle,
        daemons=args.daemons,
        batch_limit=args.batch_limit,
        concurrency=args.concurrency,
        lease_ms=args.lease_ms,
        latency=args.latency_ms / 1000,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
        verbose=not args.quiet,
        skip=frozenset(args.skip),
        events=args.events,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mailroom-chaos-"))
    result = run(settings, workdir)
    print(result.table())
    failures = result.failures()
    for problem in failures:
        print(f"FAIL: {problem}")
    for line in result.log_errors[:20]:
        print(f"log: {line}")
    if args.record:
        shown = list(argv if argv is not None else sys.argv[1:])
        command = shlex.join(["python", "tests/chaos.py", *shown])
        record(args.record, result, command)
        print(f"recorded in {args.record}")
    if failures or args.keep or args.workdir:
        print(f"work directory (PostgreSQL data, daemon logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
