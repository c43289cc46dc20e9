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
