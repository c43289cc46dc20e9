"""The Django email backend in a real Django project (tests/djangoapp), with psycopg 3 and
with psycopg2 as Django's driver, against the real PostgreSQL as an application role, then
through the real daemon and the SES stand-in."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conftest import wait_for
from sesv2_standin import SesStandin

pytestmark = pytest.mark.slow
RUN = Path(__file__).parent / "djangoapp" / "run.py"


def django(dsn: str, driver: str, scenario: str) -> dict[str, Any]:
    env = {**os.environ, "DJANGOAPP_DSN": dsn}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, str(RUN), driver, scenario], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["driver"] == driver
    return result


@pytest.fixture
def app_dsn(login_as: Callable[..., str], db: str) -> Iterator[str]:
    dsn = login_as("mailroom_app")
    role = sql.Identifier(psycopg.conninfo.conninfo_to_dict(dsn)["user"])
    with psycopg.connect(db, autocommit=True) as owner:  # Django creates its own tables
        owner.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
    yield dsn
    with psycopg.connect(db, autocommit=True) as owner:  # so that the role can be dropped
        owner.execute(sql.SQL("DROP OWNED BY {}").format(role))


def rows(db: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db) as conn:
        return conn.execute(
            "SELECT to_addresses, cc_addresses, bcc_addresses, from_address, subject, body_text,"
            " body_html, raw_mime, template, template_data, queue, priority, reply_to_addresses"
            " FROM mailroom.outbox ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_view_that_commits_sends_and_one_that_fails_sends_nothing(
    driver: str, app_dsn: str, db: str, spawn: Callable[..., Any], standin: SesStandin
) -> None:
    django(app_dsn, driver, "migrate")
    result = django(app_dsn, driver, "signup")
    assert result["ok"] == 200
    assert result["failed"] == 500
    with psycopg.connect(db) as conn:
        users = conn.execute("SELECT username FROM auth_user").fetchall()
    assert users == [("ann",)]  # bob's request rolled back: his user and his mail
    stored = rows(db)
    assert len(stored) == 1
    to, _cc, _bcc, sender, subject, text, html, raw, *_, priority, reply_to = stored[0]
    assert to == ['"Ann Smith" <ann@example.com>']
    assert sender == "=?UTF-8?B?QsO8Y2hlciBTaG9w?= <shop@xn--bcher-kva.example>"
    assert (subject, text, html, raw, priority) == (
        "Welcome, Ännchen", "Hello ann", "<p>Hello ann</p>", None, 5,
    )  # fmt: skip
    assert reply_to == ['"Help" <help@example.com>']

    daemon = spawn()
    wait_for(lambda: len(standin.sent()) == 1)
    daemon.signal(15)
    assert daemon.wait() == 0
    sent = standin.sent()[0]
    assert sent["to"] == ['"Ann Smith" <ann@example.com>']
    assert sent["from"] == sender
    assert (sent["subject"], sent["text"], sent["html"]) == (subject, text, html)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_every_django_mail_api(
    driver: str, app_dsn: str, db: str, spawn: Callable[..., Any], standin: SesStandin
) -> None:
    result = django(app_dsn, driver, "apis")
    assert result["send_mail"] == 1
    assert result["mass"] == 2
    assert result["attached"] == 1
    assert result["template"] == 1
    assert result["bad_silent"] == 0
    assert result["bad_loud"] == "IntegrityError"  # Django wraps the check_violation
    stored = rows(db)
    subjects = [r[4] for r in stored]
    assert "Rolled back" not in subjects
    assert subjects == ["Plain", "One", "Two", None, None]
    plain, _one, two, attached, templated = stored
    assert plain[0] == ['"Ann" <ann@xn--bcher-kva.de>']
    assert two[3] == "x@example.com"
    # attachments and custom headers: raw MIME built by Django, envelope from the fields
    assert attached[0:3] == (["ann@example.com"], ['"Cc Person" <cc@example.com>'],
                             ["hidden@example.com"])  # fmt: skip
    mime = email.message_from_bytes(bytes(attached[7]), policy=email.policy.default)
    assert mime["X-Order"] == "42"
    assert mime["Bcc"] is None  # never in the headers readers see
    assert [p.get_filename() for p in mime.iter_attachments()] == ["invoice.txt"]
    assert templated[8:11] == ("welcome", {"login": "t"}, "other")

    daemon = spawn()
    wait_for(lambda: len(standin.sent()) == 4)  # the template is in another queue
    daemon.signal(15)
    assert daemon.wait() == 0
    raw_sent = [s for s in standin.sent() if s["raw"]]
    assert len(raw_sent) == 1
    assert raw_sent[0]["raw"] == bytes(attached[7])  # byte-identical
    assert raw_sent[0]["bcc"] == ["hidden@example.com"]
