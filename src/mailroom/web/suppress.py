"""The console's suppression page (issue 22): search the list (an exact address, a reason,
a time) a page at a time after a (time, entry number) cursor that names no address, add
addresses by hand and remove them, each with a note, through the operator's suppression
functions (operator/suppressions.py): audited like every action, behind the
same confirmation step (views._Step calls ``step`` here)."""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from mailroom.operator import suppressions
from mailroom.operator.pages import parse_cursor
from mailroom.text import CommandError, when
from mailroom.web.keys import render, run_db

PAGE = 50
REASONS = ("bounce", "complaint", "manual", "ses_import")
MAX_ADDRESSES = 100  # one form's worth; the CLI's `suppression import` takes more


def _addresses(text: str) -> list[str]:
    """The addresses of the form's box: one a line (or separated by spaces), each checked
    as the CLI checks them; a problem names the address."""
    found = [a for a in text.replace(",", " ").split() if a]
    if not found:
        raise CommandError("give at least one address")
    if len(found) > MAX_ADDRESSES:
        raise CommandError(f"at most {MAX_ADDRESSES} addresses at a time (the CLI takes more)")
    for address in found:
        problem = suppressions.address_problem(address)
        if problem:
            raise CommandError(f"{address[:80]!r}: {problem}")
    return found


async def page(request: web.Request) -> web.Response:
    query = request.query
    address = query.get("address", "").strip() or None
    reason = query.get("reason", "").strip() or None
    try:
        since = when(query["since"]) if query.get("since", "").strip() else None
        if reason is not None and reason not in REASONS:
            raise CommandError(f"reason: one of {', '.join(REASONS)}")
        if address is not None and suppressions.address_problem(address):
            raise CommandError(f"address: {suppressions.address_problem(address)}")
        cursor = query.get("cursor", "").strip()
        after = parse_cursor(cursor) if cursor else None
        if cursor and after is None:
            raise CommandError("cursor: not a page (follow the page's own links)")
    except (argparse.ArgumentTypeError, CommandError) as exc:
        return render(request, "suppressions.html.j2", http_status=400, error=str(exc),
                      total=0, rows=[], form=query, reasons=REASONS, more=None,
                      paged=False)  # fmt: skip
    reveal = query.get("reveal") == "1"
    total, rows, more = await run_db(
        request,
        lambda conn: suppressions.listing(conn, reason=reason, since=since, address=address,
                                          limit=PAGE, reveal=reveal, after=after),
    )  # fmt: skip
    return render(request, "suppressions.html.j2", error=None, total=total, rows=rows,
                  form=query, reasons=REASONS, more=more, paged=after is not None)  # fmt: skip


async def step(current: Any) -> web.Response:
    """One POST of suppress / unsuppress (``current``: the views._Step of the request):
    the confirmation page, or the change."""
    request, action, form, actor = current.request, current.action, current.form, current.actor
    addresses = _addresses(str(form.get("addresses", "")))
    if not actor.reason:
        raise CommandError("say why: the note is kept in the audit trail")
    listed = ", ".join(addresses[:10]) + (" …" if len(addresses) > 10 else "")
    if not current.confirmed:
        effect = ("no mail goes to them until removed" if action == "suppress"
                  else "mail may go to them again")  # fmt: skip
        shown: web.Response = current.confirm(
            f"{action} {len(addresses)} address(es): {listed}; {effect}"
        )
        return shown
    if action == "suppress":
        added = await run_db(request, lambda c: suppressions.add(
            c, addresses, note=actor.reason, actor=actor))  # fmt: skip
        result = f"{len(added)} of {len(addresses)} address(es) suppressed (others already were)"
    else:
        removed = await run_db(request, lambda c: suppressions.remove(c, addresses, actor=actor))
        result = (
            f"{len(removed)} of {len(addresses)} address(es) removed (the rest were not listed)"
        )
    return render(request, "done.html.j2", title=action.capitalize(), result=result, ids=[])
