"""``manage.py mailroom_events``: fire mailroom.djangoapp's signals from the changes feed
(see mailroom.djangoapp.delivery for the delivery policy)."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from django.conf import settings  # type: ignore[import-untyped]
from django.core.management.base import BaseCommand, CommandError  # type: ignore[import-untyped]
from django.db import (  # type: ignore[import-untyped]
    DEFAULT_DB_ALIAS,
    DatabaseError,
    connections,
)

from mailroom.djangoapp.delivery import deliver
from mailroom.feed import BATCH, POLL

EPILOG = """\
examples:
  manage.py mailroom_events                 run for ever: catch up, then wait (LISTEN)
  manage.py mailroom_events --once          catch up and exit (from cron)
  manage.py mailroom_events --once --json   the same, the outcome as JSON

Each change fires email_sent, email_delivered, email_bounced, email_complained,
email_dead or email_cancelled (mailroom.djangoapp.signals); the cursor is stored (per
login role and --consumer) after every receiver of a change ran. A receiver that raises
is logged and its change retried (after 1 s, doubling up to 60 s; --once exits 1). SIGTERM
or SIGINT: exits 0 after the change being handled.

exit codes:
  0  caught up (--once) or stopped by SIGTERM/SIGINT
  1  a receiver raised (--once; the change is retried next run) or the database failed
  2  bad arguments
"""


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _batch(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError(f"must be 1 to 10000, not {text}")
    return value


class Command(BaseCommand):  # type: ignore[misc]  # Django has no type stubs
    help = "Fire mailroom's email_* signals for what became of this project's mail."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.epilog = EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--once", action="store_true", help="catch up, then exit (instead of waiting for more)"
        )
        parser.add_argument(
            "--consumer",
            default="django",
            help="the stored cursor's name (default: django); one per independent set of receivers",
        )
        parser.add_argument(
            "--database",
            default=None,
            help="the database alias (default: MAILROOM_DATABASE or default)",
        )
        parser.add_argument(
            "--batch",
            type=_batch,
            default=BATCH,
            help=f"changes read per round trip (default {BATCH})",
        )
        parser.add_argument(
            "--poll",
            type=_positive,
            default=POLL,
            help=f"seconds between reads when nothing woke it (default {POLL:g})",
        )
        parser.add_argument("--json", action="store_true", help="print the outcome as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"] or getattr(settings, "MAILROOM_DATABASE", DEFAULT_DB_ALIAS)
        stopping = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: stopping.set())
        try:
            outcome = deliver(using, options["consumer"], once=options["once"],
                              batch=options["batch"], poll=options["poll"],
                              stop=stopping.is_set)  # fmt: skip
        except (DatabaseError, connections[using].Database.Error) as exc:  # --once only
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line
            raise CommandError(f"the database failed: {first}", returncode=1) from exc
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if options["json"]:
            self.stdout.write(json.dumps({"fired": outcome.fired, "cursor": outcome.cursor,
                                          "failed_change": outcome.failed}))  # fmt: skip
        else:
            self.stdout.write(f"fired the signals of {outcome.fired} changes; cursor"
                              f" {outcome.cursor}")  # fmt: skip
        if outcome.failed is not None:
            raise CommandError(
                f"a receiver raised for change {outcome.failed}: it is retried on the next run",
                returncode=1,
            )
