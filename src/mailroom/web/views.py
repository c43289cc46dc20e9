"""The console's pages and actions. Each handler gathers data with the CLI's functions
(run in a worker thread by ``keys.run_db``) and renders a template; actions are POSTs,
first to a confirmation page, then (with ``confirm=yes``) done and audited."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import psycopg
from aiohttp import web

from mailroom.operator import admin
from mailroom.operator import content as admin_content
from mailroom.operator import dead as admin_dead
from mailroom.operator import find as admin_find
from mailroom.operator import pages as admin_pages
from mailroom.operator import queues as admin_queues
from mailroom.operator.audit import Actor
from mailroom.text import CommandError, age, parse_id, stamp, when
from mailroom.web import suppress, watch
from mailroom.web.keys import CAN_ACT, CONFIG, render, run_db

Connection = psycopg.Connection[Any]
PAGE = 50
ACTIONS = {
    "cancel": "Cancel",
    "send-now": "Send now",
    "retry": "Retry dead letters",
    "purge": "Purge dead letters",
    "pause": "Pause the queue",
    "resume": "Resume the queue",
    "suppress": "Suppress addresses",
    "unsuppress": "Remove suppressions",
}

FILTERS = {"stamp": stamp, "age": age}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", watch.overview)
    app.router.add_get("/queues/{name}", watch.queue_page)
    app.router.add_get("/messages", search)
    app.router.add_get("/messages/{id}", message)
    app.router.add_get("/messages/{id}/preview", preview)
    app.router.add_get("/dead", dead)
    app.router.add_get("/suppressions", suppress.page)
    app.router.add_post("/actions/{action}", act)


def _render(
    request: web.Request, name: str, http_status: int = 200, **context: Any
) -> web.Response:
    return render(request, name, http_status, **context)


async def _db(request: web.Request, work: Any) -> Any:
    return await run_db(request, work)


def _reveal(request: web.Request) -> bool:
    return request.query.get("reveal") == "1"


# -- search and message ----------------------------------------------------------------------


def _filter(query: Any) -> admin_find.Filter:
    def text(name: str) -> str | None:
        value = str(query.get(name, "")).strip()
        return value or None

    def time(name: str) -> datetime | None:
        value = text(name)
        try:
            return when(value) if value else None
        except argparse.ArgumentTypeError as exc:
            raise CommandError(f"{name}: {exc}") from None

    statuses = [s for s in query.getall("status", []) if s]
    return admin_find.Filter(
        recipient=text("to"), idempotency_key=text("key"), ses_id=text("ses_id"),
        statuses=statuses or None, template=text("template"), queue=text("queue"),
        since=time("since"), before=time("before"),
    )  # fmt: skip


async def search(request: web.Request) -> web.Response:
    cursor_text = request.query.get("cursor", "")
    try:
        wanted = _filter(request.query)
        cursor = parse_id(cursor_text) if cursor_text else None
        if cursor_text and cursor is None:
            raise ValueError(cursor_text)
    except (CommandError, ValueError) as exc:
        message = str(exc) if isinstance(exc, CommandError) else "cursor: not a message id"
        return _render(request, "messages.html.j2", http_status=400, error=message, rows=[],
                       more=None, form=request.query, statuses=admin_find.STATUSES)  # fmt: skip

    def found(conn: Connection) -> tuple[list[dict[str, Any]], int | None, str | None]:
        rows, more = admin_find.find(conn, wanted, limit=PAGE, cursor=cursor,
                                     reveal=_reveal(request))  # fmt: skip
        below = admin_find.unsearched_below(conn) if wanted.wanted() else 0
        return rows, more, admin_find.incomplete_notice(below)

    try:
        rows, more, notice = await _db(request, found)
    except CommandError as exc:  # the cursor's message was purged between two pages
        return _render(request, "messages.html.j2", http_status=400, error=str(exc), rows=[],
                       more=None, form=request.query, statuses=admin_find.STATUSES)  # fmt: skip
    return _render(request, "messages.html.j2", error=None, rows=rows, more=more,
                   form=request.query, statuses=admin_find.STATUSES, notice=notice)  # fmt: skip


async def message(request: web.Request) -> web.Response:
    text = request.match_info["id"]
    wanted = parse_id(text)
    if wanted is None:
        return _render(
            request, "error.html.j2", http_status=404, error=f"{text[:40]!r} is no message id"
        )
    found = await _db(request, lambda conn: admin.show(conn, wanted, reveal=_reveal(request)))
    if found is None:
        return _render(
            request, "error.html.j2", http_status=404, error=f"no message with id {text}"
        )
    shown = await _db(
        request, lambda conn: admin_content.content(conn, wanted, reveal=_reveal(request))
    )
    rendered = await _rendered(request, wanted, found)
    return _render(request, "message.html.j2", m=found, reveal=_reveal(request), content=shown,
                   rendered=rendered)  # fmt: skip


async def _rendered(request: web.Request, wanted: int, found: dict[str, Any]) -> Any:
    """A templated message rendered from MAILROOM_TEMPLATES_DIR, secrets hidden (None
    without a template or a templates directory)."""
    directory = request.app[CONFIG].templates_dir
    if found.get("template") is None or directory is None:
        return None
    return await _db(request, lambda conn: admin_content.template_preview(
        conn, wanted, template=found["template"], token=found.get("token"),
        directory=directory, reveal=_reveal(request)))  # fmt: skip


# The HTML part, alone, for the message page's sandboxed iframe: no script runs (a sandbox
# without allow-scripts, here and in the iframe), nothing is fetched from elsewhere
# (remote images are a read receipt to the sender's tracker), no form or link goes anywhere.
PREVIEW_POLICY = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "font-src data:; form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
)


async def preview(request: web.Request) -> web.Response:
    wanted = parse_id(request.match_info["id"])
    shown = None
    if wanted is not None:
        shown = await _db(
            request, lambda conn: admin_content.content(conn, wanted, reveal=_reveal(request))
        )
    html = shown["html"] if shown is not None else None
    if shown is not None and not html and wanted is not None:  # a templated message?
        found = await _db(request, lambda conn: admin.show(conn, wanted, reveal=False))
        rendered = await _rendered(request, wanted, found) if found else None
        html = rendered.get("html") if rendered else None
    if not html:
        return web.Response(status=404, text="no HTML part\n")
    return web.Response(text=html, content_type="text/html",
                        headers={"Content-Security-Policy": PREVIEW_POLICY})  # fmt: skip


# -- dead letters ----------------------------------------------------------------------------


def _selection(form: Any, queue: str) -> admin_dead.Selection:
    """Which dead letters a form names: ids, or filters (default: the console's queue)."""
    ids = [i for i in map(parse_id, map(str, form.getall("id", []))) if i is not None] or None

    def text(name: str) -> str | None:
        return str(form.get(name, "")).strip() or None

    def time(name: str) -> datetime | None:
        value = text(name)
        try:
            return when(value) if value else None
        except argparse.ArgumentTypeError as exc:
            raise CommandError(f"{name}: {exc}") from None

    return admin_dead.Selection(
        ids=ids, queue=text("queue") or (None if ids else queue), template=text("template"),
        reason=text("reason"), since=time("since"), before=time("before"),
    )  # fmt: skip


async def dead(request: web.Request) -> web.Response:
    try:
        selection = _selection(request.query, request.app[CONFIG].queue_name)
    except CommandError as exc:
        return _render(request, "error.html.j2", http_status=400, error=str(exc))
    reveal = _reveal(request)
    cursor_text = request.query.get("cursor", "")
    after = admin_pages.parse_cursor(cursor_text) if cursor_text else None
    if cursor_text and after is None:
        return _render(request, "error.html.j2", http_status=400, error="cursor: not a page")
    rows, total, more = await _db(
        request,
        lambda conn: admin_pages.dead_page(conn, selection, limit=PAGE, after=after,
                                           reveal=reveal),
    )  # fmt: skip
    return _render(request, "dead.html.j2", rows=rows, total=total, form=request.query,
                   more=more, paged=bool(cursor_text))  # fmt: skip


# -- actions ---------------------------------------------------------------------------------


async def act(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ACTIONS:
        return _render(request, "error.html.j2", http_status=404, error=f"no action {action!r}")
    if not request.app[CAN_ACT]:  # the buttons are hidden; a forged POST meets this
        return _render(request, "error.html.j2", http_status=403,
                       error="refused: this console's database role may look but not act "
                       "(mailroom_viewer)")  # fmt: skip
    form = await request.post()
    note = str(form.get("note", "")).strip() or None
    actor = Actor(operator=str(request["operator"]), via="web", reason=note)
    step = _Step(request, action, form, actor, request.app[CONFIG])
    try:
        run = {"cancel": step.on_messages, "send-now": step.on_messages, "pause": step.on_queue,
               "resume": step.on_queue, "suppress": step.on_suppressions,
               "unsuppress": step.on_suppressions}.get(action, step.on_dead_letters)  # fmt: skip
        return await run()
    except CommandError as exc:
        return _render(request, "error.html.j2", http_status=400, error=str(exc))


class _Step:
    """One POST of an action: the confirmation page, or (confirm=yes) the action."""

    def __init__(self, request: web.Request, action: str, form: Any, actor: Actor, cfg: Any):
        self.request, self.action, self.form, self.actor, self.cfg = (
            request, action, form, actor, cfg)  # fmt: skip
        self.confirmed = form.get("confirm") == "yes"
        self.title = ACTIONS[action]

    def confirm(self, summary: str) -> web.Response:
        hidden = [(k, str(v)) for k, v in self.form.items() if k not in ("csrf", "confirm")]
        return _render(self.request, "confirm.html.j2", action=self.action, title=self.title,
                       summary=summary, hidden=hidden)  # fmt: skip

    async def on_messages(self) -> web.Response:
        ids = [i for i in map(parse_id, map(str, self.form.getall("id", []))) if i is not None]
        if not ids:
            raise CommandError("choose at least one message")
        if self.action == "cancel" and not self.actor.reason:
            raise CommandError("say why: the reason is kept on the message and audited")
        problems = await _db(self.request, lambda c: admin_find.refusals(c, ids, self.action))
        if problems:
            raise CommandError("nothing changed: " + "; ".join(problems))
        if not self.confirmed:
            listed = ", ".join(map(str, ids))
            return self.confirm(f"{self.title.lower()} {len(ids)} message(s): {listed}")
        if self.action == "cancel":
            done = await _db(self.request, lambda c: admin_find.cancel(c, ids, self.actor))
        else:
            channel = self.cfg.channel_name
            done = await _db(
                self.request, lambda c: admin_find.send_now(c, ids, self.actor, channel=channel)
            )
        result = f"{len(done)} of {len(ids)} message(s) done"
        return _render(self.request, "done.html.j2", title=self.title, result=result, ids=done)

    async def on_dead_letters(self) -> web.Response:
        selection = _selection(self.form, self.cfg.queue_name)
        chosen = [v for k, v in selection.params().items() if k != "queue" and v is not None]
        if not (self.form.get("all") == "yes" or chosen):
            raise CommandError("choose dead letters: tick some, filter, or choose all")
        retry = self.action == "retry"
        if retry and selection.ids:
            ids = selection.ids
            problems = await _db(self.request, lambda c: admin_dead.retry_refusals(c, ids))
            if problems:
                raise CommandError("nothing retried: " + "; ".join(problems))
        total, tokens, _ = await _db(self.request, lambda c: admin_dead.dead_count(c, selection))
        if not self.confirmed:
            skipped = (
                f" ({tokens} token email(s) skipped: secrets gone)" if retry and tokens else ""
            )
            count = total - tokens if retry else total
            return self.confirm(f"{self.title.lower()}: {count} dead letter(s){skipped}")
        channel = self.cfg.channel_name
        if retry:
            done = await _db(self.request, lambda c: admin_dead.dead_retry(
                c, selection, channel=channel, actor=self.actor))  # fmt: skip
        else:
            done = await _db(
                self.request, lambda c: admin_dead.dead_purge(c, selection, actor=self.actor)
            )
        result = f"{done} dead letter(s) done"
        return _render(self.request, "done.html.j2", title=self.title, result=result, ids=[])

    async def on_queue(self) -> web.Response:
        name = str(self.form.get("queue", "")).strip()
        if not 1 <= len(name) <= 63:
            raise CommandError("name the queue (1 to 63 characters)")
        pausing = self.action == "pause"
        if not self.confirmed:
            effect = ("no daemon claims from it until it is resumed; what was claimed "
                      "finishes" if pausing else "its daemons claim from it again")  # fmt: skip
            return self.confirm(f"{self.action} queue {name}: {effect}")
        if pausing:
            done = await _db(self.request, lambda c: admin_queues.pause(c, name, self.actor))
        else:
            channel = self.cfg.channel_name
            done = await _db(
                self.request,
                lambda c: admin_queues.resume(c, name, self.actor, channel=channel),
            )
        result = (
            f"queue {name} {self.action}d"
            if done
            else (f"queue {name} was {'already' if pausing else 'not'} paused: nothing changed")
        )
        return _render(self.request, "done.html.j2", title=self.title, result=result, ids=[],
                       queue_name=name)  # fmt: skip

    async def on_suppressions(self) -> web.Response:
        return await suppress.step(self)
