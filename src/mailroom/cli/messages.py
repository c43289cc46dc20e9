"""The commands ``show``, ``send-test`` and ``find`` with their parsers, and the text of
``status`` (its command is in stats.py): each ``cmd_*`` takes the parsed arguments, the
configuration and an autocommit connection to a database that ``migrate.check_ready``
accepted, calls operator/ for the data, prints its answer and returns the exit code (0
ok, 1 "no"), or raises CommandError. Addresses are masked as in the logs unless
``--reveal`` (or MAILROOM_LOG_REVEAL_ADDRESSES).
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.cli.args import (
    OPERATOR_EXIT_CODES,
    as_json,
    command,
    message_id,
    queue_acted_on,
    queue_filter,
    refuse_queue,
    revealing,
    seconds,
)
from mailroom.cli.common import handler
from mailroom.cli.output import revealed
from mailroom.cli.queue import describe as describe_pause
from mailroom.client import enqueue
from mailroom.config.settings import Config
from mailroom.daemon import presence
from mailroom.operator import audit as admin_audit
from mailroom.operator import search
from mailroom.operator.admin import REASONS_SHOWN, outcome, show
from mailroom.operator.find import Filter, find, incomplete_notice, unsearched_below
from mailroom.text import (
    CommandError,
    age,
    jsonable,
    masker,
    positive,
    recipients,
    stamp,
    table,
    when,
)

Connection = psycopg.Connection[Any]
MESSAGE_ID_NAMES_ITS_QUEUE = "a message id names one message, whatever its queue"
# A message recorded sent without an SES message id: the debug transport's (it sends
# nothing, so SES gave no id); docs/operations.md, "MailroomDebugMode".
NO_PROVIDER_ID = "none (debug)"


def filter_from_args(args: argparse.Namespace) -> Filter:
    """The ``find`` options as the operator's Filter."""
    given = ",".join(args.status or [])
    statuses = [part.strip().lower() for part in given.split(",")]
    searches = [(flag, text) for flag, text in (("--to", args.to), ("--domain", args.domain),
                ("--prefix", args.prefix)) if text is not None]  # fmt: skip
    if len(searches) > 1:
        raise CommandError(f"{' and '.join(f for f, _ in searches)}: give one recipient search")
    wanted = None
    if searches:
        flag, text = searches[0]
        wanted = search.parse(
            text, {"--to": None, "--domain": "domain", "--prefix": "prefix"}[flag]
        )
    return Filter(
        recipient=wanted, idempotency_key=args.key, ses_id=args.ses_id,
        statuses=[s for s in statuses if s] or None, template=args.template,
        queue=args.queue, since=args.since, before=args.before,
    )  # fmt: skip


def format_status(report: dict[str, Any]) -> str:
    depth = report["depth"]
    lines = [f"queue {report['queue']}  ({stamp(datetime.fromisoformat(report['generated_at']))})"]
    if report["paused"]:  # an operator's pause (0027)
        lines.append(f"QUEUE {describe_pause(report['paused'])}: no daemon claims from it")
    lines += [f"  {name:<9}{count:>9}" for name, count in depth.items()]
    oldest = (
        f", the oldest due for {age(report['oldest_due_age_seconds'])}" if report["due"] else ""
    )
    lines.append(f"due now: {report['due']} of {depth['pending'] + depth['retrying']}{oldest}")
    lines.append(
        f"sent: {report['sent_last_minute']} in the last minute, "
        f"{report['sent_last_hour']} in the last hour"
    )
    if report["dead_reasons"]:
        lines.append(f"dead-letter reasons (top {REASONS_SHOWN}):")
        lines += [f"  {r['messages']:>7}  {r['reason']}" for r in report["dead_reasons"]]
    lines += presence.summary(report["daemons"], report["queue"])
    lines.append("leases:" if report["leases"] else "leases: none (no daemon is sending now)")
    for lease in report["leases"]:
        left = lease["expires_in_seconds"]
        until = (
            f"lease ends in {age(left)}"
            if left >= 0
            else f"lease EXPIRED {age(left)} ago: holder dead or stuck; the next poll reclaims it"
        )
        lines.append(f"  {lease['worker']}  {lease['messages']} message(s), {until}")
    return "\n".join(lines)


