"""docs/operations.md's table of grants is the catalog's: every privilege any mailroom
role holds on the schema, a table, a column or a function, and nothing granted to PUBLIC.
A migration that grants or revokes anything fails this test until the table says so
(the failure prints the rows as the catalog has them)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import psycopg

from mailroom import migrate

DOC = Path(__file__).parent.parent / "docs" / "operations.md"
ROLES = ("mailroom_operator", "mailroom_viewer", "mailroom_daemon", "mailroom_app")
ORDER = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER",
         "USAGE", "EXECUTE", "CREATE"]  # fmt: skip
KIND = {"r": "table", "v": "view", "m": "view", "S": "sequence", "p": "table"}

# (object, role, privilege, column or NULL), for mailroom's roles and PUBLIC (grantee 0)
GRANTS = """
SELECT 'schema mailroom', a.grantee, a.privilege_type, NULL
FROM pg_catalog.pg_namespace AS n, pg_catalog.aclexplode(n.nspacl) AS a
WHERE n.nspname OPERATOR(pg_catalog.=) 'mailroom'
UNION ALL
SELECT c.relkind::text || ' ' || c.relname, a.grantee, a.privilege_type, NULL
FROM pg_catalog.pg_class AS c
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace,
     pg_catalog.aclexplode(c.relacl) AS a
WHERE n.nspname OPERATOR(pg_catalog.=) 'mailroom'
UNION ALL
SELECT c.relkind::text || ' ' || c.relname, a.grantee, a.privilege_type, att.attname::text
FROM pg_catalog.pg_attribute AS att
JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) att.attrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace,
     pg_catalog.aclexplode(att.attacl) AS a
WHERE n.nspname OPERATOR(pg_catalog.=) 'mailroom'
UNION ALL
SELECT 'function ' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes)
       || ')', a.grantee, a.privilege_type, NULL
FROM pg_catalog.pg_proc AS p
JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace,
     pg_catalog.aclexplode(COALESCE(
         p.proacl, pg_catalog.acldefault('f', p.proowner))) AS a
WHERE n.nspname OPERATOR(pg_catalog.=) 'mailroom'
"""


def catalog_rows(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """The table's rows as the catalog says, and whatever PUBLIC holds."""
    roles = dict(conn.execute("SELECT oid, rolname FROM pg_catalog.pg_roles").fetchall())
    roles[0] = "PUBLIC"
    held: dict[str, dict[str, dict[str, list[str]]]] = {}
    public: list[str] = []
    for obj, grantee, privilege, column in conn.execute(GRANTS).fetchall():
        role = roles[grantee]
        if role == "PUBLIC":
            kind, _, name = obj.partition(" ")
            public.append(f"{KIND.get(kind, kind)} {name}: {privilege}")
        if role not in ROLES:
            continue
        kind, _, name = obj.partition(" ")
        label = f"{KIND.get(kind, kind)} `{name}`"
        columns = held.setdefault(label, {}).setdefault(role, {}).setdefault(privilege, [])
        columns.append(column or "")
    rows = []
    first = {"schema": 0, "table": 1, "view": 2, "sequence": 3, "function": 4}
    for label in sorted(held, key=lambda label: (first[label.split()[0]], label)):
        cells = []
        for role in ROLES:
            privileges = held[label].get(role, {})
            shown = []
            for privilege in sorted(privileges, key=ORDER.index):
                cols = sorted(c for c in privileges[privilege] if c)
                whole = "" in privileges[privilege]
                if whole:
                    shown.append(privilege)
                if cols:
                    shown.append(f"{privilege} ({', '.join(cols)})")
            cells.append(", ".join(shown))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows, sorted(public)


def documented_rows() -> list[str]:
    text = DOC.read_text()
    block = re.search(r"<!-- grants:begin -->\n(.*?)<!-- grants:end -->", text, re.S)
    assert block, "docs/operations.md has no <!-- grants:begin --> ... <!-- grants:end --> table"
    lines = [line.strip() for line in block[1].splitlines() if line.startswith("| ")]
    return [line for line in lines[1:] if not line.startswith("|---")]  # without the header


def test_the_documented_grants_are_the_catalogs(conn: psycopg.Connection[Any]) -> None:
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    actual, public = catalog_rows(conn)
    documented = documented_rows()
    diff = "\n".join(difflib.unified_diff(documented, actual, "docs", "catalog", lineterm=""))
    assert documented == actual, f"docs/operations.md's grants differ from the catalog:\n{diff}"
    assert public == [], f"granted to PUBLIC in the mailroom schema: {public}"


def test_the_comparison_sees_a_grant_the_docs_do_not_name(
    conn: psycopg.Connection[Any],
) -> None:
    # the test above can fail: one extra column grant changes the rows it compares
    migrate.migrate(conn, channel="token_insert", modules=("lifecycle",))
    before, _ = catalog_rows(conn)
    conn.execute("GRANT UPDATE (template_data) ON mailroom.outbox TO mailroom_daemon")
    conn.execute("GRANT EXECUTE ON FUNCTION mailroom.prune_events(float8, integer) TO PUBLIC")
    after, public = catalog_rows(conn)
    assert before != after
    assert any("template_data" in row for row in after)
    assert any(entry.startswith("function prune_events(") for entry in public)
