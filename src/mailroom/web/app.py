"""The console's application: settings, a small pool of operator connections, the
routes, and ``serve`` for ``mailroom web``.

Database work runs the operator/ functions the CLI calls too (admin, find, dead, stats)
in worker threads on connections of a psycopg pool: one set of named queries for both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import psycopg
from aiohttp import web
from psycopg_pool import ConnectionPool, PoolTimeout

from mailroom import migrate, outbox
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.operator import queues as admin_queues
from mailroom.text import CommandError
from mailroom.web import login, security, views
from mailroom.web.keys import CAN_ACT, CONFIG, POOL, SESSIONS, SETTINGS, TEMPLATES, render
from mailroom.web.settings import WebSettings

HERE = Path(__file__).parent
# what the console needs to act: 0020's functions and 0027's pause and resume
ACTS = (*admin_audit.ACTS, *admin_queues.PAUSES_QUEUE, *admin_queues.RESUMES_QUEUE)


@web.middleware
async def unavailable(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    """The database gone (a restart, a failover, the network) or the pool exhausted: a
    styled page saying so, 503, never a bare 500; the pool's check replaces the broken
    connections, so the next page works once the database is back."""
    try:
        return await handler(request)
    except (psycopg.OperationalError, PoolTimeout):
        return render(request, "error.html.j2", http_status=503,
                      error="the database is unreachable just now (restarting, or cut off); "
                      "this page retries by itself, or reload it")  # fmt: skip


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped: addresses and errors come from outside
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(views.FILTERS)
    return env


def make_app(
    cfg: Config, settings: WebSettings, pool: ConnectionPool[Any], *, can_act: bool = True
) -> web.Application:
    sessions = security.Sessions()
    app = web.Application(
        middlewares=[
            security.host_check(settings),
            security.security_headers(),
            unavailable,
            security.auth_middleware(settings, sessions),
            security.origin_check(settings),
            security.csrf,
        ],
        client_max_size=256 * 1024,
    )
    app[POOL] = pool
    app[CONFIG] = cfg
    app[TEMPLATES] = templates()
    app[CAN_ACT] = can_act
    app[SETTINGS] = settings
    app[SESSIONS] = sessions
    views.add_routes(app)
    login.add_routes(app)
    app.router.add_static("/static/", HERE / "static", append_version=True)
    return app


def check_database(cfg: Config) -> bool:
    """Refuse to start on a database that is behind, or as a role that may not even read
    what the console shows; True if the role may act too (mailroom_operator)."""
    with outbox.connect(cfg.database_url, connect_timeout=10) as conn:
        try:
            migrate.check_ready(conn, channel=cfg.channel_name)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CommandError(
                f"the database refused: {str(exc).strip()} (connected as {conn.info.user}; "
                "the console needs a member of mailroom_operator)",
                3,
            ) from None
        admin_audit.require(conn, "web", admin_audit.READS)  # see: operator or viewer
        try:
            admin_audit.require(conn, "web", ACTS)
        except CommandError:
            return False  # mailroom_viewer: the console shows, and refuses every action
        return True


def serve(cfg: Config, settings: WebSettings, *, ready: Callable[[str], None] = print) -> None:
    """Serve until SIGINT / SIGTERM."""
    can_act = check_database(cfg)
    pool: ConnectionPool[Any] = ConnectionPool(
        cfg.database_url, min_size=1, max_size=4, open=True,
        kwargs={"autocommit": True, "connect_timeout": 10},
        configure=outbox.secure_session,
        # a connection the server closed (restart, failover) is replaced before use, not
        # handed to a page that would fail on it
        check=ConnectionPool.check_connection,
    )  # fmt: skip
    try:
        app = make_app(cfg, settings, pool, can_act=can_act)

        async def announce(_: web.Application) -> None:
            auth = "authentication on" if settings.authenticated else "no authentication: loopback"
            ready(f"mailroom web: serving http://{settings.host}:{settings.port}/ ({auth})")

        app.on_startup.append(announce)
        web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    finally:
        pool.close()