def format_show(m: dict[str, Any]) -> str:
    now = datetime.now(UTC)

    def rel(t: datetime) -> str:
        delta = (t - now).total_seconds()
        return f"{stamp(t)} ({'in ' + age(delta) if delta > 0 else age(delta) + ' ago'})"

    rows: list[tuple[str, Any]] = [
        ("status", f"{m['status']}, {m['attempts']} of {m['max_attempts']} attempts used"),
        *((k.replace("_", " "), ", ".join(m[k])) for k in ("to", "cc", "bcc", "reply_to")),
        ("from", m["from"] or "(MAILROOM_SES_SOURCE)"),
        ("template", m["template"]),
        ("data keys", ", ".join(m["data_keys"])),
        ("token", m["token"]),  # its kind only (0019): never the token, secret or code
        ("subject", m["subject"]),
        ("config set", m["config_set"]),
        ("priority", m["priority"]),
        ("idempotency key", m["idempotency_key"]),
        ("created", rel(m["created_at"])),
        ("updated", rel(m["updated_at"])),
    ]
    if m["status"] in ("pending", "retrying"):
        rows.append(("next attempt", rel(m["next_attempt_at"])))
    if m["status"] == "sending":
        rows.append(("lease", f"{m['locked_by']} until {rel(m['locked_until'])}"))
    if m["sent_at"]:
        rows.append(("sent", rel(m["sent_at"])))
    provider_id = m["provider_message_id"] or (NO_PROVIDER_ID if m["status"] == "sent" else None)
    rows += [("SES message id", provider_id), ("last error", m["last_error"])]
    lines = [f"message {m['id']}  (queue {m['queue']})"]
    lines += [f"  {k:<16} {v}" for k, v in rows if v not in (None, "")]
    log = m["attempts_log"]
    lines.append(f"attempts ({len(log)}):" if log else "attempts: none yet")
    for a in log:
        sent_without_id = a["outcome"] == "sent" and not a["provider_message_id"]
        provider_id = f"SES message id {NO_PROVIDER_ID}" if sent_without_id else None
        detail = " ".join(x for x in (a["provider_message_id"] or provider_id, a["error"]) if x)
        head = f"  #{a['attempt']:<3} {stamp(a['at'])}  {a['outcome']:<13} {a['worker'] or '-'}"
        lines.append(f"{head}  {detail}".rstrip())
    delivery = m["delivery"]
    lines.append(f"delivery: {delivery['state']}" + (f" ({delivery['reason']})"
                 if delivery["reason"] and delivery["state"] != m["status"] else ""))  # fmt: skip
    for e in m["events"]:
        kind = " ".join(x for x in (e["type"], e["subtype"]) if x)
        lines.append(
            f"  {stamp(e['at'])}  {kind:<28} {e['recipient']}  {e['detail'] or ''}".rstrip()
        )
    lines += _format_audit(m["audit"])
    return "\n".join(lines)


def _format_audit(entries: list[dict[str, Any]] | None) -> list[str]:
    if entries is None:
        return ["operator actions: not visible to this role (mailroom_operator reads them)"]
    if not entries:
        return ["operator actions: none"]
    lines = [f"operator actions ({len(entries)}):"]
    for e in entries:
        who = e["actor"] + (f" ({e['operator']})" if e["operator"] else "")
        why = f": {e['reason']}" if e["reason"] else ""
        lines.append(
            f"  {stamp(e['at'])}  {e['action']:<10} by {who} via {e['via']}, "
            f"{e['messages']} message(s){why}"
        )
    return lines


