"""The Django email backend in a real Django project (tests/djangoapp), with psycopg 3 and
with psycopg2 as Django's driver, against the real PostgreSQL as an application role, then
through the real daemon and the SES stand-in."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
import sys
import tempfile
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


def without_psycopg3(env: dict[str, str], root: Path) -> dict[str, str]:
    """The environment of a psycopg2 project that installed mailroom[django] without
    [binary] and set PSYCOPG_IMPL=binary, as docs/applications.md says: psycopg then loads
    only psycopg-binary, and ``import psycopg`` fails. This test venv has psycopg-binary
    installed; a package of that name that cannot be imported, first on the path, stands
    for its absence."""
    shadow = root / "psycopg_binary"
    shadow.mkdir(parents=True, exist_ok=True)
    (shadow / "__init__.py").write_text('raise ImportError("psycopg-binary is not installed")\n')
    path = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return {**env, "PSYCOPG_IMPL": "binary", "PYTHONPATH": path}


def django(dsn: str, driver: str, scenario: str) -> dict[str, Any]:
    env = {**os.environ, "DJANGOAPP_DSN": dsn}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if driver == "psycopg2":
        shadow = Path(tempfile.gettempdir()) / f"mailroom-nopsycopg3-{os.getpid()}"
        env = without_psycopg3(env, shadow)
    done = subprocess.run(
        [sys.executable, str(RUN), driver, scenario], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["driver"] == driver
    if driver == "psycopg2":
        assert result["psycopg_imported"] is False  # mailroom's side needs no psycopg 3
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
    assert result["bad_loud"] == "ValueError"  # checked before the database, as Django does
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


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_lazy_strings_bad_addresses_and_key_conflicts(driver: str, app_dsn: str, db: str) -> None:
    result = django(app_dsn, driver, "checks")
    assert (result["lazy"], result["lazy_raw"]) == (1, 1)
    errors = result["errors"]
    assert errors["to"] == "ValueError: Invalid address 'not an address' in to"
    assert errors["cc"].startswith(
        "ValueError: Invalid address 'A <a@example.com>, B <b@example.com>' in cc: it holds"
        " more than one mailbox"
    )
    assert errors["bcc"] == "ValueError: Invalid address 'x@bad..example.com' in bcc"
    assert errors["reply_to"] == "ValueError: Invalid address 'Help <help@>' in reply_to"
    assert errors["from"] == "ValueError: Invalid address 'shop@localhost' in from"
    assert errors["newline"].startswith("BadHeaderError: Header values can't contain newlines")
    assert "for header 'To'" in errors["newline"]
    first, again, other = result["keyed"]
    assert (first, again) == (1, 1)
    assert other.startswith('IdempotencyConflict: idempotency key "key:1" already names message')
    stored = rows(db)
    assert len(stored) == 3  # the two lazy messages and one keyed: nothing refused was stored
    lazy, lazy_raw, keyed = stored
    assert lazy[0] == ['"Lazy" <lazy@example.com>']
    assert lazy[3:7] == ("shop@example.com", "Lazy subject", "Lazy body", "<p>Lazy</p>")
    assert lazy[12] == ["help@example.com"]
    mime = email.message_from_bytes(bytes(lazy_raw[7]), policy=email.policy.default)
    assert (mime["Subject"], mime["To"]) == ("Lazy raw", "lazy@example.com")
    assert keyed[5] == "First"


FRESH_DATABASES = """DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": {name!r},
        "USER": {user!r},
        "HOST": {host!r},
        "PORT": {port!r},
    }}
}}
"""
FIRST_TRY = """
import django
django.setup()
from django.core import mail
print(mail.send_mail("Hello", "First try", None, ["ann@example.com"]))
attached = mail.EmailMessage("Invoice", "See attached", to=["ann@example.com"])
attached.attach("a.txt", "x", "text/plain")
try:
    attached.send()
except ValueError as exc:
    print(exc)
"""


def test_a_fresh_startproject_sends_with_only_backend_and_databases_changed(
    app_dsn: str, db: str, tmp_path: Path, spawn: Callable[..., Any], standin: SesStandin
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "django", "startproject", "fresh", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    settings = tmp_path / "fresh" / "settings.py"
    text = settings.read_text()
    assert "DEFAULT_FROM_EMAIL" not in text  # Django's placeholder, webmaster@localhost
    params = psycopg.conninfo.conninfo_to_dict(app_dsn)
    databases = FRESH_DATABASES.format(
        name=params["dbname"], user=params["user"], host=params["host"],
        port=str(params.get("port", "5432")),
    )  # fmt: skip
    changed = re.sub(r"^DATABASES = \{\n.*?^\}\n", databases, text, flags=re.MULTILINE | re.DOTALL)
    assert changed != text
    settings.write_text(changed + '\nEMAIL_BACKEND = "mailroom.django.EmailBackend"\n')
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "fresh.settings"}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_TRY], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sent_count, refusal = done.stdout.strip().splitlines()
    assert sent_count == "1"
    # raw MIME carries its own From: the placeholder would reach the reader, so it asks
    assert refusal.startswith("Invalid address 'webmaster@localhost' in from")
    assert "set DEFAULT_FROM_EMAIL" in refusal
    stored = rows(db)
    assert len(stored) == 1
    assert stored[0][3] is None  # no sender named: the daemon's MAILROOM_SES_SOURCE

    daemon = spawn(MAILROOM_SES_SOURCE="Shop <shop@example.com>")
    wait_for(lambda: len(standin.sent()) == 1)
    daemon.signal(15)
    assert daemon.wait() == 0
    sent = standin.sent()[0]
    assert sent["from"] == '"Shop" <shop@example.com>'
    assert sent["to"] == ["ann@example.com"]
    assert (sent["subject"], sent["text"]) == ("Hello", "First try")
