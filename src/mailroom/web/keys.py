"""The console application's keys, ``run_db`` and ``render``: what app.py sets up and the
page modules read, in a module of their own so that they need not import app (which
imports them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import jinja2
import psycopg
from aiohttp import web
from psycopg_pool import ConnectionPool

from mailroom.config.settings import Config
from mailroom.web.security import Sessions
from mailroom.web.settings import WebSettings

T = TypeVar("T")
POOL = web.AppKey("pool", ConnectionPool)
CONFIG = web.AppKey("config", Config)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
# False when the console's role may read but not act (mailroom_viewer): checked at start
CAN_ACT = web.AppKey("can_act", bool)
SETTINGS = web.AppKey("settings", WebSettings)
SESSIONS = web.AppKey("sessions", Sessions)


async def run_db(request: web.Request, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    """``work(conn)`` in a worker thread on a pooled operator connection."""
    pool = request.app[POOL]

    def job() -> T:
        with pool.connection() as conn:
            return work(conn)

    return await asyncio.to_thread(job)


def render(request: web.Request, name: str, http_status: int = 200, **context: Any) -> web.Response:
    template = request.app[TEMPLATES].get_template(name)
    html = template.render(
        csrf=request.get("csrf", ""), operator=request.get("operator", ""),
        queue=request.app[CONFIG].queue_name, can_act=request.app[CAN_ACT],
        authenticated=request.app[SETTINGS].authenticated,
        now=datetime.now(UTC), path=request.path, **context,
    )  # fmt: skip
    return web.Response(text=html, content_type="text/html", status=http_status)
