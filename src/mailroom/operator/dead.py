"""Dead letters by id or filter, in batches (``mailroom dead list | retry | purge``, the
console's dead-letter page), as functions over a connection returning data.

Retry and purge call one database function per batch (the ``dead_retry_batch`` /
``dead_purge_batch`` queries, migration 0020) that changes the rows and writes the
batch's audit row in one transaction; the operator may not write the tables directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg

from mailroom.operator import audit as admin_audit
from mailroom.operator.audit import Actor
from mailroom.outbox import query
from mailroom.text import jsonable

Connection = psycopg.Connection[Any]


class Progress(Protocol):
    """What reports a batch run's progress (cli.output.Progress at a terminal)."""

    def update(self, done: int) -> None: ...


BATCH = 500  # rows per statement of `dead retry` and `dead purge`
NOT_RESENDABLE = "a token email: its secret was discarded when it died (the user must ask again)"


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a ``dead`` command acts on; None means "any"."""

    ids: list[int] | None = None
    queue: str | None = None
    template: str | None = None
    reason: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def described(self) -> dict[str, Any]:
        """The filters given (for the audit trail), ids left out: the rows name them."""
        return {k: jsonable(v) for k, v in self.params().items() if v is not None and k != "ids"}


def dead_count(conn: Connection, selection: Selection) -> tuple[int, int, datetime]:
    """(matching dead letters, of which token emails, the time they were counted)."""
    row = conn.execute(query("dead_count"), selection.params()).fetchone()
    assert row is not None  # noqa: S101 -- an aggregate returns one row
    return int(row[0]), int(row[1]), row[2]


def _in_batches(
    conn: Connection, name: str, selection: Selection, actor: Actor, *, size: int,
    progress: Progress | None, each: Callable[[list[Any]], None] | None = None,
) -> int:  # fmt: skip
    """Run batch query ``name`` until it finds nothing; returns the rows it touched. Rows go
    in (updated_at, id) order after a cursor, and only those dead when the run began: each
    at most once, even if a retried message dies again meanwhile."""
    snapshot = dead_count(conn, selection)[2]
    cursor: tuple[datetime, int] = (datetime.min.replace(tzinfo=UTC), 0)
    done = 0
    audit = actor.params(selection.described())
    while True:
        params = {**selection.params(), **audit, "snapshot": snapshot, "limit": size}
        with admin_audit.refusals_as_errors():
            cursor_at = {"after_at": cursor[0], "after_id": cursor[1]}
            batch = conn.execute(query(name), {**params, **cursor_at}).fetchall()
        if not batch:
            return done
        cursor = max((r[-1], r[0]) for r in batch)
        done += len(batch)
        if each:
            each(batch)
        if progress:
            progress.update(done)


def retry_refusals(conn: Connection, ids: Sequence[int]) -> list[str]:
    """Why each of ``ids`` cannot be retried (empty: all are dead letters)."""
    found = {i: (s, t) for i, s, t in conn.execute(query("message_states"), {"ids": list(ids)})}
    problems = []
    for i in ids:
        state, token = found.get(i, (None, False))
        if state is None:
            problems.append(f"message {i} does not exist")
        elif state == "cancelled":
            problems.append(f"message {i} was cancelled by an operator: it is never retried")
        elif state != "dead":
            problems.append(f"message {i} is {state}, not dead: only dead letters are retried")
        elif token:
            problems.append(f"message {i} is {NOT_RESENDABLE}")
    return problems


def dead_retry(
    conn: Connection, selection: Selection, *, channel: str, actor: Actor | None = None,
    batch: int = BATCH, progress: Progress | None = None,
) -> int:  # fmt: skip
    """Re-arm matching dead letters (pending, attempts 0, due now) batch by batch, waking
    the daemons of their queues after each batch; returns how many were re-armed."""

    def wake(rows: list[Any]) -> None:
        for queue in sorted({r[1] for r in rows}):
            conn.execute(query("wake"), {"channel": channel, "queue": queue})

    return _in_batches(
        conn, "dead_retry_batch", selection, actor or Actor.from_cli(), size=batch,
        progress=progress, each=wake,
    )  # fmt: skip


def dead_purge(
    conn: Connection, selection: Selection, *, actor: Actor | None = None, batch: int = BATCH,
    progress: Progress | None = None,
) -> int:  # fmt: skip
    """Delete matching dead letters (attempts cascade) batch by batch; returns how many."""
    return _in_batches(
        conn, "dead_purge_batch", selection, actor or Actor.from_cli(), size=batch,
        progress=progress,
    )  # fmt: skip
