"""A message's content as the console previews it (issue 22): subject, text, HTML and
template data, with addresses masked (unless revealed) and secret-looking template values
hidden always (a reset link, a code, a token: whoever reads the console must not be able
to use them). Token emails (0019) carry no secret in their data at all: it is signed in
at send time from mailroom.message_tokens, which the operator cannot read."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from mailroom.outbox import query
from mailroom.text import masker

Connection = psycopg.Connection[Any]
HIDDEN = "(hidden: it may be a secret)"
# a key naming something secret, or a link (reset and activation links carry tokens)
SECRET_KEY = re.compile(
    r"secret|token|passw|pwd|code|otp|pin|key|auth|session|signature|sig\b|link|url|href",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(r"https?://\S*[?&#/][A-Za-z0-9_\-]{20,}|\b[A-Za-z0-9_\-]{32,}\b")
HIDDEN_PART = "(hidden)"
VALUE_SHOWN = 300  # characters of a value shown at most


def hide(key: str, value: Any, shown: Any) -> str:
    """What the console shows of one template value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if SECRET_KEY.search(key) or SECRET_VALUE.search(text):
        return HIDDEN
    text = str(shown(text))
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN] + "…"


def subject_shown(subject: str | None, shown: Any) -> str | None:
    """A subject as the console and ``mailroom show`` print it: addresses masked (unless
    revealed) and anything that looks like a secret (a link with a token, a long opaque
    string) hidden always, as in the template data: "Your reset link: https://..."."""
    if subject is None:
        return None
    return str(shown(SECRET_VALUE.sub(HIDDEN_PART, subject)))


def content(conn: Connection, message_id: int, *, reveal: bool = False) -> dict[str, Any] | None:
    row = conn.execute(query("message_content"), {"id": message_id}).fetchone()
    if row is None:
        return None
    subject, text, html, data, raw_size = row
    shown = masker(reveal)
    items = data.items() if isinstance(data, dict) else []
    return {
        "subject": subject_shown(subject, shown),
        "text": shown(text),
        "html": shown(html),
        "data": [(k, hide(k, v, shown)) for k, v in sorted(items)],
        "raw_size": raw_size,
    }


# -- a templated message rendered from the local templates (issue 24) ------------------------

TOKEN_SHOWN = "[token hidden]"  # noqa: S105 -- what is shown instead of one, not a password
SECRET_SHOWN = "[hidden]"  # noqa: S105 -- as above
PREVIEW_TRIES = 8  # at most this many secret-named attributes filled in by the preview


def preview_data(data: Any, shown: Any, path: str = "") -> Any:
    """The template data the console renders with: every string that ``hide`` would hide
    (by its key or its look) replaced, addresses masked unless revealed. Nested data is
    walked (its depth is bounded by mailroom.templates.handlebars.check_data first)."""
    if isinstance(data, dict):
        return {k: preview_data(v, shown, f"{path}.{k}") for k, v in data.items()}
    if isinstance(data, list):
        return [preview_data(v, shown, path) for v in data]
    if isinstance(data, str):
        if SECRET_KEY.search(path) or SECRET_VALUE.search(data):
            return SECRET_SHOWN
        return shown(data)
    return data


def template_preview(
    conn: Connection,
    message_id: int,
    *,
    template: str,
    token: str | None,
    directory: Any,
    reveal: bool = False,
) -> dict[str, Any]:
    """The message rendered from ``directory``'s copy of its template with its data,
    secrets hidden: {"subject", "text", "html"} or {"error"}. The token a token email
    (``token``: its action) carries is signed at send time and never readable here: its
    fields (``secret``, a recovery's ``code``) show as TOKEN_SHOWN."""
    from mailroom.templates import files, handlebars, mime  # noqa: PLC0415 -- page only

    def failed(why: str) -> dict[str, Any]:
        return {"error": why, "subject": None, "text": None, "html": None}

    row = conn.execute(query("message_content"), {"id": message_id}).fetchone()
    data = row[3] if row is not None and isinstance(row[3], dict) else {}
    try:
        handlebars.check_data(data)
        found = files.load(directory, template)
    except (handlebars.TemplateError, files.TemplateFileError) as exc:
        return failed(str(exc))
    if found is None:
        return failed(f"template {template} is not in {directory}")
    values = preview_data(data, masker(reveal))
    if token is not None:
        values["secret"] = TOKEN_SHOWN
        if token == "password_recovery":  # noqa: S105 -- the token's action, not a secret
            values["code"] = TOKEN_SHOWN
    for _ in range(PREVIEW_TRIES):
        try:
            rendered = mime.render(found, values)
        except handlebars.MissingAttribute as exc:
            # a secret-named field the data lacks (a token field of another name): shown
            # as hidden, as SES would have had it filled; any other is the data's fault
            if not SECRET_KEY.search(exc.name) or exc.name in values:
                return failed(str(exc))
            values[exc.name.split(".")[0]] = TOKEN_SHOWN
        except handlebars.TemplateError as exc:
            return failed(str(exc))
        else:
            return {"error": None, **rendered.as_dict()}
    return failed("too many hidden fields to preview")
