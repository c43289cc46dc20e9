"""Where the database's time goes during a drain: pg_stat_statements per statement (calls,
rows, time, WAL, buffers), the WAL written, and the CPU of every PostgreSQL process.

The bench's own server loads pg_stat_statements (``enable``); ``watch`` is a ``during``
hook for scenarios.drain that resets the counters just before the fill and reads them once
the drain is recorded. The harness's own statements (the fill, its ANALYZE, the polling
count) are left out of the table but not of the server's CPU (they are a small, fixed
share, the same for every code under test).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import CLOCK_TICK, Postgres

LIBRARIES = "pg_stat_statements"
# statements the harness runs, not the code under test
HARNESS = re.compile(
    r"^\s*(INSERT INTO mailroom\.outbox \(to_addresses|ANALYZE|SELECT count\(\*\) FILTER"
    r"|SELECT pg_stat_statements_reset|SELECT pg_current_wal|CREATE DATABASE|DROP DATABASE"
    r"|SELECT count\(\*\) FROM pg_stat_activity|SHOW )",
    re.IGNORECASE,
)
READ = """
SELECT queryid, query, calls, rows, total_exec_time, wal_bytes, wal_records, wal_fpi,
       shared_blks_hit, shared_blks_read, shared_blks_dirtied, shared_blks_written, toplevel
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
ORDER BY total_exec_time DESC
"""
LISTENING_DB = """
SELECT datname FROM pg_stat_activity WHERE application_name = 'mailroom-listener' LIMIT 1
"""
Row = dict[str, Any]


def enable(pg: Postgres) -> None:
    """Load pg_stat_statements (a restart: it needs shared memory from the start) and
    track nested statements too, so that work done by triggers and SQL functions shows
    under its own text."""
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET shared_preload_libraries = '{LIBRARIES}'")
        admin.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
        admin.execute("ALTER SYSTEM SET pg_stat_statements.max = 2000")
    pg.server.restart()
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def server_cpu(pg: Postgres) -> float:
    """CPU seconds of the postmaster and every backend, live or ended (cutime/cstime
    count the children the postmaster has reaped)."""
    pid = int((pg.server.data_dir / "postmaster.pid").read_text().split()[0])
    # A backend reaped while /proc is read would be in neither the reaped total read
    # before nor the live ones: read again until the reaped total did not move meanwhile.
    while True:
        reaped = _reaped(pid)
        live = 0
        for entry in Path("/proc").glob("[0-9]*/stat"):
            child = _stat(int(entry.parent.name))
            if child and int(child[1]) == pid:
                live += int(child[11]) + int(child[12])
        if _reaped(pid) == reaped:
            own = _stat(pid)
            mine = int(own[11]) + int(own[12]) if own else 0
            return (reaped + live + mine) / CLOCK_TICK


def _reaped(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[13]) + int(fields[14]) if fields else 0


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def wal_position(pg: Postgres) -> int:
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        row = admin.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def watch(pg: Postgres, into: dict[str, Any]) -> Callable[[list[int]], Callable[[], None]]:
    """A ``during`` hook: reset the counters now (before the fill, whose statements are
    left out), put the drain's statements into ``into["statements"]`` when stopped. The
    server's CPU and WAL are in every drain's result (``pg_cpu``, ``wal_bytes``)."""

    def start(pids: list[int]) -> Callable[[], None]:
        with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_stat_statements_reset()")
            # the drain's database: the one its daemons' listeners are connected to
            row = admin.execute(LISTENING_DB).fetchone()
        dbname = str(row[0]) if row else ""

        def stop() -> None:
            into["statements"] = read(pg, dbname)

        return stop

    return start


def read(pg: Postgres, dbname: str) -> list[Row]:
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        cur = admin.execute(READ, (dbname,))
        names = [d.name for d in cur.description or []]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return [r for r in rows if not HARNESS.match(r["query"])]


def short(query: str, width: int = 70) -> str:
    """A statement's first words, one line, for a table cell."""
    text = " ".join(query.split())
    text = re.sub(r"\$\d+", "$n", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[Row], n: int, top: int = 12) -> list[str]:
    """Markdown: the statements by total time, per 1,000 emails where it helps."""
    total = sum(r["total_exec_time"] for r in rows if r["toplevel"]) or 1.0
    lines = [
        "| statement | top | calls | rows | total ms | % | ms / 1,000 | WAL B / email"
        " | blocks hit / email | dirtied / email |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows[:top]:
        lines.append(
            f"| `{short(r['query']).replace('|', '/')}` | {'yes' if r['toplevel'] else 'nested'}"
            f" | {r['calls']:,} | {r['rows']:,} | {r['total_exec_time']:,.0f}"
            f" | {100 * r['total_exec_time'] / total:.0f} %"
            f" | {r['total_exec_time'] / n * 1000:,.1f} | {int(r['wal_bytes']) / n:,.0f}"
            f" | {r['shared_blks_hit'] / n:,.1f} | {r['shared_blks_dirtied'] / n:,.2f} |"
        )
    return lines