def cmd_show(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    message = show(conn, args.id, reveal=revealed(args, cfg))
    if message is None:
        raise CommandError(f"no message with id {args.id}", 1)
    print(json.dumps(jsonable(message), indent=2) if args.json else format_show(message))
    return 0


def _test_content(args: argparse.Namespace) -> dict[str, Any]:
    if args.template is None:
        if args.data is not None:
            raise CommandError("--data goes with --template")
        sent = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        text = f"A test message from `mailroom send-test` on {socket.gethostname()}, {sent}."
        return {"subject": args.subject, "text": text}
    try:
        data = json.loads(args.data) if args.data is not None else {}
    except ValueError as exc:
        raise CommandError(f"--data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("--data must be a JSON object")
    return {"template": args.template, "data": data}


def cmd_send_test(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    content = _test_content(args)
    queue = args.queue or cfg.queue_name
    try:
        message_id = enqueue(conn, args.to, queue=queue, from_address=args.from_address, **content)
    except psycopg.errors.CheckViolation as exc:
        raise CommandError(f"refused: {exc.diag.constraint_name or exc}") from None
    # --json: the one document is the outcome; what happens meanwhile is told on stderr
    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)
    say(f"enqueued message {message_id} (queue {queue})")
    document: dict[str, Any] = {"id": message_id, "queue": queue, "status": "pending",
                                "attempts": 0, "provider_message_id": None, "error": None,
                                "waited": args.wait, "timed_out": False}  # fmt: skip
    code = _follow(args, cfg, conn, document, say) if args.wait else 0
    if args.json:
        print(json.dumps(document, indent=2))
    return code


def _follow(
    args: argparse.Namespace, cfg: Config, conn: Connection, document: dict[str, Any], say: Any
) -> int:
    """Polls the message until sent (0), dead (1) or --timeout (1), saying each change."""
    shown = masker(revealed(args, cfg))
    deadline = time.monotonic() + args.timeout
    last = ("pending", 0)
    while True:
        state, attempts, provider_id, error = outcome(conn, document["id"])
        document.update(status=state, attempts=attempts, provider_message_id=provider_id,
                        error=shown(error))  # fmt: skip
        if state in ("sent", "dead"):
            say(
                f"sent: SES message id {provider_id or NO_PROVIDER_ID}"
                if state == "sent"
                else f"dead after {attempts} attempt(s): {shown(error)}"
            )
            return 0 if state == "sent" else 1
        if (state, attempts) != last:
            last = (state, attempts)
            say(f"{state} (attempts {attempts})" + (f": {shown(error)}" if error else ""))
        if time.monotonic() >= deadline:
            document["timed_out"] = True
            say(
                f"still {state} after {args.timeout:g} s: is a daemon serving queue "
                f"{document['queue']}? (`mailroom status` shows leases)"
            )
            return 1
        time.sleep(0.2)


def cmd_find(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    admin_audit.require(conn, "find")
    wanted = filter_from_args(args)
    rows, more = find(
        conn, wanted, limit=args.limit, cursor=args.cursor, reveal=revealed(args, cfg),
    )  # fmt: skip
    notice = incomplete_notice(unsearched_below(conn)) if wanted.wanted() else None
    if notice:
        print(f"mailroom: note: {notice}", file=sys.stderr)
    if args.json:
        print(json.dumps({"messages": jsonable(rows), "next_cursor": more}, indent=2))
        return 0
    if not rows:
        print("no messages match")
        return 0
    # a recipient search says where the recipient was: a cc or bcc match is not the To shown
    matched = ["matched"] if rows[0]["matched"] is not None else []
    print(
        table(
            ["id", "created", "status", "tries", "queue", "template", *matched, "to",
             "SES id / reason"],
            [
                (
                    r["id"],
                    stamp(r["created_at"]),
                    r["status"],
                    r["attempts"],
                    r["queue"],
                    r["template"],
                    *([",".join(r["matched"])] if matched else []),
                    recipients(r["to"]),
                    r["ses_id"] or r["reason"],
                )
                for r in rows
            ],
            right="id tries",
        )
    )  # fmt: skip
    if more is not None:
        print(f"more match: add --cursor {more} for the next page (newest first)")
    return 0


def add_commands(sub: Any) -> None:
    """``show``, ``find`` and ``send-test``, for cli/commands.py."""
    revealing_, json_ = revealing(), as_json()
    show_ = command(
        sub, "show", "one message with its attempts (times, outcomes, errors, SES ids)",
        description="One message: state, recipients (masked unless --reveal), template and "
        "data keys (never values: they may hold a token secret), schedule, lease, SES message "
        "id, and every attempt. Exit 1 if there is no such message. The id names a message "
        "of any queue: --queue is refused (exit 2).",
        examples="  mailroom show 42\n  mailroom show 42 --reveal\n  mailroom show 42 --json\n",
        parents=[revealing_, json_],
    )  # fmt: skip
    show_.add_argument("id", type=message_id, help="message id (mailroom.outbox.id)")
    refuse_queue(show_, MESSAGE_ID_NAMES_ITS_QUEUE)
    show_.set_defaults(handler=handler("cmd_show"))

    send_test = command(
        sub, "send-test", "enqueue one test message; --wait follows it to its outcome",
        description="Enqueues one message (a simple text message, or a stored template with "
        "--template and --data). With --wait, polls it until it is sent (exit 0), dead "
        "(exit 1) or --timeout passes (exit 1), printing each change.",
        examples="  mailroom send-test --to you@example.com --wait\n"
        "  mailroom send-test --to you@example.com --template activationv1 \\\n"
        "      --data '{\"login\": \"test\"}' --wait --timeout 120\n",
        parents=[queue_acted_on(), revealing_, json_],
    )  # fmt: skip
    send_test.add_argument("--to", required=True, metavar="ADDRESS", help="recipient")
    send_test.add_argument("--template", help="SES stored template name")
    send_test.add_argument("--data", help="template data, a JSON object")
    send_test.add_argument("--subject", default="mailroom test message", help="simple message")
    send_test.add_argument("--from", dest="from_address", help="From (MAILROOM_SES_SOURCE)")
    send_test.add_argument("--wait", action="store_true", help="follow it to sent or dead")
    send_test.add_argument("--timeout", type=seconds, default=60.0, help="--wait limit, s (60)")
    send_test.set_defaults(handler=handler("cmd_send_test"))

    find_ = command(
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
        parents=[queue_filter(), revealing_, json_], exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    find_.add_argument("--to", metavar="ADDRESS", help="a recipient, in any form (see above)")
    find_.add_argument("--domain", metavar="DOMAIN", help="every recipient at DOMAIN (@ optional)")
    find_.add_argument("--prefix", metavar="TEXT", help="recipients whose address starts with TEXT")
    find_.add_argument("--key", metavar="KEY", help="idempotency key")
    find_.add_argument("--ses-id", metavar="ID", help="SES message id (of a sent message)")
    find_.add_argument("--status", action="append", metavar="STATUS", help="see above")
    find_.add_argument("--template", help="template name (or simple / raw)")
    find_.add_argument("--since", type=when, help="enqueued at or after: 30m, 12h, 7d, ISO time")
    find_.add_argument("--before", type=when, help="enqueued before: 30m, 12h, 7d, ISO time")
    find_.add_argument("--limit", type=positive, default=50, help="rows per page (50)")
    find_.add_argument("--cursor", type=message_id, help="the next page: the id the last one gave")
    find_.set_defaults(handler=handler("messages.cmd_find"))
