"""The application's side: enqueue, read a message's status, cancel it, all in the caller's
own transaction, through whichever connection the caller holds:

- psycopg 3 ``Connection`` (or ``AsyncConnection`` with the ``*_async`` functions; SQLAlchemy's
  asyncio extension is not supported);
- psycopg2 connection;
- SQLAlchemy ``Connection`` or ``Session`` (run through ``exec_driver_sql``, so in the
  transaction SQLAlchemy manages, with its events and logging);
- Django's ``django.db.connection`` (or any DB-API connection whose driver takes
  ``%(name)s`` parameters).

One code path: the named query's text from queries.sql, with parameters every driver adapts
the same way (JSON as text cast to jsonb, bytes as bytea, lists as arrays). Nothing is
committed here: commit and the email will be sent; roll back and it never existed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from mailroom.addresses import ses_address
from mailroom.errors import conflict_of
from mailroom.sqltext import QUERIES

Rows = tuple[list[str], list[Sequence[Any]]]


def _addresses(value: str | tuple[str, str] | Iterable[Any] | None, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | tuple):
        value = [value]
    elif not isinstance(value, Iterable) or isinstance(value, bytes | Mapping):
        raise TypeError(f"{field} must be an address or a list of addresses, not {value!r}")
    out = []
    for address in value:
        pair = isinstance(address, tuple) and len(address) == 2
        if isinstance(address, str) or (pair and all(isinstance(p, str) for p in address)):
            out.append(ses_address(address))
        else:
            raise TypeError(
                f"{field}: an address must be a str or a (name, address) pair, not {address!r}"
            )
    return out


def enqueue_params(
    to: str | tuple[str, str] | Iterable[Any],
    *,
    template: str | None = None,
    data: Mapping[str, Any] | None = None,
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    raw: bytes | None = None,
    from_address: str | tuple[str, str] | None = None,
    cc: str | tuple[str, str] | Iterable[Any] | None = None,
    bcc: str | tuple[str, str] | Iterable[Any] | None = None,
    reply_to: str | tuple[str, str] | Iterable[Any] | None = None,
    config_set: str | None = None,
    priority: int = 0,
    not_before: datetime | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = 10,
    queue: str = "user_action_queue",
) -> dict[str, Any]:
    """The ``enqueue`` query's parameters. Addresses are strings (``ann@example.com``,
    ``Ann Smith <ann@example.com>``) or ``(display name, address)`` pairs; they are stored
    in the form SES takes (see :mod:`mailroom.addresses`)."""
    if data is not None and not isinstance(data, Mapping):
        raise TypeError("data must be a mapping (SES template data is a JSON object)")
    if from_address is not None and not isinstance(from_address, str | tuple):
        raise TypeError(f"from_address must be a str, not {from_address!r}")
    if raw is not None and not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"raw must be bytes (a MIME message), not {type(raw).__name__}")
    return {
        "to_addresses": _addresses(to, "to"),
        "template": template,
        # JSON text cast to jsonb in the query: the one form every driver passes unchanged
        "template_data": None if data is None else json.dumps(dict(data)),
        "subject": subject,
        "body_text": text,
        "body_html": html,
        "raw_mime": None if raw is None else bytes(raw),
        "from_address": None if from_address is None else _addresses(from_address, "from")[0],
        "cc_addresses": _addresses(cc, "cc"),
        "bcc_addresses": _addresses(bcc, "bcc"),
        "reply_to_addresses": _addresses(reply_to, "reply_to"),
        "config_set": config_set,
        "priority": priority,
        "not_before": not_before,
        "idempotency_key": idempotency_key,
        "max_attempts": max_attempts,
        "queue": queue,
    }


def kind_of(conn: object) -> str:
    """Which of the supported connection types ``conn`` is (mailroom.feed shares this)."""
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        if hasattr(conn, "exec_driver_sql"):
            return "sqlalchemy"
        if hasattr(conn, "connection") and hasattr(conn, "get_bind"):
            return "sqlalchemy-session"
    if module.startswith("psycopg.") or module == "psycopg":
        import psycopg  # noqa: PLC0415 -- a dependency already loaded by the caller

        if isinstance(conn, psycopg.AsyncConnection):
            return "psycopg-async"
    if hasattr(conn, "cursor"):
        return "dbapi"
    raise TypeError(
        f"mailroom cannot use a {type(conn).__module__}.{type(conn).__name__}: pass a psycopg"
        " 3 or psycopg2 connection, a SQLAlchemy Connection or Session, or Django's connection"
    )


def run_query(conn: object, name: str, params: Mapping[str, Any]) -> Rows:
    """Run the named query on any supported connection: (column names, rows)."""
    text = QUERIES[name]
    kind = kind_of(conn)
    if kind == "sqlalchemy-session":
        conn = conn.connection()  # type: ignore[attr-defined]  # the session's transaction
        kind = "sqlalchemy"
    if kind == "sqlalchemy":
        result = conn.exec_driver_sql(text, dict(params))  # type: ignore[attr-defined]
        return list(result.keys()), [tuple(r) for r in result.fetchall()]
    if kind == "psycopg-async":
        raise TypeError("an async connection: use enqueue_async / status_async / cancel_async")
    cursor = conn.cursor()  # type: ignore[attr-defined]
    try:
        cursor.execute(text, params)
        columns = [d[0] for d in cursor.description]
        return columns, list(cursor.fetchall())
    finally:
        cursor.close()


async def run_query_async(conn: object, name: str, params: Mapping[str, Any]) -> Rows:
    """:func:`run_query` for a psycopg ``AsyncConnection``."""
    if kind_of(conn) != "psycopg-async":
        raise TypeError("not a psycopg AsyncConnection: use enqueue / status / cancel")
    text = QUERIES[name]
    async with conn.cursor() as cursor:  # type: ignore[attr-defined]
        await cursor.execute(text, params)
        columns = [d[0] for d in cursor.description]
        return columns, list(await cursor.fetchall())


def _id(rows: Rows) -> int:
    return int(rows[1][0][0])


def _status(rows: Rows) -> dict[str, Any] | None:
    columns, found = rows
    return dict(zip(columns, found[0], strict=True)) if found else None


def enqueue(conn: Any, to: str | tuple[str, str] | Iterable[Any], **fields: Any) -> int:
    """Enqueue one email in ``conn``'s current transaction; returns the message id.

    Keyword arguments are those of :func:`enqueue_params`. Invalid fields raise the
    driver's error for check_violation (e.g. ``psycopg.errors.CheckViolation``) naming the
    rule broken, e.g. ``outbox_recipients_between_1_and_50``. An ``idempotency_key`` that
    already names a message of the caller's returns that message's id when the message is
    the same, and raises :class:`mailroom.IdempotencyConflict` when it is not.
    """
    params = enqueue_params(to, **fields)
    try:
        return _id(run_query(conn, "enqueue", params))
    except Exception as exc:
        conflict = conflict_of(exc, params["idempotency_key"])
        if conflict is None:
            raise
        raise conflict from exc


async def enqueue_async(conn: Any, to: str | tuple[str, str] | Iterable[Any], **fields: Any) -> int:
    """:func:`enqueue` for a psycopg ``AsyncConnection``."""
    params = enqueue_params(to, **fields)
    try:
        return _id(await run_query_async(conn, "enqueue", params))
    except Exception as exc:
        conflict = conflict_of(exc, params["idempotency_key"])
        if conflict is None:
            raise
        raise conflict from exc


def status(conn: Any, message_id: int) -> dict[str, Any] | None:
    """What ``mailroom.message_status(id)`` says of one of the caller's own messages, by
    column name (``status``, ``attempts``, ``created_at``, ``sent_at``, ...); None for a
    message that does not exist or that another login role enqueued."""
    return _status(run_query(conn, "app_status", {"id": message_id}))


async def status_async(conn: Any, message_id: int) -> dict[str, Any] | None:
    return _status(await run_query_async(conn, "app_status", {"id": message_id}))


def cancel(conn: Any, message_id: int) -> bool:
    """Cancel one of the caller's own messages that is not being sent yet (pending or
    retrying); True if it was. In the caller's transaction: a rollback undoes it."""
    return bool(run_query(conn, "app_cancel", {"id": message_id})[1][0][0])


async def cancel_async(conn: Any, message_id: int) -> bool:
    return bool((await run_query_async(conn, "app_cancel", {"id": message_id}))[1][0][0])
