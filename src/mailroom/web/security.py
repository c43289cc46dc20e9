"""Authentication (a bearer token or basic-auth credentials) and CSRF protection for the
console, as aiohttp middlewares. Pure logic, testable without a server."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailroom.web.settings import WebSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CSRF_COOKIE = "mailroom_csrf"
CSRF_FIELD = "csrf"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def who(header: str, settings: WebSettings) -> str | None:
    """The operator an Authorization header proves (None: it proves nothing)."""
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer" and settings.token is not None:
        return "token" if _same(value.strip(), settings.token) else None
    if scheme == "basic" and settings.user is not None and settings.password is not None:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        # both compared, always: the time taken says nothing about which was wrong
        ok = _same(user, settings.user) & _same(password, settings.password) & bool(sep)
        return user if ok else None
    return None


def auth_middleware(settings: WebSettings) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not settings.authenticated:  # loopback only (settings.load refuses otherwise)
            request["operator"] = "local"
            return await handler(request)
        operator = who(request.headers.get("Authorization", ""), settings)
        if operator is None:
            headers = {"WWW-Authenticate": 'Basic realm="mailroom", charset="UTF-8"'}
            if settings.user is None:
                headers = {"WWW-Authenticate": 'Bearer realm="mailroom"'}
            return web.Response(status=401, text="authentication required\n", headers=headers)
        request["operator"] = operator
        return await handler(request)

    return authenticate


@web.middleware
async def csrf(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Double-submit token: a random cookie (SameSite=Strict, HttpOnly) that every form
    repeats in a hidden field; a POST whose field does not match, or whose Origin is
    another site's, is refused before its handler runs."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if request.method == "POST":
        form = await request.post()
        given = str(form.get(CSRF_FIELD, ""))
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return web.Response(status=403, text="refused: the request comes from another site\n")
        if not token or not given or not _same(given, token):
            return web.Response(
                status=403, text="refused: missing or wrong CSRF token (reload the page)\n"
            )
    fresh = not token
    if fresh:
        token = secrets.token_urlsafe(32)
    request["csrf"] = token
    response = await handler(request)
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


def security_headers() -> Middleware:
    @web.middleware
    async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer the browser sends "Origin: null"
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return headers
