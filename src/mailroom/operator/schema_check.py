"""``mailroom check --schema``: mailroom objects bound to something outside pg_catalog.

A CHECK constraint, default, index expression, view, trigger WHEN clause, policy or
SQL-standard function body binds its operators and functions when it is created; one
created while another schema (public) came first on the search_path may call an overload
planted there on every write (issue 18). This lists every such dependency from pg_depend;
the catalogs are readable by every role, so the owner, the operator (or any role) can run
it. Migration 0024 rebuilds them.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mailroom.config import settings as configuration

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


def cmd_check_schema(args: argparse.Namespace) -> int:
    from mailroom import outbox  # noqa: PLC0415

    cfg = configuration.load(require_database=True)
    with outbox.connect(cfg.database_url, connect_timeout=10) as conn:
        found = bindings(conn)
    if args.json:
        document = {
            "ok": not found,
            "bindings": [{"object": obj, "depends_on": dep} for obj, dep in found],
            "fix": FIX if found else None,
        }
        print(json.dumps(document, indent=2))
    elif found:
        for obj, dep in found:
            print(f"mailroom {obj} depends on {dep}")
        print(f"{len(found)} binding(s) outside pg_catalog and mailroom: {FIX}")
    else:
        print("schema: nothing in mailroom depends on an object outside pg_catalog and mailroom")
    return 1 if found else 0
