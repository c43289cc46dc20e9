"""The commands ``suppression list | add | remove | import`` and their parsers, calling
operator/suppressions.py: each ``cmd_*`` gets the parsed arguments, the configuration and
an autocommit connection, prints its answer (``--json``: a stable document) and returns
the exit code. Addresses are masked unless ``--reveal``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg

from mailroom.addresses import normalize_address
from mailroom.cli.args import (
    OPERATOR_EXIT_CODES,
    as_json,
    command,
    page_cursor,
    refuse_queue,
    revealing,
)
from mailroom.cli.common import handler
from mailroom.cli.output import Progress
from mailroom.config.settings import Config
from mailroom.operator import suppressions
from mailroom.operator.audit import Actor
from mailroom.text import CommandError, jsonable, masker, positive, stamp, when

Connection = psycopg.Connection[Any]


def cmd_list(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    total, entries, more = suppressions.listing(
        conn, reason=args.reason, since=args.since, address=args.address, limit=args.limit,
        reveal=args.reveal or cfg.reveal_addresses, after=args.cursor,
    )  # fmt: skip
    if args.json:
        print(json.dumps(jsonable({"total": total, "entries": entries, "next_cursor": more}),
                         indent=2))  # fmt: skip
        return 0
    first = "newest" if args.cursor is None else "next"
    print(f"{total} suppressed address(es)" + (f", {first} {len(entries)}:" if entries else ""))
    for e in entries:
        print(f"  {stamp(e['created_at'])}  {e['reason']:<17} {e['address']}  {e['detail'] or ''}")
    if more:
        print(f"more: --cursor {more}")
    return 0


def address_argument(value: str) -> str:
    """argparse type: refused before any connection, the value escaped and shortened."""
    problem = suppressions.address_problem(value)
    if problem is not None:
        shown = ascii(value[:60]) + ("..." if len(value) > 60 else "")
        raise argparse.ArgumentTypeError(f"{shown}: {problem}")
    return value


def _addresses(values: list[str]) -> list[str]:
    for value in values:
        address_argument(value)  # as the parser did: a caller of cmd_* gets the same check
    return values


def cmd_add(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    added = suppressions.add(conn, _addresses(args.addresses), note=args.note)
    shown = masker(args.reveal or cfg.reveal_addresses)
    if args.json:
        distinct = len(set(map(normalize_address, args.addresses)))
        print(json.dumps({"added": [shown(a) for a in added], "already": distinct - len(added)}))
    else:
        print(f"suppressed {len(added)} address(es); the others were already suppressed")
    return 0


def cmd_remove(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    actor = Actor.from_cli(args.note) if args.note else None  # the note: its audit row's (0027)
    removed = suppressions.remove(conn, _addresses(args.addresses), actor=actor)
    shown = masker(args.reveal or cfg.reveal_addresses)
    if args.json:
        print(json.dumps({"removed": [{"address": shown(a), "reason": r} for a, r in removed]}))
    else:
        for address, reason in removed:
            print(f"unsuppressed {shown(address)} (was: {reason})")
        if not removed:
            print("none of these addresses was suppressed")
    return 0 if removed else 1


def cmd_import(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    """Copy SES's account-level suppression list (paginated) into mailroom's."""
    import boto3  # noqa: PLC0415 -- only this command needs the SES v2 model
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from mailroom.transports.awsconfig import configured_region  # noqa: PLC0415

    seen = added = 0
    progress = Progress("imported", 0, sys.stderr)
    try:
        region = configured_region()  # as the daemon's SES transport reads it
        client = boto3.session.Session().client("sesv2", region_name=region)
        pages = suppressions.ses_pages(client, args.page_size, args.max_pages)
        for counts in suppressions.import_pages(conn, pages):
            seen, added = counts  # after each page: read so far, added so far
            progress.total = seen
            progress.update(seen)
    except CommandError:
        progress.close()
        raise
    except (BotoCoreError, ClientError) as exc:
        progress.close()
        raise CommandError(f"SES ListSuppressedDestinations failed after {seen} address(es): "
                           f"{exc}", 1) from None  # fmt: skip
    progress.close()
    if args.json:
        print(json.dumps({"listed": seen, "added": added, "already": seen - added}))
    else:
        print(f"SES lists {seen} address(es); {added} added, {seen - added} already suppressed")
    return 0


def _page_size(text: str) -> int:
    value = positive(text)
    if value > 1000:  # SES's own maximum for ListSuppressedDestinations
        raise argparse.ArgumentTypeError(f"must be at most 1000, got {text!r}")
    return value


NOT_PER_QUEUE = "a suppression holds for every queue"
SUPPRESSION_EXIT_CODES = OPERATOR_EXIT_CODES.replace(
    "(these commands", "(suppressions are per address, for every queue; these commands"
)


def add_commands(sub: Any) -> None:
    """The ``suppression`` command group, for cli/commands.py."""
    group = command(
        sub, "suppression", "list, add, remove or import suppressed addresses",
        description="Addresses mailroom never sends to: permanent bounces, complaints, "
        "repeated transient bounces (from SES events), manual entries and SES's own "
        "account-level list. See docs/deliverability.md.",
        examples="  mailroom suppression list --reason complaint --since 7d\n"
        "  mailroom suppression add ann@example.com --note 'asked by phone'\n"
        "  mailroom suppression remove ann@example.com --note 'mailbox fixed'\n"
        "  mailroom suppression import\n",
        exit_codes=SUPPRESSION_EXIT_CODES,
    )  # fmt: skip
    actions = group.add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    common = [revealing(), as_json()]
    listing = command(
        actions, "list", "suppressed addresses, newest first",
        description="The suppression list, newest first, with the total matching: when each "
        "address was added, why (its reason and detail). Filters combine. A page at a time: "
        "--limit entries, then `more: --cursor ...` (--json: next_cursor, null on the last "
        "page) gives the next; the cursor names a time and an entry number, never an "
        "address. Addresses are masked unless --reveal.",
        examples="  mailroom suppression list\n"
        "  mailroom suppression list --reason complaint --since 7d --json\n"
        "  mailroom suppression list --address ann@example.com --reveal\n"
        "  mailroom suppression list --limit 100 --cursor 2026-12-01T09:30:00+00:00_4182\n",
        parents=common, exit_codes=SUPPRESSION_EXIT_CODES,
    )  # fmt: skip
    listing.add_argument("--reason", choices=["bounce", "complaint", "transient_bounces",
                                              "manual", "ses_import"],
                         help="only entries added for this reason")  # fmt: skip
    listing.add_argument("--since", type=when, help="added since: 30m, 12h, 7d, ISO")
    listing.add_argument("--address", type=address_argument,
                         help="only this address (is it suppressed, and why?)")  # fmt: skip
    listing.add_argument("--limit", type=positive, default=50, help="rows shown (50)")
    listing.add_argument(
        "--cursor", type=page_cursor, help="the next page: the cursor the last page gave"
    )
    listing.set_defaults(handler=handler("suppression.cmd_list"))
    add = command(
        actions, "add", "suppress addresses by hand",
        description="Adds each address (reason manual, the note as its detail); an address "
        "already suppressed keeps its entry. Every address is checked before any is added.",
        examples="  mailroom suppression add ann@example.com --note 'asked by phone'\n"
        "  mailroom suppression add a@example.com b@example.com --json\n",
        parents=common, exit_codes=SUPPRESSION_EXIT_CODES,
    )  # fmt: skip
    add.add_argument("addresses", nargs="+", metavar="ADDRESS", type=address_argument)
    add.add_argument("--note", help="why (kept as the entry's detail)")
    add.set_defaults(handler=handler("suppression.cmd_add"))
    remove = command(
        actions, "remove", "unsuppress addresses (exit 1: none was)",
        description="Deletes the addresses' entries, recorded in the audit trail with the "
        "note; mail to them is sent again. Exit 1 when none of them was suppressed.",
        examples="  mailroom suppression remove ann@example.com --note 'mailbox fixed'\n"
        "  mailroom suppression remove ann@example.com --json\n",
        parents=common, exit_codes=SUPPRESSION_EXIT_CODES,
    )  # fmt: skip
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS", type=address_argument)
    remove.add_argument("--note", help="why, for the audit trail")
    remove.set_defaults(handler=handler("suppression.cmd_remove"))
    importing = command(
        actions, "import",
        "copy SES's account-level suppression list (ses:ListSuppressedDestinations)",
        description="Reads SES's account-level suppression list page by page (AWS "
        "credentials and region as the daemon finds them) and adds the addresses mailroom "
        "does not have yet (reason ses_import). Exit 1 when an SES call fails or --max-pages "
        "is reached: what was read so far is kept.",
        examples="  mailroom suppression import\n"
        "  mailroom suppression import --page-size 100 --max-pages 10 --json\n",
        parents=common, exit_codes=SUPPRESSION_EXIT_CODES,
    )  # fmt: skip
    importing.add_argument("--page-size", type=_page_size, default=1000,
                           help="addresses per SES call, 1-1000 (1000)")  # fmt: skip
    importing.add_argument("--max-pages", type=positive, default=1000,
                           help="stop, exit 1, after this many SES calls (1000)")  # fmt: skip
    importing.set_defaults(handler=handler("suppression.cmd_import"))
    for leaf in (listing, add, remove, importing):
        refuse_queue(leaf, NOT_PER_QUEUE)
