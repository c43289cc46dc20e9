"""The hearing-back scenarios of tests/test_changes_django.py, in a Django process of their
own (Django's settings are per process):

    python hear.py send TO REJECTED   send a message that will bounce and one that SES
                                      refuses; print their mailroom_id
    python hear.py once           manage.py mailroom_events --once --json, signals recorded
    python hear.py follow         manage.py mailroom_events (until SIGTERM), a line per signal

HEAR_FAIL=STATE makes a receiver of that state's signal raise."""

import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
import django

django.setup()

from django.core import mail  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.management.base import CommandError  # noqa: E402

from mailroom.djangoapp import signals  # noqa: E402

scenario = sys.argv[1]
out: dict[str, object] = {}
fired: list[dict[str, object]] = []


def receiver(state: str):  # type: ignore[no-untyped-def]
    def receive(sender, message_id, change, **kwargs):  # type: ignore[no-untyped-def]
        fired.append({
            "signal": f"email_{state}", "sender": sender.__name__, "message_id": message_id,
            "change": change.id, "reason": change.reason, "bounce_type": change.bounce_type,
            "recipient": change.recipient,
        })  # fmt: skip
        if scenario == "follow":
            print(json.dumps(fired[-1]), flush=True)
        if os.environ.get("HEAR_FAIL") == state:
            raise RuntimeError(f"a receiver of email_{state} failed")

    return receive


receivers = [receiver(state) for state in signals.BY_STATE]  # kept: signals hold weak refs
for state, receive in zip(signals.BY_STATE, receivers, strict=True):
    signals.BY_STATE[state].connect(receive)

if scenario == "send":
    message = mail.EmailMessage("Welcome", "Hello", to=[sys.argv[2]])
    out["sent"] = message.send()
    out["id"] = message.mailroom_id
    again = mail.EmailMessage("Welcome", "Hello", to=[sys.argv[2]])
    again.mailroom = {"idempotency_key": "hear:1"}
    again.send()
    repeat = mail.EmailMessage("Welcome", "Hello", to=[sys.argv[2]])
    repeat.mailroom = {"idempotency_key": "hear:1"}
    repeat.send()
    out["keyed"] = [again.mailroom_id, repeat.mailroom_id]
    rejected = mail.EmailMessage("Welcome", "Hello", to=[sys.argv[3]])
    rejected.send()
    out["rejected_id"] = rejected.mailroom_id
    refused = mail.EmailMessage("Bad", "x", to=["not an address"])
    out["refused_sent"] = refused.send(fail_silently=True)
    out["refused_id"] = refused.mailroom_id
elif scenario in ("once", "follow"):
    buffer = io.StringIO()
    words = ["--once", "--json"] if scenario == "once" else ["--json", "--poll", "30"]
    try:
        call_command("mailroom_events", *words, stdout=buffer)
        out["code"] = 0
    except CommandError as exc:
        out["code"] = exc.returncode
        out["error"] = str(exc)
    out["outcome"] = json.loads(buffer.getvalue()) if buffer.getvalue() else None
    out["fired"] = fired
print(json.dumps(out))
