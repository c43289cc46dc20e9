"""Every fenced block after a `<!-- runnable -->` line in README.md and docs/*.md is run
against a real database, as an application role: a snippet that does not run fails here.
Python snippets run as pasted: in a process of their own, given nothing but the environment
variables the docs name (DATABASE_URL, SQLALCHEMY_URL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy

from test_client import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^<!-- runnable -->\n```([\w-]+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Django examples run in a process of their own with the test project's settings
# (tests/djangoapp: Django's settings are per process), connected as the same role.
DJANGO_PRELUDE = """
import sys
sys.path.insert(0, {tests!r})
import os
os.environ["DJANGO_SETTINGS_MODULE"] = "djangoapp.settings"
import django
django.setup()
"""


def blocks() -> list[Any]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for n, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
            found.append(pytest.param(match[1], match[2], id=f"{path.name}-{n}-{match[1]}"))
    return found


KEY = re.compile(r"""idempotency_key(?:\s*=>?\s*|"\s*:\s*)['"]([^'"]+)['"]""")


def test_no_two_examples_share_an_idempotency_key() -> None:
    # run one after the other by an application, the second would be refused (issue 23)
    keys = [key for p in blocks() for key in KEY.findall(p.values[1])]
    assert len(keys) >= 3
    assert len(keys) == len(set(keys)), keys


def test_the_docs_have_runnable_examples_of_every_kind() -> None:
    kinds = {p.values[0] for p in blocks()}
    assert kinds == {"python", "python-django", "sql"}
    assert len(blocks()) >= 6


@pytest.mark.parametrize(("language", "code"), blocks())
def test_snippet_runs(language: str, code: str, login_as: Callable[..., str], db: str) -> None:
    dsn = login_as("mailroom_app")
    if language == "sql":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(code)  # type: ignore[arg-type]  # the docs' own text
        return
    url: sqlalchemy.URL = sqlalchemy_url(dsn, "psycopg2")
    env = {
        **os.environ, "DJANGOAPP_DSN": dsn, "DATABASE_URL": dsn,
        "SQLALCHEMY_URL": url.render_as_string(hide_password=False),
    }  # fmt: skip
    prelude = DJANGO_PRELUDE.format(tests=str(ROOT / "tests")) if language != "python" else ""
    done = subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    role = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    with psycopg.connect(db) as conn:  # every Python example enqueues, and commits
        row = conn.execute(
            "SELECT count(*) FROM mailroom.outbox WHERE enqueued_by = %s", (role,)
        ).fetchone()
    assert row is not None
    assert row[0] >= 1
