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
from psycopg_pool import ConnectionPool

from mailroom import migrate, outbox
from mailroom.config.settings import Config
from mailroom.operator import audit as admin_audit
from mailroom.text import CommandError
from mailroom.web import security, views
from mailroom.web.keys import CONFIG, POOL, TEMPLATES
from mailroom.web.settings import WebSettings

HERE = Path(__file__).parent


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped: addresses and errors come from outside
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(views.FILTERS)
    return env


def make_app(cfg: Config, settings: WebSettings, pool: ConnectionPool[Any]) -> web.Application:
    app = web.Application(
        middlewares=[
            security.host_check(settings),
            security.security_headers(),
            security.auth_middleware(settings),
            security.origin_check(settings),
            security.csrf,
        ],
        client_max_size=256 * 1024,
    )
    app[POOL] = pool
    app[CONFIG] = cfg
    app[TEMPLATES] = templates()
    views.add_routes(app)
    app.router.add_static("/static/", HERE / "static", append_version=True)
    return app


def check_database(cfg: Config) -> None:
    """Refuse to start on a database that is behind, or as a role that is no operator."""
    with outbox.connect(cfg.database_url, connect_timeout=10) as conn:
        try:
            migrate.check_ready(conn, channel=cfg.channel_name)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CommandError(
                f"the database refused: {str(exc).strip()} (connected as {conn.info.user}; "
                "the console needs a member of mailroom_operator)",
                3,
            ) from None
        admin_audit.require(conn, "web", admin_audit.ACTS)


def serve(cfg: Config, settings: WebSettings, *, ready: Callable[[str], None] = print) -> None:
    """Serve until SIGINT / SIGTERM."""
    check_database(cfg)
    pool: ConnectionPool[Any] = ConnectionPool(
        cfg.database_url, min_size=1, max_size=4, open=True,
        kwargs={"autocommit": True, "connect_timeout": 10},
        configure=outbox.secure_session,
    )  # fmt: skip
    try:
        app = make_app(cfg, settings, pool)

        async def announce(_: web.Application) -> None:
            auth = "authentication on" if settings.authenticated else "no authentication: loopback"
            ready(f"mailroom web: serving http://{settings.host}:{settings.port}/ ({auth})")

        app.on_startup.append(announce)
        web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    finally:
        pool.close()
