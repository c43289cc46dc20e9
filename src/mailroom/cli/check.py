"""The command ``check --schema``: prints the mailroom objects bound to something outside
pg_catalog (operator/schema_check.py finds them) and exits 1 when there are any."""

from __future__ import annotations

import argparse
import json

from mailroom.config import settings as configuration
from mailroom.operator.schema_check import FIX, bindings


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
