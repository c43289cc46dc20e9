"""Run one scenario of the Django project in this process and print its results as JSON:

    python run.py psycopg|psycopg2 SCENARIO

(Django settings are per process, and Django picks psycopg 3 whenever it is importable: a
process of its own can make it take psycopg2.)"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
driver, scenario = sys.argv[1], sys.argv[2]
if driver == "psycopg2":
    import psycopg  # mailroom needs it; Django must not see it

    sys.modules["psycopg"] = None  # type: ignore[assignment]
    import django.db.backends.postgresql.base  # settles on psycopg2

    sys.modules["psycopg"] = psycopg

import django  # noqa: E402 -- after the driver is settled

django.setup()

from django.core import mail  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402

out: dict[str, object] = {"driver": connection.Database.__name__}
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
print(json.dumps(out))
