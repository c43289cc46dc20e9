"""Mailroom objects bound to something outside pg_catalog (``mailroom check --schema``).

A CHECK constraint, default, index expression, view, trigger WHEN clause, policy or
SQL-standard function body binds its operators and functions when it is created; one
created while another schema (public) came first on the search_path may call an overload
planted there on every write (issue 18). This lists every such dependency from pg_depend;
the catalogs are readable by every role, so the owner, the operator (or any role) can run
it. Migration 0024 rebuilds them.
"""

from __future__ import annotations

from typing import Any

FIX = (
    "run `mailroom migrate` as the schema owner (0024 rebuilds these bound to pg_catalog); "
    "what remains after it: docs/operations.md, 'Why nothing planted in public binds into "
    "mailroom'"
)


def bindings(conn: Any) -> list[tuple[str, str]]:
    """(object, what it depends on) for every foreign binding, sorted."""
    from mailroom.outbox import query  # noqa: PLC0415 -- the CLI imports lazily

    rows = conn.execute(query("schema_foreign_bindings")).fetchall()
    return [(str(obj), str(dep)) for obj, dep in rows]
