"""The operators' audit trail (mailroom.audit, migration 0010) and the privilege check
that every operator command makes first.

Actions are functions of the database (migration 0020) that change the rows and write
their audit rows in one transaction (see the ``*_batch`` and ``cancel`` / ``send_now``
queries): this module only says who is acting and reads the trail back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg

from mailroom.outbox import query
from mailroom.text import CommandError

Connection = psycopg.Connection[Any]

# What each kind of command needs; mailroom_operator has all of it (grants_0008, 0010 and
# 0020). Since 0020 the operator writes nothing directly: each action is a function.
READS = (("mailroom.audit", "SELECT"), ("mailroom.outbox", "SELECT"))
_DEAD_ARGS = "timestamptz,timestamptz,bigint,integer,bigint[],text,text,text,timestamptz,timestamptz,text,text,uuid,text"  # fmt: skip  # noqa: E501 -- one signature
CANCELS = (*READS, ("mailroom.operator_cancel(bigint[],text,text,text,uuid)", "EXECUTE"))
SENDS_NOW = (*READS, ("mailroom.operator_send_now(bigint[],text,text,text,uuid)", "EXECUTE"))
RETRIES = (*READS, (f"mailroom.operator_dead_retry({_DEAD_ARGS})", "EXECUTE"))
PURGES = (*READS, (f"mailroom.operator_dead_purge({_DEAD_ARGS})", "EXECUTE"))
ACTS = tuple(dict.fromkeys((*CANCELS, *SENDS_NOW, *RETRIES, *PURGES)))  # the console's


def require(conn: Connection, command: str, needs: tuple[tuple[str, str], ...] = READS) -> None:
    """Refuse (exit 3) before doing anything when the connected role lacks a privilege the
    command needs, naming it. The database enforces the same on every statement; this
    is the operator-friendly early answer."""
    for name, privilege in needs:
        if privilege == "EXECUTE":
            params = {"function": name}
            row = conn.execute(query("operator_function_privilege"), params).fetchone()
            shown = "function " + name.partition("(")[0]
        else:
            params = {"table": name, "privilege": privilege}
            row = conn.execute(query("operator_privilege"), params).fetchone()
            shown = name
        assert row is not None  # noqa: S101 -- a SELECT of scalars returns one row
        role, allowed = row
        if not allowed:
            raise CommandError(
                f"`mailroom {command}` needs {privilege} on {shown}, which role {role} "
                "lacks: connect as a member of mailroom_operator",
                3,
            )


@contextlib.contextmanager
def refusals_as_errors() -> Iterator[None]:
    """An action function's refusal of its arguments (SQLSTATE 22023, "mailroom: ...",
    migration 0020) as a one-line CommandError (exit 1), for the CLI and the console
    alike; nothing was changed (the function's transaction rolled back)."""
    try:
        yield
    except psycopg.errors.InvalidParameterValue as exc:
        message = (exc.diag.message_primary or "").strip()
        if not message.startswith("mailroom: "):
            raise
        raise CommandError(
            "refused, nothing changed: " + message.removeprefix("mailroom: "), 1
        ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting and how, for the audit rows of one command; ``action_id`` ties the
    rows of its batches together."""

    operator: str
    via: str = "cli"
    reason: str | None = None
    action_id: uuid.UUID = dataclasses.field(default_factory=uuid.uuid4)

    @classmethod
    def from_cli(cls, reason: str | None = None) -> Actor:
        try:
            name = getpass.getuser()  # $LOGNAME, $USER, ... then the password database
        except (OSError, KeyError):
            name = "unknown"
        # the functions (0020) take 1 to 200 characters: informative, so shortened, not refused
        return cls(operator=name.strip()[:200] or "unknown", via="cli", reason=reason)

    def params(self, selection: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "action_id": self.action_id,
            "operator": self.operator,
            "via": self.via,
            "audit_reason": self.reason,
            "selection": None if selection is None else json.dumps(selection, default=str),
        }


_AUDIT = ["at", "actor", "operator", "via", "action", "messages", "reason"]


def audit_of(conn: Connection, message_id: int) -> list[dict[str, Any]] | None:
    """The audit entries naming a message, oldest first (None: this role may not read
    the trail)."""
    row = conn.execute(
        query("operator_privilege"), {"table": "mailroom.audit", "privilege": "SELECT"}
    ).fetchone()
    if row is None or not row[1]:
        return None
    rows = conn.execute(query("audit_of_message"), {"id": message_id}).fetchall()
    return [dict(zip(_AUDIT, r, strict=True)) for r in rows]


def recent(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest operator actions (one line per command, batches summed), newest first."""
    rows = conn.execute(query("audit_recent"), {"limit": limit}).fetchall()
    return [dict(zip(_AUDIT, r, strict=True)) for r in rows]
