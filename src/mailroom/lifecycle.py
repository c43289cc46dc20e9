"""The web application's side of the account lifecycle (``mailroom migrate --with
lifecycle``): consume a token from a link, request a password recovery.

A token's signature is checked before the database is asked anything, so a forged or
mangled link costs no query; a genuine one is checked for expiry, prior use and code and
consumed in one round trip, so a replayed link is refused.

Since lifecycle 1004 every query here sees only the accounts and tokens of the
connection's login role (row-level security by owner; docs/tokens.md): connect as the
application's own role, never as one that bypasses row-level security.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from mailroom import tokens
from mailroom.outbox import query

OWNERS_VERSION = 1004  # lifecycle 1004: accounts and tokens belong to an application


@dataclass(frozen=True, slots=True)
class Consumed:
    account_id: int


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # why, in words fit for a log; never the token itself


def _check(
    token: str, action: tokens.Action, keys: Sequence[bytes], code: str | None
) -> dict[str, Any] | Refused:
    result = tokens.verify_any(token, action, keys, now=time.time(), code=code)
    if isinstance(result, tokens.Rejected):
        return Refused(result.reason.value)
    # the row is found by the secret's hash (lifecycle 1003); the HMAC just checked binds
    # the code, which the database no longer keeps
    return {"secret_hash": hashlib.sha256(result.secret).digest(), "action": action.value}


def _outcome(row: tuple[Any, ...] | None) -> Consumed | Refused:
    account_id, why, found = row if row else (None, None, False)
    if account_id is not None:
        return Consumed(int(account_id))
    return Refused(str(why) if found else "unknown token")


def consume_token(
    conn: psycopg.Connection[Any],
    token: str,
    action: tokens.Action,
    keys: Sequence[bytes],
    *,
    code: str | None = None,
) -> Consumed | Refused:
    """Verify ``token`` offline, then check and consume it in the database (within the
    caller's transaction). Consuming an activation token activates its account."""
    params = _check(token, action, keys, code)
    if isinstance(params, Refused):
        return params
    return _outcome(conn.execute(query("consume_token"), params).fetchone())


async def consume_token_async(
    conn: psycopg.AsyncConnection[Any],
    token: str,
    action: tokens.Action,
    keys: Sequence[bytes],
    *,
    code: str | None = None,
) -> Consumed | Refused:
    """:func:`consume_token` for an async connection."""
    params = _check(token, action, keys, code)
    if isinstance(params, Refused):
        return params
    cur = await conn.execute(query("consume_token"), params)
    return _outcome(await cur.fetchone())


def request_password_recovery(conn: psycopg.Connection[Any], login_or_email: str) -> bool:
    """Create a recovery token, and so its email, for an active account. Returns whether
    one was created; tell the user the same thing either way."""
    return (
        conn.execute(query("request_password_recovery"), {"who": login_or_email}).fetchone()
        is not None
    )


async def request_password_recovery_async(
    conn: psycopg.AsyncConnection[Any], login_or_email: str
) -> bool:
    """:func:`request_password_recovery` for an async connection."""
    cur = await conn.execute(query("request_password_recovery"), {"who": login_or_email})
    return await cur.fetchone() is not None


def unowned_accounts(conn: psycopg.Connection[Any]) -> int:
    """How many accounts have no owner (see docs/tokens.md, "Upgrading to 1004"): 0 where
    the lifecycle module is not installed or is older than 1004. Only the schema owner,
    who is not subject to row-level security, sees them all."""
    applied = {int(row[0]) for row in conn.execute(query("migrations_applied")).fetchall()}
    if OWNERS_VERSION not in applied:
        return 0
    row = conn.execute(query("lifecycle_unowned")).fetchone()
    return int(row[0]) if row else 0
