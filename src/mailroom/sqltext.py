"""The named queries of queries.sql, as text: what every module running mailroom's SQL
reads (outbox.py through psycopg, client.py through any driver). No driver imported here,
so that an application's side (mailroom.client, mailroom.django) loads without psycopg 3.
"""

from __future__ import annotations

import re
from importlib import resources


def _load_queries() -> dict[str, str]:
    return parse(resources.files("mailroom").joinpath("queries.sql").read_text(encoding="utf-8"))


def parse(text: str) -> dict[str, str]:
    """Each ``-- name:`` block of a queries.sql text, its comment lines left out (the
    benchmarks read another commit's file with it)."""
    queries: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = block.partition("\n")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name.strip()] = "\n".join(lines).strip()
    return queries


QUERIES = _load_queries()
