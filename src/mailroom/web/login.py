"""The login form (issue 22): with MAILROOM_WEB_TOKEN or MAILROOM_WEB_USER / _PASSWORD a
browser has no way to send the header itself, so /login takes the token, or the user and
password, checks them as the header would be (security.login_who) and sets a signed
session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS, Path=/). The form's POST
passes the Origin and CSRF checks like every other; a failed attempt waits a second."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from mailroom.web import security
from mailroom.web.keys import SESSIONS, SETTINGS, render

FAILED_WAIT = 1.0  # seconds a wrong login waits: guessing goes at one try a second


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", form)
    app.router.add_post("/login", submit)
    app.router.add_post("/logout", logout)


def _page(
    request: web.Request, nxt: str, *, error: str | None = None, status: int = 200
) -> web.Response:
    settings = request.app[SETTINGS]
    nxt = security.safe_next(nxt)
    return render(request, "login.html.j2", http_status=status, error=error, next=nxt,
                  with_token=settings.token is not None,
                  with_password=settings.user is not None)  # fmt: skip


async def form(request: web.Request) -> web.StreamResponse:
    if not request.app[SETTINGS].authenticated or request["operator"]:
        raise web.HTTPSeeOther("/")  # nothing to log in to, or logged in already
    return _page(request, request.query.get("next", "/"))


async def submit(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if not settings.authenticated:
        raise web.HTTPSeeOther("/")
    fields = await request.post()
    operator = security.login_who(
        settings, token=str(fields.get("token", "")), user=str(fields.get("user", "")),
        password=str(fields.get("password", "")),
    )  # fmt: skip
    if operator is None:
        await asyncio.sleep(FAILED_WAIT)
        return _page(request, str(fields.get("next", "/")), status=401,
                     error="not logged in: wrong token, user or password")  # fmt: skip
    target = security.safe_next(str(fields.get("next", "/")))
    response = web.HTTPSeeOther(target)
    sessions = request.app[SESSIONS]
    response.set_cookie(
        security.SESSION_COOKIE, sessions.issue(operator, time.time()),
        max_age=int(sessions.seconds), httponly=True, samesite="Strict", path="/",
        secure=request.secure,
    )  # fmt: skip
    # a fresh CSRF token for the logged-in session (the one before login may be known)
    response.del_cookie(security.CSRF_COOKIE, path="/")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(security.SESSION_COOKIE, path="/")
    raise response
