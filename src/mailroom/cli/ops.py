"""The operator commands' parsers: ``status``, ``show``, ``send-test``, ``find``,
``cancel``, ``send-now``, ``queues``, ``stats`` and ``web`` (added with the console, issue
14), ``dead list | retry | purge`` and the suppressions'. commands.py's parser calls
``operator_commands``, which builds the shared option groups; each handler
(common.handler) runs an operator/ function, or mailroom.web, imported only when the
command runs."""

from __future__ import annotations

import argparse
import functools
import os
import textwrap
from typing import Any

from mailroom.cli.args import EXIT_CODES, OPERATOR_EXIT_CODES, command, message_id, port, seconds
from mailroom.cli.common import fail, handler, load
from mailroom.text import positive, when

# every command here is the operator's: its --help says so beside the exit codes
_command = functools.partial(command, exit_codes=OPERATOR_EXIT_CODES)


def add_commands(sub: Any, handler: Any, *, database: Any, revealing: Any, as_json: Any) -> None:
    """``handler("module.function")`` makes the handler running that admin function."""
    find = _command(
        sub, "find", "search messages in any state: by recipient, key, SES id, status, ...",
        description="Messages of every queue (or --queue), newest first, a page at a time. "
        "Filters combine. --to finds a recipient (to, cc or bcc) however it was written "
        "(\"Ann\" <Ann@Example.com>, spaces, an international domain); --domain every "
        "recipient at a domain; --prefix every recipient whose address starts so (one of the "
        "three; --to also takes @domain and prefix*, as the console's box does); the results "
        "say which field matched. "
        "--status takes pending, scheduled (pending, not yet due), retrying, sending, sent, "
        "dead, cancelled (repeat it or separate with commas); --since / --before bound the "
        "time it was enqueued. Addresses are masked unless --reveal.",
        examples="  mailroom find --to alice@example.com\n"
        "  mailroom find --to '\"Alice Smith\" <Alice@Example.com>' --since 2h --reveal\n"
        "  mailroom find --domain example.com --status dead\n"
        "  mailroom find --prefix alice@ex --json\n"
        "  mailroom find --ses-id 0100018f-...-000000 --json\n"
        "  mailroom find --status dead,retrying --template passwordrecoveryv1 --since 1d\n"
        "  mailroom find --status pending --limit 20 --cursor 81234   (the next page)\n",
        parents=[database, revealing, as_json],
    )  # fmt: skip
    find.add_argument("--to", metavar="ADDRESS", help="a recipient, in any form (see above)")
    find.add_argument("--domain", metavar="DOMAIN", help="every recipient at DOMAIN (@ optional)")
    find.add_argument("--prefix", metavar="TEXT", help="recipients whose address starts with TEXT")
    find.add_argument("--key", metavar="KEY", help="idempotency key")
    find.add_argument("--ses-id", metavar="ID", help="SES message id (of a sent message)")
    find.add_argument("--status", action="append", metavar="STATUS", help="see above")
    find.add_argument("--template", help="template name (or simple / raw)")
    find.add_argument("--since", type=when, help="enqueued at or after: 30m, 12h, 7d, ISO time")
    find.add_argument("--before", type=when, help="enqueued before: 30m, 12h, 7d, ISO time")
    find.add_argument("--limit", type=positive, default=50, help="rows per page (50)")
    find.add_argument("--cursor", type=message_id, help="the next page: the id the last one gave")
    find.set_defaults(handler=handler("messages.cmd_find"), queue=None)

    acting = argparse.ArgumentParser(add_help=False, parents=[database])
    acting.add_argument("ids", nargs="+", type=message_id, metavar="ID", help="message ids")
    acting.add_argument("--dry-run", action="store_true", help="check only, change nothing")

    cancel = _command(
        sub, "cancel", "cancel pending, scheduled or retrying messages, with a reason",
        description="Ends messages that are still waiting (pending, scheduled or retrying) "
        "in the final state `cancelled`, with the reason as their last error; a token "
        "email's secret is discarded. Messages being sent, sent, dead or cancelled are "
        "refused and then nothing is changed (exit 1). `dead retry` never revives a "
        "cancelled message. Recorded in the audit trail (`mailroom show ID`).",
        examples="  mailroom cancel 42 --reason 'customer asked us not to send it'\n"
        "  mailroom cancel 42 43 44 --reason 'duplicate campaign' --dry-run\n",
        parents=[acting],
    )  # fmt: skip
    cancel.add_argument("--reason", required=True, help="why (kept on the message and audit)")
    cancel.set_defaults(handler=handler("messages.cmd_cancel"))

    send_now = _command(
        sub, "send-now", "send a message waiting out a backoff or a schedule now",
        description="Makes waiting messages (retrying after a failure, or scheduled for "
        "later) due now and wakes the daemons. A message already due, being sent or final "
        "is refused and then nothing is changed (exit 1); so is a token email whose secret "
        "is gone (the same rule as `dead retry`). Recorded in the audit trail.",
        examples="  mailroom send-now 42\n"
        "  mailroom send-now 42 43 --reason 'SES throttling is over'\n",
        parents=[acting],
    )  # fmt: skip
    send_now.add_argument("--reason", help="why, for the audit trail")
    send_now.set_defaults(handler=handler("messages.cmd_send_now"))

    queues = _command(
        sub, "queues", "every queue: depth by status, oldest due, sends in the last hour",
        description="One line per queue that has messages: due, scheduled, retrying, "
        "sending, dead and cancelled counts, how long the oldest due message has waited, "
        "and messages sent and dead in the last hour.",
        examples="  mailroom queues\n  mailroom queues --json | jq '.[] | select(.dead > 0)'\n",
        parents=[database, as_json],
    )  # fmt: skip
    queues.set_defaults(handler=handler("stats.cmd_queues"))

    stats = _command(
        sub, "stats", "tries per template and per failure reason over a time range",
        description="Outcomes of the tries made since --since (default 24h) and before "
        "--before (default now): sent, retried and dead per template, and the failure "
        "reasons of retries and dead letters. Bounces and complaints join once delivery "
        "events are recorded.",
        examples="  mailroom stats\n  mailroom stats --since 1h --queue bulk\n"
        "  mailroom stats --since 2024-05-01T00:00 --before 2024-05-02T00:00 --json\n",
        parents=[database, revealing, as_json],
    )  # fmt: skip
    stats.add_argument("--since", type=when, default="24h", help="from: 1h, 24h, 7d, ISO time")
    stats.add_argument("--before", type=when, help="until (now): 1h, 7d, ISO time")
    stats.set_defaults(handler=handler("stats.cmd_stats"))
    add_web(sub)


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from mailroom.web import app, settings  # noqa: PLC0415 -- the optional extra
    except ImportError as exc:
        return fail(f"`mailroom web` needs the web extra: pip install 'mailroom[web]' ({exc})")
    from mailroom.text import CommandError  # noqa: PLC0415

    cfg = load()
    env = dict(os.environ)
    if args.host:
        env["MAILROOM_WEB_HOST"] = args.host
    if args.port is not None:
        env["MAILROOM_WEB_PORT"] = str(args.port)
    web_settings = settings.load(env)
    try:
        app.serve(cfg, web_settings)
    except CommandError as exc:
        return fail(str(exc), exc.code)
    return 0


