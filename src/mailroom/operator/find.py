"""Find, cancel and send-now (``mailroom find | cancel | send-now``, the console's search and
actions): any message, whatever its state, as functions over a connection returning data.

A search by recipient (what the operator typed, parsed by operator/search.py) reads
mailroom.outbox_recipients (sql/0029) through its indexes; any other search reads the
outbox newest first by id.

Cancel and send-now write their audit row in the same statement as the change (queries
``cancel`` and ``send_now``). Both are all-or-nothing for the ids given: when one of them
cannot be acted on, nothing is changed and every refusal is listed (exit 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.operator import audit as admin_audit
from mailroom.operator import search
from mailroom.operator.audit import Actor
from mailroom.outbox import query
from mailroom.text import CommandError, masker

Connection = psycopg.Connection[Any]

STATUSES = ("pending", "scheduled", "retrying", "sending", "sent", "dead", "cancelled")
_FIELDS = ("to", "cc", "bcc")  # the order a recipient search's matched fields are shown in
CANCELLABLE = ("pending", "retrying")  # scheduled messages are pending ones not yet due


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    """What ``find`` (and the console's search) looks for; None means "any".

    ``recipient`` is a search as typed (operator/search.py: an address in any form,
    ``@domain`` or ``prefix*``), or a :class:`search.Wanted` already parsed."""

    recipient: str | search.Wanted | None = None
    idempotency_key: str | None = None
    ses_id: str | None = None
    statuses: list[str] | None = None
    template: str | None = None
    queue: str | None = None
    since: datetime | None = None
    before: datetime | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statuses or ()) - set(STATUSES))
        if unknown:
            raise CommandError(f"unknown status {', '.join(unknown)}: use {', '.join(STATUSES)}")
        if isinstance(self.recipient, str):
            object.__setattr__(self, "recipient", search.parse(self.recipient))

    def wanted(self) -> search.Wanted | None:
        return self.recipient if isinstance(self.recipient, search.Wanted) else None

    def params(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del found["recipient"]
        wanted = self.wanted()
        return found | (wanted.params() if wanted else {})


_FOUND = [
    "id", "queue", "status", "template", "to", "attempts", "created_at", "next_attempt_at",
    "sent_at", "ses_id", "reason", "token", "matched",
]  # fmt: skip


def find(
    conn: Connection, wanted: Filter, *, limit: int = 50, cursor: int | None = None,
    reveal: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:  # fmt: skip
    """A page of matching messages, newest first, and the cursor of the next page (None:
    this was the last). A recipient search says which fields matched (``matched``: to, cc,
    bcc) and is newest first by enqueue time; otherwise ``matched`` is None."""
    params = {**wanted.params(), "limit": limit + 1, "cursor": cursor, "cursor_at": None}
    if wanted.wanted() is None:
        rows = conn.execute(query("find_messages"), params).fetchall()
    else:
        if cursor is not None:
            row = conn.execute(query("message_created_at"), {"id": cursor}).fetchone()
            if row is None:
                raise CommandError(f"message {cursor} of the cursor is gone (purged): search "
                                   "again from the first page")  # fmt: skip
            params["cursor_at"] = row[0]
        # unprepared: planned with the values, so that the search's NULL branches fold away
        rows = conn.execute(query("find_by_recipient"), params, prepare=False).fetchall()
    shown = masker(reveal)
    now = datetime.now(UTC)
    found = [dict(zip(_FOUND, row, strict=True)) for row in rows[:limit]]
    for item in found:
        item["to"] = shown(item["to"])
        item["reason"] = shown(item["reason"])
        item["scheduled"] = item["status"] == "pending" and item["next_attempt_at"] > now
        if item["matched"] is not None:
            item["matched"] = [f for f in _FIELDS if f in item["matched"]]
    more = found[-1]["id"] if len(rows) > limit else None
    return found, more


def unsearched_below(conn: Connection) -> int:
    """While an upgrade to 0029 is filling in older messages' recipients: the id at or
    below which messages are not found by recipient yet (0: every message is)."""
    row = conn.execute(query("recipients_backfill_state")).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def incomplete_notice(below: int) -> str | None:
    """What a recipient search says while older messages are not searchable yet."""
    if not below:
        return None
    return (f"messages up to id {below} are not searchable by recipient yet: `mailroom "
            "migrate` is still filling them in (docs/operations.md, 'Upgrading to recipient "
            "search')")  # fmt: skip


# -- acting on messages ---------------------------------------------------------------------


def refusals(conn: Connection, ids: Sequence[int], action: str) -> list[str]:
    """Why each of ``ids`` cannot be cancelled / sent now (empty: all can)."""
    rows = conn.execute(query("act_states"), {"ids": list(ids)}).fetchall()
    found = {i: (s, token, secret, due) for i, s, token, secret, due in rows}
    problems = []
    for i in ids:
        if i not in found:
            problems.append(f"message {i} does not exist")
            continue
        state, token, secret, due = found[i]
        if state not in CANCELLABLE:
            hint = {
                "sending": "a daemon is sending it now",
                "dead": "use `mailroom dead retry` for dead letters"
                if action == "send-now" else "it is already final",
            }.get(state, "it is already final")  # fmt: skip
            problems.append(f"message {i} is {state}: {hint}")
        elif action == "send-now" and due:
            problems.append(f"message {i} is already due: a daemon takes it next")
        elif action == "send-now" and token and not secret:
            problems.append(f"message {i} is a token email whose secret is gone: it cannot be "
                            "signed again (the user must ask again)")  # fmt: skip
    return problems


def cancel(conn: Connection, ids: Sequence[int], actor: Actor) -> list[int]:
    """Cancel the cancellable ones of ``ids``; returns those cancelled."""
    with admin_audit.refusals_as_errors():
        rows = conn.execute(query("cancel"), {"ids": list(ids), **actor.params()}).fetchall()
    return [int(r[0]) for r in rows]


def send_now(conn: Connection, ids: Sequence[int], actor: Actor, *, channel: str) -> list[int]:
    """Make the waiting ones of ``ids`` due now and wake their daemons; returns them."""
    with admin_audit.refusals_as_errors():
        rows = conn.execute(query("send_now"), {"ids": list(ids), **actor.params()}).fetchall()
    for queue in sorted({r[1] for r in rows}):
        conn.execute(query("wake"), {"channel": channel, "queue": queue})
    return [int(r[0]) for r in rows]
