"""Forward-only, versioned schema migrations from the package's migrations/ (the
repository's sql/). Safe to run from several replicas at once: an advisory lock
serialises them and each version is applied once, in its own transaction."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from mailroom.outbox import query

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    text: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


class MigrationError(RuntimeError):
    pass


def available() -> list[Migration]:
    folder = resources.files("mailroom").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def _applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    rows = conn.execute(query("migrations_applied")).fetchall()
    return {int(v): (str(n), str(c)) for v, n, c in rows}


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migrations not yet applied (all of them on an empty database)."""
    exists = conn.execute(query("migrations_table_exists")).fetchone()
    if not exists or not exists[0]:
        return available()
    applied = _applied(conn)
    return [m for m in available() if m.version not in applied]


def migrate(conn: psycopg.Connection[Any], *, channel: str) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call."""
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    conn.execute(query("migrations_lock"))
    try:
        conn.execute(query("migrations_bootstrap"))
        applied = _applied(conn)
        done: list[Migration] = []
        for migration in available():
            if migration.version in applied:
                name, checksum = applied[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{name} was changed after it was "
                        "applied; migrations are forward-only: add a new one instead"
                    )
                continue
            with conn.transaction():
                conn.execute(sql.SQL(migration.text))  # our own static file, not user input
                record = {"version": migration.version, "name": migration.name}
                conn.execute(query("migrations_record"), {**record, "checksum": migration.checksum})
            done.append(migration)
        conn.execute(query("set_channel"), {"channel": channel})
        return done
    finally:
        conn.execute(query("migrations_unlock"))


def check_ready(conn: psycopg.Connection[Any], *, channel: str) -> None:
    """Refuse to run against a schema that is behind, or wired to another channel."""
    missing = pending(conn)
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        raise MigrationError(
            f"database schema is not up to date ({names} pending): run `mailroom migrate`"
        )
    row = conn.execute(query("settings_channel")).fetchone()
    if row is None or row[0] != channel:
        raise MigrationError(
            f"the outbox trigger notifies channel {row[0] if row else None!r} but "
            f"MAILROOM_CHANNEL_NAME is {channel!r}: run `mailroom migrate` with this setting"
        )
