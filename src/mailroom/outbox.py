"""The outbox: the one module that runs mailroom's SQL (named queries in queries.sql)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import anyio
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from mailroom.sqltext import QUERIES


def query(name: str, **identifiers: str) -> sql.Composed:
    """A named query; {slots} take identifiers, quoted by psycopg."""
    template = sql.SQL(QUERIES[name])  # static text from queries.sql
    if not identifiers:
        return sql.Composed([template])
    return template.format(**{k: sql.Identifier(v) for k, v in identifiers.items()})


@dataclass(frozen=True, slots=True)
class MessageToken:
    """A token the daemon signs into one message (mailroom.message_tokens, 0019): issued
    for that message id, for ``recipient`` alone and for ``template``. Secret and code
    never in a repr."""

    action: str
    field: str
    secret: bytes = dataclass_field(repr=False)
    code: str | None = dataclass_field(repr=False)
    recipient: str = dataclass_field(repr=False)
    template: str | None = None  # the SES template it was issued for


class Message(NamedTuple):
    """A claimed outbox row: what a transport needs to send it. A tuple: thousands are
    built per second straight from result rows."""

    id: int
    attempts: int
    max_attempts: int
    from_address: str | None
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    config_set: str | None
    template: str | None
    template_data: str | None  # JSON text of an object, as stored
    subject: str | None
    body_text: str | None
    body_html: str | None
    raw_mime: bytes | None
    created_at: float  # unix seconds, for enqueue-to-send latency
    enqueued_by: str | None = None  # the enqueuing login role (None: enqueued before 0008)
    token: MessageToken | None = None  # the token to sign at send time, if any (0019)

    @property
    def kind(self) -> str:
        if self.template is not None:
            return "template"
        return "raw" if self.raw_mime is not None else "simple"


@dataclass(frozen=True, slots=True)
class Disposition:
    """The row's next state, as the ``record`` query takes it. The daemon's retry policy
    computes it (mailroom.daemon.retry.dispose); it lives here, with the query it feeds,
    so that the outbox needs nothing from the daemon."""

    status: str  # sent | retrying | dead | pending
    refund: int  # 1 when this try must not count
    delay: float  # seconds until due again (retrying/pending)
    attempt_outcome: str | None  # attempts-table outcome; None: no try happened
    provider_id: str | None = None
    error: str | None = None


_TOKEN_AT = len(Message._fields) - 1  # the claim's token columns follow the message's


def _claim_order(row: Sequence[Any]) -> tuple[int, datetime, int]:
    """Highest priority, then oldest due, then id: the claim's columns after the token's
    are the priority, the due time and the lease (the query returns rows unsorted)."""
    return -row[-3], row[-2], row[0]


def _token(row: Sequence[Any]) -> MessageToken:
    action, field, secret, code, recipient, template = row[_TOKEN_AT : _TOKEN_AT + 6]
    return MessageToken(str(action), str(field), bytes(secret), code, str(recipient), template)


# Claimed tries remembered before old ones are forgotten: far above any number in flight.
TRIES_KEPT = 100_000

# What a caller of Outbox treats as "the database is unavailable right now".
UNAVAILABLE = (psycopg.Error, TimeoutError)


class Outbox:
    """The daemon's access to the outbox, through a small pool of autocommit connections.

    Every round trip is bounded by ``timeout``: a connection gone silent (a network
    partition that keeps TCP half open) raises TimeoutError instead of hanging the daemon,
    and the pool discards a connection given back in the middle of a query.
    """

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, queue: str, owner: str, timeout: float = 10.0
    ) -> None:
        self._pool = pool
        self.queue = queue
        self.owner = owner
        self.timeout = timeout
        self._claim = query("claim")
        self._record = query("record")
        # Each claimed message's try number and lease end, until its outcome is recorded:
        # the lease is the try's key in the attempts log (0023), so that a late success
        # replaces the reaper's lease_expired row instead of adding a second one. Bounded
        # by the messages in flight (the daemon records every batch it claims).
        self._tries: dict[int, tuple[int, datetime]] = {}

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            with anyio.fail_after(self.timeout):
                async with self._pool.connection() as conn:
                    yield conn
        except TimeoutError:
            # A silent connection means the path to the server failed, and the pool's idle
            # connections went through it too: replace them all now rather than finding
            # each one by waiting out another timeout.
            await self._pool.drain()
            raise

    async def claim(self, limit: int, lease_seconds: float) -> list[Message]:
        params = {
            "queue": self.queue,
            "limit": limit,
            "owner": self.owner,
            "lease_seconds": lease_seconds,
        }
        async with self.connection() as conn:
            # binary results: the driver reads arrays, timestamps and numbers faster so
            cur = await conn.cursor(binary=True).execute(self._claim, params)
            rows = await cur.fetchall()
        rows.sort(key=_claim_order)
        if len(self._tries) > TRIES_KEPT:
            self._forget_old_tries()
        messages = []
        for row in rows:
            token = None if row[_TOKEN_AT] is None else _token(row)
            # cc, bcc and reply-to come back NULL when empty (see the claim query)
            cc, bcc, reply_to = row[5] or [], row[6] or [], row[7] or []
            message = Message._make((*row[:5], cc, bcc, reply_to, *row[8:_TOKEN_AT], token))
            self._tries[message.id] = (message.attempts, row[-1])  # the lease's end, last
            messages.append(message)
        return messages

    def _forget_old_tries(self) -> None:
        """Drop tries whose lease ended long ago: refused outcomes no success followed."""
        horizon = datetime.now(UTC) - timedelta(hours=1)
        for message_id, (_, lease_until) in list(self._tries.items()):
            if lease_until < horizon:
                del self._tries[message_id]

    async def record(self, outcomes: Sequence[tuple[int, Disposition]]) -> set[int]:
        """Write a batch's outcomes in one round trip; returns the ids actually written."""
        if not outcomes:
            return set()
        params: dict[str, Any] = {
            "owner": self.owner,
            "ids": [i for i, _ in outcomes],
            "provider_ids": [d.provider_id for _, d in outcomes],
            "statuses": None,  # NULL arrays: every message sent, the common case
            "refunds": None,
            "delays": None,
            "errors": None,
            "attempt_outcomes": None,
            "tries": [self._tries.get(i, (None, None))[0] for i, _ in outcomes],
            "leases": [self._tries.get(i, (None, None))[1] for i, _ in outcomes],
        }
        if any(d.status != "sent" for _, d in outcomes):
            params["statuses"] = [d.status for _, d in outcomes]
            params["refunds"] = [int(d.refund) for _, d in outcomes]
            # one type per binary array: a delay of 0 (an int) among floats is refused
            params["delays"] = [float(d.delay) for _, d in outcomes]
            params["errors"] = [d.error for _, d in outcomes]
            params["attempt_outcomes"] = [d.attempt_outcome for _, d in outcomes]
        async with self.connection() as conn:
            cur = await conn.execute(self._record, params)
            row = await cur.fetchone()
        written = set(row[0]) if row else set()
        # A refused outcome keeps its entry: the holder may still report that try's success
        # (always worth recording). Claiming the message again replaces the entry.
        for message_id in written:
            self._tries.pop(message_id, None)
        return written

    async def reap_expired(self) -> int:
        async with self.connection() as conn:
            cur = await conn.execute(query("reap_expired"), {"queue": self.queue})
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def gauges(self) -> tuple[dict[str, int], float]:
        """Live work by status (sent excluded) and the oldest due message's age, seconds."""
        async with self.connection() as conn:
            cur = await conn.execute(query("gauges"), {"queue": self.queue})
            row = await cur.fetchone()
        assert row is not None  # noqa: S101 -- a SELECT of scalar subqueries returns one row
        pending, retrying, sending, dead, oldest = row
        counts = {"pending": pending, "retrying": retrying, "sending": sending, "dead": dead}
        return {k: int(v) for k, v in counts.items()}, float(oldest)

    async def queue_paused(self) -> bool:
        """Whether an operator has paused this queue (0027; the claim skips it then)."""
        async with self.connection() as conn:
            cur = await conn.execute(query("queue_paused"), {"queue": self.queue})
            row = await cur.fetchone()
        return bool(row and row[0])

    async def reserve_rate(self, rate: float, burst: float, recipients: int) -> float:
        """Reserve recipients from the send-rate budget all replicas share; returns the
        seconds to wait before sending them."""
        params = {"bucket": "ses", "rate": rate, "burst": burst, "wanted": recipients}
        async with self.connection() as conn:
            cur = await conn.execute(query("reserve_rate"), params)
            row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def next_wakeup(self) -> float | None:
        """Seconds until the earliest scheduled message or lease expiry; None if none."""
        async with self.connection() as conn:
            cur = await conn.execute(query("next_wakeup"), {"queue": self.queue})
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- deliverability (sql/0009) ---------------------------------------------------------

    async def suppressed_among(self, addresses: Sequence[str]) -> list[tuple[str, str, datetime]]:
        """(address, reason, since) of the suppressed ones among normalized addresses."""
        async with self.connection() as conn:
            cur = await conn.execute(query("suppressed_among"), {"addresses": list(addresses)})
            return [(str(a), str(r), since) for a, r, since in await cur.fetchall()]

    async def ingest_events(
        self, params: Mapping[str, Any]
    ) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        """Store a batch of events (mailroom.events.reader builds ``params``); returns the
        keys that were new, the suppression reasons added and the (key, reason) of the
        events dropped (not a recipient, unknown message), in one round trip; two
        in one transaction when the batch holds transient bounces (``events_lock``)."""
        async with self.connection() as conn:
            if params.get("lock_addresses"):
                async with conn.transaction():
                    await conn.execute(query("events_lock"), dict(params))
                    cur = await conn.execute(query("events_ingest"), dict(params))
                    row = await cur.fetchone()
            else:
                cur = await conn.execute(query("events_ingest"), dict(params))
                row = await cur.fetchone()
        assert row is not None  # noqa: S101 -- a SELECT of scalar subqueries returns one row
        return list(row[0]), list(row[1]), list(zip(row[2], row[3], strict=True))

    async def reputation(self, window: int) -> tuple[int, int, int]:
        """(recipients in the window, permanent bounces, complaints) for the rate gauges."""
        async with self.connection() as conn:
            cur = await conn.execute(query("reputation"), {"window": window})
            row = await cur.fetchone()
        assert row is not None  # noqa: S101 -- a SELECT of scalar subqueries returns one row
        return int(row[0]), int(row[1]), int(row[2])