def add_web(sub: Any) -> None:
    web = sub.add_parser(
        "web",
        help="the operators' web console (own port, loopback by default)",
        description=textwrap.fill(
            "Serves the console: overview, message search, a message's attempts and audit, "
            "dead letters, and the actions (retry, purge, cancel, send now) behind a "
            "confirmation, audited. Binds MAILROOM_WEB_HOST:MAILROOM_WEB_PORT "
            "(127.0.0.1:8026); any other address needs authentication: MAILROOM_WEB_TOKEN "
            "(a bearer token) or MAILROOM_WEB_USER and MAILROOM_WEB_PASSWORD (basic auth), "
            "each also as a _FILE. Connect it as a member of mailroom_operator. Needs the "
            "web extra: pip install 'mailroom[web]'.",
            88,
        ),
        epilog="examples:\n  mailroom web                       http://127.0.0.1:8026/\n"
        "  ssh -L 8026:127.0.0.1:8026 ops-host   then open it on your laptop\n"
        "  MAILROOM_WEB_USER=oncall MAILROOM_WEB_PASSWORD_FILE=/run/secrets/web \\\n"
        "      mailroom web --host 0.0.0.0\n" + OPERATOR_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    web.add_argument(
        "--dsn", default=argparse.SUPPRESS, help="database URL (overrides MAILROOM_DATABASE_URL)"
    )
    web.add_argument("--host", help="address to bind (MAILROOM_WEB_HOST, 127.0.0.1)")
    web.add_argument("--port", type=port, help="port (MAILROOM_WEB_PORT, 8026)")
    web.set_defaults(handler=cmd_web)


DEAD_BATCH = 500  # rows per statement of `dead retry` and `dead purge`


def add_dead_commands(
    sub: Any, handler: Any, *, database: Any, revealing: Any, as_json: Any
) -> None:
    """``dead list | retry | purge``: the dead letters, by id or by filter."""
    dead = sub.add_parser(
        "dead", help="list, retry or purge dead letters",
        description="Dead letters: messages that failed for good. `dead list` finds them, "
        "`dead retry` sends them again, `dead purge` deletes them.",
        epilog="examples:\n  mailroom dead list --since 1h\n"
        "  mailroom dead retry --reason TooManyRequests\n"
        "  mailroom dead purge --before 30d --dry-run\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    selecting = argparse.ArgumentParser(add_help=False, parents=[database])
    selecting.add_argument("ids", nargs="*", type=message_id, metavar="ID", help="message ids")
    selecting.add_argument("--template", help="template name (or simple / raw)")
    selecting.add_argument("--reason", help="text in the last error, e.g. MESSAGE_REJECTED")
    selecting.add_argument("--since", type=when, help="died at or after: 30m, 12h, 7d, ISO time")
    selecting.add_argument("--before", type=when, help="died before: 30m, 12h, 7d, ISO time")
    bulk = argparse.ArgumentParser(add_help=False, parents=[selecting])
    bulk.add_argument("--all", action="store_true", help="every dead letter of the queue")
    bulk.add_argument(
        "--batch",
        type=positive,
        default=DEAD_BATCH,
        help=f"rows per statement ({DEAD_BATCH})",
    )
    bulk.add_argument("--note", metavar="TEXT", help="why, for the audit trail")

    listing = command(
        dead_sub, "list", "dead letters, newest first, with their reasons",
        description="Dead letters of the queue (or the given ids), newest first, with the "
        "total matching. Filters combine; --reason matches any part of the last error, "
        "case-insensitively.",
        examples="  mailroom dead list\n  mailroom dead list --template activationv1 --since 2h\n"
        "  mailroom dead list --reason MESSAGE_REJECTED --limit 200 --json\n",
        parents=[selecting, revealing, as_json],
    )  # fmt: skip
    listing.add_argument("--limit", type=positive, default=50, help="rows shown (50)")
    listing.set_defaults(handler=handler("dead.cmd_dead_list"))

    retry = command(
        dead_sub, "retry", "send dead letters again: pending, attempts reset, daemons woken",
        description="Re-arms dead letters (by id, by filter, or --all): status pending, "
        "attempts 0, due now; last_error keeps why it died until a new try replaces it, and "
        "the attempts log keeps the earlier tries. Works in batches (progress on a terminal) "
        "and wakes the daemons. Ids that are not dead letters (e.g. sent) are refused and "
        "nothing is done (exit 1); token emails are never retried: their secret is gone.",
        examples="  mailroom dead retry 42 43\n"
        "  mailroom dead retry --reason TooManyRequests --since 6h\n"
        "  mailroom dead retry --template activationv1 --all\n"
        "  mailroom dead retry --all --dry-run\n",
        parents=[bulk],
    )  # fmt: skip
    retry.add_argument("--dry-run", action="store_true", help="count only, retry nothing")
    retry.add_argument("--yes", action="store_true", help="--all without confirmation")
    retry.set_defaults(handler=handler("dead.cmd_dead_retry"))

    purge = command(
        dead_sub, "purge", "delete dead letters (and their attempts)",
        description="Deletes dead letters by id, filter or --all, in batches. Asks for "
        "confirmation on a terminal; without a terminal it needs --yes (exit 2 otherwise). "
        "--dry-run only counts. Declining exits 1.",
        examples="  mailroom dead purge --before 30d --dry-run\n"
        "  mailroom dead purge --template oldnewsletter --all --yes\n",
        parents=[bulk],
    )  # fmt: skip
    purge.add_argument("--dry-run", action="store_true", help="count only, delete nothing")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    purge.set_defaults(handler=handler("dead.cmd_dead_purge"))


def operator_commands(sub: Any) -> None:
    """Every operator command: status, show, dead, send-test, the ones above, suppressions."""
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--dsn", default=argparse.SUPPRESS, help="database URL (overrides MAILROOM_DATABASE_URL)"
    )
    database.add_argument("--queue", help="queue (default MAILROOM_QUEUE_NAME)")
    revealing = argparse.ArgumentParser(add_help=False)
    revealing.add_argument("--reveal", action="store_true", help="show addresses unmasked")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")

    status = command(
        sub, "status", "what is waiting, failing and sending: depth, age, rate, dead reasons",
        description="Depth of the queue by status, how long the oldest due message has "
        "waited, sends in the last minute and hour, the commonest dead-letter reasons and "
        "the daemons holding leases. --json prints the same as a stable document (keys in "
        "docs/cli.md).",
        examples="  mailroom status\n  mailroom status --json | jq .depth.dead\n"
        "  mailroom --dsn postgresql://ops@db/app status --queue bulk\n",
        parents=[database, revealing, as_json],
    )  # fmt: skip
    status.add_argument(
        "--watch", nargs="?", const=2.0, type=seconds, metavar="SECONDS",
        help="refresh every SECONDS (2) in place on a terminal; plain reports when piped",
    )  # fmt: skip
    status.set_defaults(handler=handler("stats.cmd_status"))

    show = command(
        sub, "show", "one message with its attempts (times, outcomes, errors, SES ids)",
        description="One message: state, recipients (masked unless --reveal), template and "
        "data keys (never values: they may hold a token secret), schedule, lease, SES message "
        "id, and every attempt. Exit 1 if there is no such message.",
        examples="  mailroom show 42\n  mailroom show 42 --reveal\n  mailroom show 42 --json\n",
        parents=[database, revealing, as_json],
    )  # fmt: skip
    show.add_argument("id", type=message_id, help="message id (mailroom.outbox.id)")
    show.set_defaults(handler=handler("cmd_show"))

    from mailroom.cli import suppression  # noqa: PLC0415 -- light; `run` stays lean

    add_dead_commands(sub, handler, database=database, revealing=revealing,
                      as_json=as_json)  # fmt: skip

    send_test = command(
        sub, "send-test", "enqueue one test message; --wait follows it to its outcome",
        description="Enqueues one message (a simple text message, or a stored template with "
        "--template and --data). With --wait, polls it until it is sent (exit 0), dead "
        "(exit 1) or --timeout passes (exit 1), printing each change.",
        examples="  mailroom send-test --to you@example.com --wait\n"
        "  mailroom send-test --to you@example.com --template activationv1 \\\n"
        "      --data '{\"login\": \"test\"}' --wait --timeout 120\n",
        parents=[database, revealing],
    )  # fmt: skip
    send_test.add_argument("--to", required=True, metavar="ADDRESS", help="recipient")
    send_test.add_argument("--template", help="SES stored template name")
    send_test.add_argument("--data", help="template data, a JSON object")
    send_test.add_argument("--subject", default="mailroom test message", help="simple message")
    send_test.add_argument("--from", dest="from_address", help="From (MAILROOM_SES_SOURCE)")
    send_test.add_argument("--wait", action="store_true", help="follow it to sent or dead")
    send_test.add_argument("--timeout", type=seconds, default=60.0, help="--wait limit, s (60)")
    send_test.set_defaults(handler=handler("cmd_send_test"))

    add_commands(sub, handler, database=database, revealing=revealing, as_json=as_json)
    parents = {
        "database": database,
        "revealing": revealing,
        "as_json": as_json,
        "when": when,
    }
    suppression.add_commands(sub, parents, lambda name: handler(f"suppression.{name}"))
