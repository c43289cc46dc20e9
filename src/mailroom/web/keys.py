"""The console application's keys and ``run_db``: what app.py sets up and views.py reads,
in a module of their own so that views need not import app (which imports views)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import jinja2
import psycopg
from aiohttp import web
from psycopg_pool import ConnectionPool

from mailroom.config.settings import Config

T = TypeVar("T")
POOL = web.AppKey("pool", ConnectionPool)
CONFIG = web.AppKey("config", Config)
TEMPLATES = web.AppKey("templates", jinja2.Environment)


async def run_db(request: web.Request, work: Callable[[psycopg.Connection[Any]], T]) -> T:
    """``work(conn)`` in a worker thread on a pooled operator connection."""
    pool = request.app[POOL]

    def job() -> T:
        with pool.connection() as conn:
            return work(conn)

    return await asyncio.to_thread(job)
