"""Shared fixtures: a real PostgreSQL, a fresh database per test, SES over real HTTP, and
the daemon as a real process.

PostgreSQL: a throwaway embedded server for the session, unless MAILROOM_TEST_DSN names a
server (any database on it; the tests create and drop their own databases there).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mailroom import migrate
from sesv2_standin import SesStandin

# the console fixtures (browser, bare_browser, console, operator) of the browser tests
pytest_plugins = ["console_harness"]

TEMPLATE_DB = f"mailroom_template_{os.getpid()}"


def _with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def _drop(name: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a server where tests may create databases."""
    external = os.environ.get("MAILROOM_TEST_DSN")
    if external:
        yield external
        return
    from mailroom.embedded import EmbeddedPostgres  # noqa: PLC0415 -- only without a DSN

    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.stop(cleanup=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> Iterator[str]:
    """A migrated database that every test's database is copied from."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE_DB)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    with psycopg.connect(_with_db(pg_admin_dsn, TEMPLATE_DB), autocommit=True) as conn:
        migrate.migrate(conn, channel="token_insert")
    yield TEMPLATE_DB
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(_drop(TEMPLATE_DB))


@pytest.fixture
def db(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """DSN of a fresh, migrated database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
        admin.execute(create.format(sql.Identifier(name), sql.Identifier(template_db)))
    yield _with_db(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(_drop(name))


@pytest.fixture
def migrated_to(pg_admin_dsn: str) -> Iterator[Callable[[int], str]]:
    """migrated_to(28) -> DSN of a new database that ``mailroom migrate`` took up to 0028
    only (its own code, with the later migrations out of sight); the upgrade tests then
    run the rest. Dropped after the test."""
    created: list[str] = []
    every = migrate.available

    def up_to(version: int) -> Callable[..., list[migrate.Migration]]:
        return lambda modules=(): [m for m in every(modules) if m.version <= version]

    def make(version: int) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        dsn = _with_db(pg_admin_dsn, name)
        with pytest.MonkeyPatch.context() as patch, psycopg.connect(dsn, autocommit=True) as conn:
            patch.setattr(migrate, "available", up_to(version))
            migrate.migrate(conn, channel="token_insert")
        return dsn

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for name in created:
            admin.execute(_drop(name))


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def login_as(db: str, pg_admin_dsn: str) -> Iterator[Callable[..., str]]:
    """login_as("mailroom_app") -> DSN of a new login role that is a member of it."""
    created: list[str] = []

    def make(group: str | None, db: str = db) -> str:
        name = f"u_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            if group:
                admin.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name))
                )
        created.append(name)
        return make_conninfo(db, user=name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        for name in created:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
async def pool(db: str, anyio_backend: str) -> AsyncIterator[Any]:
    """An open async pool on this test's database (for the anyio tests of a module that
    sets anyio_backend), as the daemon's Outbox uses one."""
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415 -- async tests only

    p: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db, kwargs={"autocommit": True}, open=False, min_size=1, max_size=4
    )
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server (SQS, SES v1, STS, ...) over real HTTP, one per test module."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 -- only the AWS tests need it

    server = ThreadedMotoServer(port=0, verbose=False)  # port 0: a busy port would hang
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def standin() -> Iterator[SesStandin]:
    # it checks every request's signature against the credentials daemons are given
    with SesStandin(credentials={"testing": "testing"}) as server:
        yield server


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail with a clear message after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM mailroom.outbox GROUP BY status").fetchall()
    return {status: int(n) for status, n in rows}


def all_final(conn: psycopg.Connection[Any], expected: int) -> bool:
    counts = statuses(conn)
    return counts.get("sent", 0) + counts.get("dead", 0) == expected


class DaemonProcess:
    """``mailroom run`` as a real child process, logs captured as JSON lines."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailroom", "run"], env=self.env, stdout=log, stderr=log
        )
        log.close()
        return self

    def wait_listening(self, timeout: float = 20.0) -> None:
        wait_for(lambda: any(e.get("event") == "listening" for e in self.events()), timeout)

    def events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "unparsed", "line": line})
        return out

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon_env(db: str, standin: SesStandin, tmp_path: Path) -> dict[str, str]:
    """Environment for a daemon against this test's database and the SES stand-in, with
    short timings so that tests run in seconds."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {
        **keep,
        "MAILROOM_DATABASE_URL": db,
        "MAILROOM_LOG_FORMAT": "json",
        "MAILROOM_LOG_LEVEL": "info",
        "MAILROOM_HTTP_PORT": "0",  # several daemons share a test: no fixed port
        "MAILROOM_POLL_INTERVAL": "60000",
        "MAILROOM_BATCH_TIMEOUT": "200",
        "MAILROOM_SES_CONNECT_TIMEOUT": "1000",
        "MAILROOM_SES_READ_TIMEOUT": "2000",
        "MAILROOM_LEASE_DURATION": "10000",
        "MAILROOM_RETRY_BASE": "100",
        "MAILROOM_RETRY_CAP": "400",
        "MAILROOM_PAUSE_DURATION": "1000",
        "MAILROOM_SHUTDOWN_TIMEOUT": "8000",
        "AWS_ENDPOINT_URL_SESV2": standin.url,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


@pytest.fixture
def spawn(daemon_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons: spawn(MAILROOM_BATCH_LIMIT="5", ...) overrides settings."""
    started: list[DaemonProcess] = []

    def start(**overrides: str) -> DaemonProcess:
        env = {**daemon_env, **overrides}
        daemon = DaemonProcess(env, tmp_path / f"daemon-{len(started)}.log").start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.signal(signal.SIGKILL)
            daemon.proc.wait(10)
    for daemon in started:  # JSON logs stay JSON, library warnings included
        if daemon.env.get("MAILROOM_LOG_FORMAT") == "json":
            unparsed = [e["line"] for e in daemon.events() if e["event"] == "unparsed"]
            if unparsed:  # start-up failures included (issue 19, finding 8)
                pytest.fail(f"non-JSON lines in {daemon.log_path.name}: {unparsed[:3]}")
