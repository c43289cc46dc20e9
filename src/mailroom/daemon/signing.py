"""Tokens signed into messages at send time (mailroom.message_tokens, 0019): only for the
recipient and template they were issued for. The raw secret and code go no further."""

from __future__ import annotations

import json
from collections.abc import Sequence

from mailroom import tokens
from mailroom.addresses import normalize_address
from mailroom.outbox import Message, MessageToken
from mailroom.transports import Result
from mailroom.transports.classify import Verdict


def render(message: Message, keys: Sequence[bytes]) -> Message | Result:
    """Sign the token issued for this message (``message.token``, from
    mailroom.message_tokens): the signed token goes into its template field
    (``secret``), a recovery's code into ``code``. Only if the message's recipients (to,
    cc and bcc together) are exactly the one address the token was issued for, and its
    template the one it was issued for: a copied, re-addressed, widened or re-templated
    message is never signed (dead, ``TokenNotIssued``). Template data itself is never a
    signing request (0019 refuses ``"$sign"``). The raw secret and code go no further
    than this function: not to a log, not to an error message."""
    token = message.token
    if token is None:
        return message  # the common case: the stored JSON goes to SES untouched
    if not keys:
        detail = "MAILROOM_SECRET_KEY is not set: this message's token cannot be signed"
        return Result(Verdict.DEFER, code="NoSecretKey", detail=detail)
    refused = _not_issued(message, token)
    if refused:
        return Result(Verdict.DEAD, code="TokenNotIssued", detail=refused)
    data = json.loads(message.template_data or "{}")  # stored by jsonb: an object
    try:
        data[token.field] = tokens.sign(
            keys[0], tokens.Action(token.action), token.secret, code=token.code
        )
    except ValueError as exc:  # a stored token the signer refuses: its type, never its value
        detail = f"this message's token cannot be signed: {type(exc).__name__}"
        return Result(Verdict.DEAD, code="TokenNotIssued", detail=detail)
    if token.code is not None:
        data["code"] = token.code
    return message._replace(template_data=json.dumps(data))


def _not_issued(message: Message, token: MessageToken) -> str | None:
    """Why the token may not be signed into this message, or None. Its template data must
    be an object to hold it (a document nested too deeply cannot be parsed here)."""
    every = (*message.to, *message.cc, *message.bcc)
    if {normalize_address(a) for a in every} != {token.recipient}:
        return "this message's token was not issued for its recipients"
    if message.template != token.template:
        return "this message's token was not issued for its template"
    try:
        data = json.loads(message.template_data or "{}")
    except RecursionError:
        data = None
    if not isinstance(data, dict):
        return "template data is not an object: the token has nowhere to go"
    return None
