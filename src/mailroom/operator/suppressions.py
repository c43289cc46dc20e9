"""``mailroom suppression list | add | remove | import``: the operator's suppression list.

Same conventions as operator/admin.py: each ``cmd_*`` gets the parsed arguments, the configuration
and an autocommit connection, prints its answer (``--json``: a stable document) and
returns the exit code. Addresses are masked unless ``--reveal``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from mailroom.addresses import ascii_domain, is_valid, normalize_address
from mailroom.config.settings import Config
from mailroom.operator.audit import Actor, refusals_as_errors
from mailroom.operator.output import Progress
from mailroom.outbox import query
from mailroom.text import CommandError, jsonable, masker, positive, stamp

_LIST = ["address", "reason", "detail", "created_at", "created_by"]

Connection = psycopg.Connection[Any]


def cmd_list(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    params = {"reason": args.reason, "since": args.since, "address": args.address,
              "limit": args.limit}  # fmt: skip
    rows = conn.execute(query("suppression_list"), params).fetchall()
    shown = masker(args.reveal or cfg.reveal_addresses)
    total = int(rows[0][-1]) if rows else 0
    entries = [dict(zip(_LIST, row[:-1], strict=True)) for row in rows]
    for entry in entries:
        entry["address"] = shown(entry["address"])
        entry["detail"] = shown(entry["detail"])
    if args.json:
        print(json.dumps(jsonable({"total": total, "entries": entries}), indent=2))
        return 0
    print(f"{total} suppressed address(es)" + (f", newest {len(entries)}:" if entries else ""))
    for e in entries:
        print(f"  {stamp(e['created_at'])}  {e['reason']:<17} {e['address']}  {e['detail'] or ''}")
    return 0


MAX_ADDRESS = 320  # RFC 5321's limit for a path; checked before any conversion


def address_problem(value: str) -> str | None:
    """What is wrong with an operator's address (None: nothing). The length first, so an
    8,000-character IDN label is refused before punycode sees it."""
    if len(value) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "holds a control character (a line break?): one address per argument"
    spec = normalize_address(value)
    if "," in spec or ";" in spec or any(c.isspace() for c in spec):
        return "holds a comma, semicolon or space: one address per argument"
    local, at, domain = spec.rpartition("@")
    if not at or not local or not domain:
        return "not an address such as someone@example.com"
    ascii_form = ascii_domain(domain)
    if ascii_form is None or not is_valid(f"{local}@{ascii_form}"):
        return "not an address such as someone@example.com"
    return None


def address_argument(value: str) -> str:
    """argparse type: refused before any connection, the value escaped and shortened."""
    problem = address_problem(value)
    if problem is not None:
        shown = ascii(value[:60]) + ("..." if len(value) > 60 else "")
        raise argparse.ArgumentTypeError(f"{shown}: {problem}")
    return value


def _addresses(values: list[str]) -> list[str]:
    for value in values:
        address_argument(value)  # as the parser did: a caller of cmd_* gets the same check
    return values


def cmd_add(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    addresses = _addresses(args.addresses)
    # through the audited function (migration 0020): one audit row for the command
    details = [args.note] * len(addresses) if args.note else None
    params = {"addresses": addresses, "reason": "manual", "details": details,
              **Actor.from_cli(args.note).params()}  # fmt: skip
    with refusals_as_errors():
        added = [r[0] for r in conn.execute(query("suppression_add"), params).fetchall()]
    shown = masker(args.reveal or cfg.reveal_addresses)
    if args.json:
        distinct = len(set(map(normalize_address, args.addresses)))
        print(json.dumps({"added": [shown(a) for a in added], "already": distinct - len(added)}))
    else:
        print(f"suppressed {len(added)} address(es); the others were already suppressed")
    return 0


def cmd_remove(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    params = {"addresses": _addresses(args.addresses), **Actor.from_cli().params()}
    with refusals_as_errors():
        removed = conn.execute(query("suppression_remove"), params).fetchall()
    shown = masker(args.reveal or cfg.reveal_addresses)
    if args.json:
        print(json.dumps({"removed": [{"address": shown(a), "reason": r} for a, r in removed]}))
    else:
        for address, reason in removed:
            print(f"unsuppressed {shown(address)} (was: {reason})")
        if not removed:
            print("none of these addresses was suppressed")
    return 0 if removed else 1


def _pages(client: Any, page_size: int, max_pages: int) -> Iterator[list[dict[str, Any]]]:
    # botocore has no paginator for this operation: follow NextToken by hand, but not for
    # ever: a token seen before (a loop) or more pages than asked for stops the import
    token: str | None = None
    seen: set[str] = set()
    for _ in range(max_pages):
        kwargs: dict[str, Any] = {"PageSize": page_size}
        if token:
            kwargs["NextToken"] = token
        page = client.list_suppressed_destinations(**kwargs)
        yield list(page.get("SuppressedDestinationSummaries") or [])
        token = page.get("NextToken")
        if not token:
            return
        if token in seen:
            raise CommandError(
                "SES returned a NextToken it had returned before: stopped, the import is "
                "incomplete (what was read is kept; run it again later)",
                1,
            )
        seen.add(token)
    raise CommandError(
        f"stopped after {max_pages} page(s) (--max-pages): SES lists more; what was read is "
        "kept (raise --max-pages or --page-size to read the rest)",
        1,
    )


def cmd_import(args: argparse.Namespace, cfg: Config, conn: Connection) -> int:
    """Copy SES's account-level suppression list (paginated) into mailroom's."""
    import boto3  # noqa: PLC0415 -- only this command needs the SES v2 model
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from mailroom.transports.awsconfig import configured_region  # noqa: PLC0415

    seen = added = 0
    actor = Actor.from_cli().params()  # the pages' audit rows share its action_id
    progress = Progress("imported", 0, sys.stderr)
    try:
        region = configured_region()  # as the daemon's SES transport reads it
        client = boto3.session.Session().client("sesv2", region_name=region)
        for page in _pages(client, args.page_size, args.max_pages):
            if not page:
                continue  # an empty page: nothing to add (the function wants 1+ addresses)
            rows = {
                **actor,
                "addresses": [p["EmailAddress"] for p in page],
                "reasons": [p.get("Reason", "") for p in page],
                "updated": [_when(p.get("LastUpdateTime")) for p in page],
            }
            seen += len(page)
            with refusals_as_errors():
                added += len(conn.execute(query("suppression_import"), rows).fetchall())
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


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value or "")


def add_commands(sub: Any, parents: dict[str, Any], handler: Any) -> None:
    """The ``suppression`` command group, for cli/commands.py."""
    group = sub.add_parser(
        "suppression", help="list, add, remove or import suppressed addresses",
        description="Addresses mailroom never sends to: permanent bounces, complaints, "
        "repeated transient bounces (from SES events), manual entries and SES's own "
        "account-level list. See docs/deliverability.md.",
        epilog="examples:\n  mailroom suppression list --reason complaint --since 7d\n"
        "  mailroom suppression add ann@example.com --note 'asked by phone'\n"
        "  mailroom suppression remove ann@example.com\n  mailroom suppression import\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = group.add_subparsers(dest="suppression_command", required=True, metavar="ACTION")
    common = [parents["database"], parents["revealing"], parents["as_json"]]
    listing = actions.add_parser("list", help="suppressed addresses, newest first",
                                 parents=common)  # fmt: skip
    listing.add_argument("--reason", choices=["bounce", "complaint", "transient_bounces",
                                              "manual", "ses_import"])  # fmt: skip
    listing.add_argument("--since", type=parents["when"], help="added since: 30m, 12h, 7d, ISO")
    listing.add_argument("--address", type=address_argument,
                         help="only this address (is it suppressed, and why?)")  # fmt: skip
    listing.add_argument("--limit", type=positive, default=50, help="rows shown (50)")
    listing.set_defaults(handler=handler("cmd_list"))
    add = actions.add_parser("add", help="suppress addresses by hand", parents=common)
    add.add_argument("addresses", nargs="+", metavar="ADDRESS", type=address_argument)
    add.add_argument("--note", help="why (kept as the entry's detail)")
    add.set_defaults(handler=handler("cmd_add"))
    remove = actions.add_parser("remove", help="unsuppress addresses (exit 1: none was)",
                                parents=common)  # fmt: skip
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS", type=address_argument)
    remove.set_defaults(handler=handler("cmd_remove"))
    importing = actions.add_parser(
        "import", help="copy SES's account-level suppression list (ses:ListSuppressedDestinations)",
        parents=common,
    )  # fmt: skip
    importing.add_argument("--page-size", type=_page_size, default=1000,
                           help="addresses per SES call, 1-1000 (1000)")  # fmt: skip
    importing.add_argument("--max-pages", type=positive, default=1000,
                           help="stop, exit 1, after this many SES calls (1000)")  # fmt: skip
    importing.set_defaults(handler=handler("cmd_import"))
