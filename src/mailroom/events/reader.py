"""The daemon's SES event ingestion: long-poll SQS, store events, then delete them.

A message leaves SQS only after its events are committed (``mailroom.events``, one round
trip per received batch), so a crash or a database outage loses nothing: the message
becomes visible again after the queue's visibility timeout, to this replica or another,
and storing it again is a no-op (``event_key``). A message holding no usable event is
counted (``mailroom_events_malformed_total{reason}``), logged without its content and
deleted: a poison message is never retried for ever, and never blocks the queue. Every
failure to store is sorted by its SQLSTATE class (``storing.is_outage``): an unavailable database
keeps the messages in SQS; content the database refuses is found by storing the batch
message by message, so its good messages are stored once and deleted. The daemon runs
the reader under ``supervise``: a crash restarts it, and sending never stops for it.

A message is read only if ``mailroom.events.sns_certs`` trusts it (an SNS signature present
must verify; MAILROOM_EVENTS_REQUIRE_SIGNATURE requires one); a refused message is
counted, logged and deleted like a malformed one.

The SQS calls are the project's own (mailroom.events.sqsclient: the JSON protocol on the
daemon's event loop, botocore's decisions and credentials from child processes), so an
events daemon keeps no botocore in its memory. A botocore (or boto3) client handed in (the
tests, a caller's own) is blocking: each poller's calls to it run in a daemon thread of
the poller's own, off the event loop (a long poll that is still waiting when the daemon
stops must not hold up its exit; what it may have received becomes visible again after
the visibility timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog

from mailroom import metrics
from mailroom.config.settings import Config
from mailroom.events.parsing import Event, Malformed, parse_counted
from mailroom.events.sqsclient import SqsClient
from mailroom.events.storing import ingest_params, is_outage, label, refusal
from mailroom.outbox import Outbox
from mailroom.transports.sqs import SqsError

if TYPE_CHECKING:  # this module loads only when MAILROOM_EVENTS_QUEUE_URL is set, and
    # cryptography (7.7 MiB) only with the first SNS signature to verify (events/sns.py)
    from mailroom.events.sns_certs import Verifier

log = structlog.get_logger("mailroom.events")
T = TypeVar("T")

WAIT_SECONDS = 10  # SQS long poll; also bounds how stale "the reader is alive" can be
MAX_MESSAGES = 10  # SQS's maximum per ReceiveMessage
BACKOFF_MAX = 30.0


class _Worker:
    """One daemon thread running blocking calls in turn: a poller's SQS calls, which come
    one after the other. Starting a thread per call cost about 5 % of the reader's CPU,
    and ``Thread.start`` blocks the event loop until the new thread runs: on a busy
    machine, a scheduler quantum per call. A daemon thread, so that a long poll still
    waiting when the daemon stops does not hold up its exit."""

    def __init__(self, *, once: bool = False) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._once = once  # the thread ends after one call (no thread left waiting)

    def _serve(self) -> None:
        while True:
            self._jobs.get()()
            if self._once:
                return

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` in this worker's thread and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():  # the waiter was cancelled
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def job() -> None:
            try:
                result, error = func(), None
            except BaseException as exc:  # handed to the awaiting task
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the event loop is gone: daemon stopped
                loop.call_soon_threadsafe(settle, result, error)

        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="mailroom-sqs", daemon=True)
            self._thread.start()
        self._jobs.put(job)
        return await future


async def _in_thread(func: Callable[[], T]) -> T:
    """Run one blocking call in a daemon thread of its own and await its result."""
    return await _Worker(once=True).call(func)


class EventsReader:
    """Reads ``config.events_queue_url`` with ``config.events_pollers`` long polls."""

    def __init__(
        self, config: Config, outbox: Outbox, client: Any = None, verifier: Verifier | None = None
    ) -> None:
        self.config = config
        self.outbox = outbox
        # an SqsClient, or a botocore (or boto3) SQS client; an SqsClient is made on first
        # use when None
        self.client = client
        # which messages may be read at all: SNS signatures (tests inject the fetcher)
        from mailroom.events.sns_certs import Verifier  # noqa: PLC0415 -- see the import above

        self.verifier = verifier or Verifier(
            require=config.events_require_signature, topics=config.events_sns_topics
        )
        self.last_ok: float | None = None  # monotonic time of the last good poll and store
        self.error = ""

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: polls and stores have succeeded recently."""
        if self.last_ok is None:
            return False, self.error or "not polled yet"
        age = time.monotonic() - self.last_ok
        ok = age < 3 * WAIT_SECONDS + 10
        return ok, f"last poll {age:.1f} s ago" + ("" if ok else f"; {self.error}")

    async def _make_client(self) -> SqsClient:
        from mailroom.events.sqsclient import from_child  # noqa: PLC0415 -- a child's answer

        return await from_child(
            self.config.events_queue_url,
            connections=self.config.events_pollers + 2,
            connect_timeout=5,
            read_timeout=WAIT_SECONDS + 10,
        )

    async def run(self) -> None:
        delay = 1.0
        while self.client is None:
            try:
                self.client = await self._make_client()
            except Exception as exc:  # e.g. no region: say so, keep sending mail
                self.error = f"SQS client: {type(exc).__name__}: {str(exc)[:200]}"
                log.error("events_reader_setup_failed", error=type(exc).__name__,
                          detail=str(exc)[:200], retry_in=delay)  # fmt: skip
                await anyio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        log.info("events_reader_started", pollers=self.config.events_pollers)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.config.events_pollers):
                    tg.start_soon(self._poll_loop)
        finally:
            if isinstance(self.client, SqsClient):  # its idle connections; made anew on restart
                client, self.client = self.client, None
                await client.aclose()

    async def _poll_loop(self) -> None:
        delay = 0.5
        worker = _Worker()  # this poller's SQS calls, one after the other
        while True:
            try:
                received = await self._receive(worker)
            except Exception as exc:  # any SQS failure: report, back off, retry
                metrics.EVENTS_READER_ERRORS.labels("receive").inc()
                self.error = f"SQS ReceiveMessage: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("events_receive_failed", error=type(exc).__name__,
                            detail=str(exc)[:200], retry_in=delay)  # fmt: skip
                await anyio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if await self.handle(received, worker):
                delay = 0.5
            else:
                await anyio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _receive(self, worker: _Worker) -> list[dict[str, Any]]:
        if not isinstance(self.client, SqsClient):  # botocore's, blocking: in the thread
            return await worker.call(self._receive_blocking)
        got = await self.client.receive(self.config.events_queue_url, MAX_MESSAGES, WAIT_SECONDS)
        if got.unusable:  # no ReceiptHandle: cannot be deleted; SQS's redrive ends them
            log.warning("events_unusable_messages", count=got.unusable)
            if not got.messages:  # a failed poll: backed off, not polled again at once
                raise SqsError("InvalidResponse", f"{got.unusable} messages without a "
                               "ReceiptHandle", "ReceiveMessage")  # fmt: skip
            metrics.EVENTS_READER_ERRORS.labels("receive").inc(got.unusable)
        return got.messages

    def _receive_blocking(self) -> list[dict[str, Any]]:
        answer = self.client.receive_message(
            QueueUrl=self.config.events_queue_url,
            MaxNumberOfMessages=MAX_MESSAGES,
            WaitTimeSeconds=WAIT_SECONDS,
        )
        return list(answer.get("Messages") or [])

    async def handle(
        self, received: Sequence[dict[str, Any]], worker: _Worker | None = None
    ) -> bool:
        """Store the events of received SQS messages, then delete the messages (in
        ``worker``'s thread, else one of their own); False when the database could not
        take them (they stay in SQS and come back)."""
        mine = worker  # None: each delete below gets a one-call thread of its own
        good: list[tuple[dict[str, Any], list[Event]]] = []
        done: list[dict[str, Any]] = []  # malformed or ignored: delete without storing
        for message in received:
            body = str(message.get("Body", ""))
            try:
                trust = await self.verifier.check(body)
            except Exception as exc:  # a verifier gap: this message's problem, refused
                from mailroom.events.sns import refuse  # noqa: PLC0415 -- loaded with the verifier

                trust = refuse("bad_signature", f"unverifiable ({type(exc).__name__})")
            if not trust.ok:
                self._malformed(message, trust.reason, trust.detail)
                if trust.reason != "cert_unavailable":
                    done.append(message)
                # else: SNS's certificate host is unreachable, not the message at fault:
                # left in SQS, it comes back after the visibility timeout (the failed
                # fetch is remembered for a minute, so this costs no fetch storm) and
                # reaches the dead-letter queue after maxReceiveCount
                continue
            try:
                events, dropped = parse_counted(body)
                for reason, count in dropped.items():  # over 50 recipients, over 320 chars
                    metrics.EVENTS_DROPPED.labels(reason).inc(count)
            except Malformed as exc:
                self._malformed(message, exc.reason, str(exc))
                done.append(message)
                continue
            except Exception as exc:  # a parser gap is this message's problem, not the reader's
                self._malformed(message, "bad_field", f"unreadable ({type(exc).__name__})")
                done.append(message)
                continue
            if not events:
                metrics.EVENTS_IGNORED.inc()
                log.info("event_ignored", sqs_message_id=message.get("MessageId"))
                done.append(message)
                continue
            good.append((message, events))
        if done and good:
            # the refused go before the store: a slow store (a flood of recipients, a
            # database under load) must not outlast their visibility timeout, after which
            # SQS would hand them out again
            await self._delete(done, mine or _Worker(once=True))
            done = []
        stored, outage = await self._store(good)
        await self._delete(done + stored, mine or _Worker(once=True))
        if outage is not None:
            metrics.EVENTS_READER_ERRORS.labels("database").inc()
            self.error = f"database: {type(outage).__name__}: {str(outage)[:200]}"
            # the messages stay in SQS: they come back after the visibility timeout
            log.warning("events_store_failed", error=type(outage).__name__,
                        messages=len(good) - len(stored))  # fmt: skip
            return False
        self.last_ok = time.monotonic()
        return True

    async def _store(
        self, good: list[tuple[dict[str, Any], list[Event]]]
    ) -> tuple[list[dict[str, Any]], Exception | None]:
        """Store every message's events in one round trip. A batch refused for its content
        is stored message by message: the good ones once, a message refused alone is
        malformed. Returns the messages now safe to delete, and the outage that stopped
        the rest (they stay in SQS), if any."""
        if not good:
            return [], None
        try:
            await self._write([e for _, events in good for e in events])
            return [m for m, _ in good], None
        except Exception as exc:  # sorted below: outage or content
            if is_outage(exc):
                return [], exc
        done: list[dict[str, Any]] = []
        for message, events in good:
            try:
                await self._write(events)
            except Exception as exc:  # sorted: outage or this message's content
                if is_outage(exc):
                    return done, exc
                self._malformed(message, "refused", refusal(exc))
            done.append(message)
        return done, None

    async def _write(self, events: list[Event]) -> None:
        params = ingest_params(events, self.config)
        new, suppressed, dropped = await self.outbox.ingest_events(params)
        for _, reason in dropped:  # not a recipient of our message, or an unknown message
            metrics.EVENTS_DROPPED.labels(reason).inc()
        fresh = set(new)
        counted: set[str] = set()
        for event in events:
            if event.key in fresh and event.key not in counted:
                counted.add(event.key)
                metrics.EVENTS.labels(event.type, label(event)).inc()
        duplicates = len({e.key for e in events} - {key for key, _ in dropped}) - len(counted)
        if duplicates:
            metrics.EVENTS_DUPLICATE.inc(duplicates)
        for reason in suppressed:
            metrics.SUPPRESSIONS_ADDED.labels(reason).inc()
        log.info("events_stored", events=len(counted), duplicates=duplicates,
                 suppressed=len(suppressed), dropped=len(dropped))  # fmt: skip

    def _malformed(self, message: dict[str, Any], reason: str, detail: str) -> None:
        metrics.EVENTS_MALFORMED.labels(reason).inc()
        # the body is not logged: it may hold addresses and message content
        log.warning("event_malformed", reason=reason, detail=detail[:200],
                    sqs_message_id=message.get("MessageId"))  # fmt: skip

    async def _delete(self, messages: Sequence[dict[str, Any]], worker: _Worker) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]

        def delete() -> list[Any]:
            answer = self.client.delete_message_batch(
                QueueUrl=self.config.events_queue_url, Entries=entries
            )
            return list(answer.get("Failed") or [])

        try:
            if isinstance(self.client, SqsClient):
                failed = await self.client.delete_batch(self.config.events_queue_url, entries)
            else:
                failed = await worker.call(delete)
        except Exception as exc:  # stored already: a redelivery is a no-op
            metrics.EVENTS_READER_ERRORS.labels("delete").inc()
            log.warning("events_delete_failed", error=type(exc).__name__, count=len(entries))
            return
        if failed:
            metrics.EVENTS_READER_ERRORS.labels("delete").inc(len(failed))
            log.warning("events_delete_failed", count=len(failed))


async def supervise(run: Callable[[], Awaitable[None]], *, cap: float = BACKOFF_MAX) -> None:
    """Run the reader for ever: a crash (a bug, input no check foresaw) restarts it after a
    capped backoff, counted and logged once per crash, so that it never reaches the
    daemon's task group, which would stop sending mail."""
    first = delay = min(1.0, cap)
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except Exception as exc:  # anything but cancellation: the reader's problem alone
            if time.monotonic() - started > 10 * cap:
                delay = first  # it had run well for a while: not a crash loop
            metrics.EVENTS_READER_RESTARTS.inc()
            log.error("events_reader_crashed", error=type(exc).__name__,
                      detail=str(exc)[:200], restart_in=delay)  # fmt: skip
        await anyio.sleep(delay)
        delay = min(delay * 2, cap)
