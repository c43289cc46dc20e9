"""Forward-only, versioned schema migrations from the package's migrations/ (the
repository's sql/). Safe to run from several replicas at once: an advisory lock
serialises them and each version is applied once, in its own transaction.

Some steps cannot run in a migration's transaction: :func:`finish` runs them after the
migrations, at every migrate (CREATE INDEX CONCURRENTLY, and backfills in batches).

Optional modules live in sub-folders (sql/lifecycle/) with their own version range
(1001-1999 for lifecycle) and are applied only when asked for; once applied, their later
versions count as pending like the core's.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
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


MODULES = ("lifecycle",)
LOCK_POLL_SECONDS = 0.2  # another migrate holds the lock: how often to try again
SEARCH_VERSION = 29  # 0029_recipient_search: finish() completes it outside its transaction
BACKFILL_BATCH = 10_000
SAFE_PATH = "pg_catalog, pg_temp"
ROLES_VERSION = 4  # 0004_roles defines mailroom.grant_roles()


def available(modules: tuple[str, ...] = ()) -> list[Migration]:
    """The core migrations, then those of the named optional modules."""
    found = _read(resources.files("mailroom").joinpath("migrations"))
    for module in modules:
        if module not in MODULES:
            raise MigrationError(f"unknown migration module {module!r}: known are {MODULES}")
        found += _read(resources.files("mailroom").joinpath("migrations", module))
    return found


def _read(folder: Any) -> list[Migration]:
    found = []
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def _applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str]]:
    rows = conn.execute(query("migrations_applied")).fetchall()
    return {int(v): (str(n), str(c)) for v, n, c in rows}


def pending(conn: psycopg.Connection[Any], modules: tuple[str, ...] = ()) -> list[Migration]:
    """Migrations not yet applied: the core's, the named modules', and those of every
    module already installed (all of the core's on an empty database)."""
    exists = conn.execute(query("migrations_table_exists")).fetchone()
    if not exists or not exists[0]:
        return available(modules)
    applied = _applied(conn)
    installed = {m for m in MODULES for v in applied if _module_of(v) == m}
    wanted = available(tuple(sorted(set(modules) | installed)))
    return [m for m in wanted if m.version not in applied]


def _module_of(version: int) -> str:
    return "core" if version < 1000 else MODULES[version // 1000 - 1]


def migrate(
    conn: psycopg.Connection[Any], *, channel: str, modules: tuple[str, ...] = (),
    progress: Callable[[int], None] | None = None,
) -> list[Migration]:  # fmt: skip
    """Apply every pending migration (core, then ``modules``); returns those applied.

    Everything runs with ``search_path = pg_catalog, pg_temp``, whatever the connection
    had (restored afterwards): CHECK constraints, defaults, index expressions and
    SQL-standard bodies bind their operators and functions when they are created, and an
    exact-type overload planted in public would otherwise win over pg_catalog's, and run
    as the superuser here and as every role later."""
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    row = conn.execute(query("search_path_get")).fetchone()
    callers_path = str(row[0]) if row else ""
    conn.execute(query("safe_search_path"))
    try:
        return _migrate(conn, channel=channel, modules=modules, progress=progress)
    finally:
        conn.execute(query("search_path_set"), {"path": callers_path, "local": False})


def _migrate(
    conn: psycopg.Connection[Any], *, channel: str, modules: tuple[str, ...],
    progress: Callable[[int], None] | None,
) -> list[Migration]:  # fmt: skip
    # polled between transactions (queries.sql, migrations_lock, says why not blocking)
    while not _locked(conn):
        time.sleep(LOCK_POLL_SECONDS)
    try:
        conn.execute(query("migrations_bootstrap"))
        applied = _applied(conn)
        installed = {m for m in MODULES for v in applied if _module_of(v) == m}
        done: list[Migration] = []
        for migration in available(tuple(sorted(set(modules) | installed))):
            if migration.version in applied:
                name, checksum = applied[migration.version]
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{name} was changed after it was "
                        "applied; migrations are forward-only: add a new one instead"
                    )
                continue
            with conn.transaction():
                # SET LOCAL too: a migration that changed the session's path cannot weaken
                # the next one's
                conn.execute(query("search_path_set"), {"path": SAFE_PATH, "local": True})
                conn.execute(sql.SQL(migration.text))  # our own static file, not user input
                record = {"version": migration.version, "name": migration.name}
                conn.execute(query("migrations_record"), {**record, "checksum": migration.checksum})
            done.append(migration)
        conn.execute(query("safe_search_path"))  # a migration's own SET does not outlive it
        conn.execute(query("set_channel"), {"channel": channel})
        if ROLES_VERSION in applied or any(m.version == ROLES_VERSION for m in done):
            conn.execute(query("revoke_public"))
            conn.execute(query("grant_roles"))
        if SEARCH_VERSION in applied or any(m.version == SEARCH_VERSION for m in done):
            finish(conn, progress=progress)
        return done
    finally:
        conn.execute(query("migrations_unlock"))


def _locked(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(query("migrations_lock")).fetchone()
    return bool(row and row[0])


@dataclass(frozen=True, slots=True)
class Finished:
    """What :func:`finish` did: whether it built the index, how many batches it filled."""

    built_index: bool
    batches: int


def finish(
    conn: psycopg.Connection[Any], *, batch: int = BACKFILL_BATCH,
    progress: Callable[[int], None] | None = None,
) -> Finished:  # fmt: skip
    """The steps of 0029 that must not run in one transaction, run by every migrate and
    idempotent: a run killed half-way is carried on by the next.

    - ``outbox_live``, the overview's index of waiting rows, by CREATE INDEX CONCURRENTLY
      (enqueues and sends go on while it is built; an invalid one a kill left is dropped
      and built again); then ``outbox_due_by_time``, which it replaces, is dropped
      (DROP INDEX CONCURRENTLY).
    - The recipients of messages older than 0029, ``batch`` messages per transaction,
      newest first (``progress`` gets the mark after each: the ids still to do are below).
    """
    built = False
    state = conn.execute(query("outbox_live_index")).fetchone()
    if state is None or state[0] is not True:
        if state is not None and state[0] is False:
            conn.execute(query("outbox_live_index_drop"))
        conn.execute(query("outbox_live_index_create"))
        built = True
    conn.execute(query("outbox_due_by_time_drop"))  # replaced by outbox_live; once absent, a no-op
    batches = 0
    row = conn.execute(query("recipients_backfill_state")).fetchone()
    mark = int(row[0]) if row and row[0] is not None else 0
    while mark:
        row = conn.execute(query("backfill_recipients"), {"batch": batch}).fetchone()
        mark = int(row[0]) if row else 0
        batches += 1
        if progress is not None:
            progress(mark)
    return Finished(built_index=built, batches=batches)


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
