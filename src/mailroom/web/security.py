"""Host and Origin checks (against DNS rebinding), authentication (a bearer token or
basic-auth credentials, in a header or through the login form's signed session cookie)
and CSRF protection for the console, as aiohttp middlewares. Pure logic, testable
without a server."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from mailroom.web.settings import WebSettings, is_loopback

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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port or None) of a Host header or URL authority; None: malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
    else:
        name, colon, port_text = value.rpartition(":")
        if not colon:
            name, port_text = value, ""
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    return name.removesuffix("."), int(port_text) if port_text else None


def host_allowed(value: str, settings: WebSettings) -> bool:
    """A Host the console answers: a loopback name or address (localhost, 127.0.0.0/8,
    [::1]) when it is bound to loopback, else the MAILROOM_WEB_HOST name only; with the
    console's port or none. A page a rebinding DNS name points at 127.0.0.1 sends its
    own name here, and is refused."""
    parts = split_host(value)
    if parts is None or not parts[0]:
        return False
    name, port = parts
    if port is not None and port != settings.port:
        return False
    if is_loopback(settings.host):
        return is_loopback(name)
    return name == settings.host.lower().strip("[]").removesuffix(".")


def host_check(settings: WebSettings) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), settings):
            # a plain line, before authentication and any page: nothing is revealed
            return web.Response(
                status=421, text="refused: this console does not serve that host name\n"
            )
        return await handler(request)

    return check


def origin_allowed(request: web.Request, settings: WebSettings) -> bool:
    """A state-changing request's Origin (or, without one, its Referer) names this
    console: same scheme, an allowed host, the same port as the Host it was sent to."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    try:
        url = urlsplit(source)
    except ValueError:
        return False
    if url.scheme != request.scheme or not url.netloc or "@" in url.netloc:
        return False
    if not host_allowed(url.netloc, settings):
        return False
    given = split_host(url.netloc)
    sent = split_host(request.headers.get("Host", ""))
    default = 443 if request.scheme == "https" else 80
    return (
        given is not None
        and sent is not None
        and given[0] == sent[0]
        and (given[1] or default) == (sent[1] or default)
    )


def origin_check(settings: WebSettings) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in SAFE_METHODS and not origin_allowed(request, settings):
            return web.Response(
                status=403, text="refused: the request does not come from this console's pages\n"
            )
        return await handler(request)

    return check


SESSION_COOKIE = "mailroom_session"
SESSION_SECONDS = 12 * 3600  # a login lasts a shift; a restart of the console ends it too
OPEN_PATHS = ("/login", "/static/")  # reachable before logging in (nothing else is)


class Sessions:
    """Signed session cookies for the login form: ``operator|expiry|nonce|mac``, the MAC an
    HMAC-SHA256 under a key drawn when the console starts (never stored: restarting the
    console logs everyone out). Nothing but the operator's name and the expiry is in it."""

    def __init__(self, key: bytes | None = None, seconds: float = SESSION_SECONDS) -> None:
        self.key = key or secrets.token_bytes(32)
        self.seconds = seconds

    def _mac(self, body: str) -> str:
        return hmac.new(self.key, body.encode("utf-8"), hashlib.sha256).hexdigest()

    def issue(self, operator: str, now: float) -> str:
        name = base64.urlsafe_b64encode(operator.encode("utf-8")).decode("ascii")
        body = f"{name}|{int(now + self.seconds)}|{secrets.token_urlsafe(12)}"
        return f"{body}|{self._mac(body)}"

    def operator(self, cookie: str, now: float) -> str | None:
        """The operator a cookie names while it is valid (None: forged, altered, expired)."""
        body, _, mac = cookie.rpartition("|")
        if not body or not _same(mac, self._mac(body)):
            return None
        name, _, rest = body.partition("|")
        expiry, _, _ = rest.partition("|")
        if not (expiry.isascii() and expiry.isdigit()) or int(expiry) < now:
            return None
        try:
            return base64.urlsafe_b64decode(name.encode("ascii")).decode("utf-8") or None
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None


def login_who(settings: WebSettings, *, token: str, user: str, password: str) -> str | None:
    """The operator the login form's fields prove, as ``who`` judges the same headers."""
    if token and settings.token is not None:
        return who("Bearer " + token, settings)
    if user and settings.user is not None:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return who("Basic " + encoded, settings)
    return None


def safe_next(value: str) -> str:
    """Where to go after logging in: a path of this console only (never //host, nor a
    backslash, which browsers read as a slash: another site)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"
    return value


def auth_middleware(settings: WebSettings, sessions: Sessions) -> Middleware:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not settings.authenticated:  # loopback only (settings.load refuses otherwise)
            request["operator"] = "local"
            return await handler(request)
        operator = who(request.headers.get("Authorization", ""), settings)
        if operator is None and request.cookies.get(SESSION_COOKIE):
            operator = sessions.operator(request.cookies[SESSION_COOKIE], time.time())
        if operator is None and request.path.startswith(OPEN_PATHS):
            request["operator"] = ""
            return await handler(request)
        if (
            operator is None
            and request.method == "GET"
            and "text/html" in request.headers.get("Accept", "")
        ):  # a browser: to the login form, and back here after it
            raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
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
    repeats in a hidden field; a POST whose field does not match is refused before its
    handler runs (origin_check has already refused one from another site)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if request.method == "POST":
        form = await request.post()
        given = str(form.get(CSRF_FIELD, ""))
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
            # scripts and fetches from the console only (static/refresh.js): no inline
            # script, no eval, nothing from elsewhere
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
            "img-src 'self' data:; frame-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; "
            "base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer the browser sends "Origin: null"
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return headers
