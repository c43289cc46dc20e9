"""Connection strings shown without their secrets.

A password can hide in a URL's user info (with unencoded ``@ / : ?`` that libpq then
reads as a host, a port or a path), in the URL's query (``?password=``, its key perhaps
percent-encoded), or in a key=value string. Redaction works on what libpq would decode,
and ``scrub`` removes every fragment of a password from any text (a libpq error message
quotes the parts it parsed, so it may hold a piece of one). Pure logic, no driver needed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

HIDDEN = "(not a connection string; not shown)"
# keys whose value is a secret, after percent-decoding (libpq decodes query keys too)
SECRET_KEYS = frozenset({"password", "sslpassword"})
_KEYVALUE = re.compile(r"""(\w+)(\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']*)""")


def _split_url(dsn: str) -> tuple[str, str, str, str] | None:
    """(scheme, user info, the rest of the authority and path, query) or None."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        return None
    # the LAST "@" ends the user info: a password's unencoded "@", "/", ":" or "?" stays
    # inside it, whatever libpq would make of them
    userinfo, at, after = rest.rpartition("@")
    if not at:
        userinfo, after = "", rest
    path, _, query = after.partition("?")
    return scheme, userinfo, path, query


def _query_secrets(query: str) -> list[str]:
    found = []
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote(key).strip().lower() in SECRET_KEYS:
            found.append(value)
    return found


def fragments(dsn: str) -> list[str]:
    """Every piece of text that is (part of) a password in ``dsn``, encoded and decoded,
    longest first: each must be kept out of anything shown."""
    raw: list[str] = []
    parts = _split_url(dsn)
    if parts is not None:
        _, userinfo, path, query = parts
        raw.extend(_query_secrets(query))
        if ":" in userinfo:
            raw.append(userinfo.partition(":")[2])
        elif not userinfo:  # "user:pw/db" with no "@": libpq reads pw as the port
            authority = path.partition("/")[0]
            port = authority.rpartition(":")[2] if ":" in authority else ""
            if port and not port.replace(",", "").isdigit():
                raw.append(port)
    else:
        for key, _, value in _KEYVALUE.findall(dsn):
            if key.lower() in SECRET_KEYS:
                raw.append(value.strip("'"))
    pieces: set[str] = set()
    for secret in raw:
        for form in (secret, unquote(secret)):
            pieces.add(form)
            # libpq splits at the first "@", "/", ":" or "?": any piece may be echoed
            pieces.update(p for p in re.split(r"[@/:?]", form) if len(p) >= 3)
    return sorted((p for p in pieces if p), key=len, reverse=True)


def scrub(text: str, dsn: str) -> str:
    """``text`` (an error message, say) with every password fragment of ``dsn`` hidden."""
    if dsn:
        text = text.replace(dsn, redact(dsn))
    for piece in fragments(dsn):
        text = text.replace(piece, "***")
    return text


def redact(dsn: str) -> str:
    """The connection string with its passwords replaced by ``***``. Anything that is not
    a connection string at all may hold a password anywhere: not shown."""
    parts = _split_url(dsn)
    if parts is None:
        if "=" not in dsn:
            return HIDDEN

        def hide(match: re.Match[str]) -> str:
            key, eq, _ = match.groups()
            return f"{key}{eq}***" if key.lower() in SECRET_KEYS else match.group(0)

        shown = _KEYVALUE.sub(hide, dsn)
    else:
        scheme, userinfo, path, query = parts
        if ":" in userinfo:
            userinfo = userinfo.partition(":")[0] + ":***"
        pairs = []
        for pair in query.split("&") if query else []:
            key = pair.partition("=")[0]
            pairs.append(f"{key}=***" if unquote(key).strip().lower() in SECRET_KEYS else pair)
        shown = f"{scheme}://{userinfo}{'@' if userinfo else ''}{path}"
        shown += f"?{'&'.join(pairs)}" if query else ""
    # the last guard: a fragment this parsing missed hides the whole string
    if any(len(p) >= 4 and p in shown.replace("***", "") for p in fragments(dsn)):
        return "(a connection string whose password could not be redacted; not shown)"
    return shown
