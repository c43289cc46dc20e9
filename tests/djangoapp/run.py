"""Run one scenario of the Django project in this process and print its results as JSON:

    python run.py psycopg|psycopg2 SCENARIO

(Django settings are per process.) Django picks psycopg 3 whenever ``import psycopg``
succeeds: tests/test_django.py runs the psycopg2 scenarios with psycopg 3 made unimportable
the supported way (docs/applications.md, "Drivers"), and this file only checks that it is."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
driver, scenario = sys.argv[1], sys.argv[2]
import django  # noqa: E402

django.setup()

from django.core import mail  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils.translation import gettext_lazy  # noqa: E402

import mailroom  # noqa: E402

out: dict[str, object] = {"driver": connection.Database.__name__}
if driver == "psycopg2":
    connection.ensure_connection()
    out["psycopg_imported"] = "psycopg" in sys.modules  # by mailroom, or by Django
if scenario == "migrate":
    call_command("migrate", verbosity=0)
elif scenario == "signup":
    client = Client(raise_request_exception=False)
    out["ok"] = client.post("/signup", {"login": "ann"}).status_code
    out["failed"] = client.post("/signup", {"login": "bob", "fail": "1"}).status_code
elif scenario == "apis":
    with transaction.atomic():
        mail.send_mail("Rolled back", "x", None, ["gone@example.com"])
        transaction.set_rollback(True)
    out["send_mail"] = mail.send_mail("Plain", "Just text", None, ["Ann <ann@bücher.de>"])
    out["mass"] = mail.send_mass_mail(
        [
            ("One", "1", None, ["one@example.com"]),
            ("Two", "2", "x@example.com", ["two@example.com"]),
        ]
    )
    attached = mail.EmailMultiAlternatives(
        "Invoice",
        "See attached",
        to=["ann@example.com"],
        cc=["Cc Person <cc@example.com>"],
        bcc=["hidden@example.com"],
        headers={"X-Order": "42"},
    )
    attached.attach_alternative("<p>See attached</p>", "text/html")
    attached.attach("invoice.txt", "total: 42\n", "text/plain")
    out["attached"] = attached.send()
    templated = mail.EmailMessage(to=["t@example.com"])
    templated.mailroom = {"template": "welcome", "data": {"login": "t"}, "queue": "other"}
    out["template"] = templated.send()
    out["bad_silent"] = mail.send_mail("Bad", "x", None, ["not an address"], fail_silently=True)
    try:
        mail.send_mail("Bad", "x", None, ["not an address"])
    except Exception as exc:
        out["bad_loud"] = type(exc).__name__
elif scenario == "checks":
    lazy = mail.EmailMultiAlternatives(
        gettext_lazy("Lazy subject"), gettext_lazy("Lazy body"), gettext_lazy("shop@example.com"),
        [gettext_lazy("Lazy <lazy@example.com>")], reply_to=[gettext_lazy("help@example.com")],
    )  # fmt: skip
    lazy.attach_alternative(gettext_lazy("<p>Lazy</p>"), "text/html")
    out["lazy"] = lazy.send()
    lazy_raw = mail.EmailMessage(gettext_lazy("Lazy raw"), gettext_lazy("Body"), "shop@example.com",
                                 [gettext_lazy("lazy@example.com")])  # fmt: skip
    lazy_raw.attach("a.txt", "attached", "text/plain")
    out["lazy_raw"] = lazy_raw.send()
    refused = {
        "to": {"to": ["not an address"]},
        "cc": {"to": ["a@example.com"], "cc": ["A <a@example.com>, B <b@example.com>"]},
        "bcc": {"to": ["a@example.com"], "bcc": ["x@bad..example.com"]},
        "reply_to": {"to": ["a@example.com"], "reply_to": ["Help <help@>"]},
        "from": {"to": ["a@example.com"], "from_email": "shop@localhost"},
        "newline": {"to": ["Evil\r\nBcc: x@example.org <a@example.com>"]},
    }
    errors = {}
    for name, kwargs in refused.items():
        try:
            mail.EmailMessage("Subject", "Body", **kwargs).send()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    out["errors"] = errors
    keyed = []
    for body in ("First", "First", "Other"):
        message = mail.EmailMessage("Key", body, to=["key@example.com"])
        message.mailroom = {"idempotency_key": "key:1"}
        try:
            keyed.append(message.send())
        except mailroom.IdempotencyConflict as exc:
            keyed.append(f"{type(exc).__name__}: {exc}")
    out["keyed"] = keyed
print(json.dumps(out))