async def status_counts(conn: psycopg.AsyncConnection[Any], queue: str) -> dict[str, int]:
    cur = await conn.execute(query("counts_by_status"), {"queue": queue})
    return {status: int(n) for status, n in await cur.fetchall()}


# -- connections mailroom opens itself -----------------------------------------------------
# Each gets a search_path holding only pg_catalog and pg_temp right after connect (a SET,
# not a startup option: pgbouncer refuses unknown startup parameters), so an operator or
# function planted in public cannot bind into mailroom's queries. Never called on an
# application's connection: mailroom does not change its session.


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """An autocommit connection with the safe search_path."""
    conn = psycopg.connect(dsn, autocommit=True, **kwargs)
    try:
        secure_session(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def secure_session(conn: psycopg.Connection[Any]) -> None:
    """The ``configure`` callback of a sync pool; ``conn`` must be autocommit."""
    conn.execute(query("safe_search_path"))


async def secure_session_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """The ``configure`` callback of an async pool; ``conn`` must be autocommit."""
    await conn.execute(query("safe_search_path"))


# -- the listener's session (a dedicated connection, never from the pool) -----------------


async def listen(conn: psycopg.AsyncConnection[Any], channel: str) -> None:
    await conn.execute(query("listen", channel=channel))


async def is_listening(conn: psycopg.AsyncConnection[Any], channel: str) -> bool:
    cur = await conn.execute(query("listening"), {"channel": channel})
    row = await cur.fetchone()
    return bool(row and row[0])
