"""Turn a claimed batch into transport calls and each message's next state."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import structlog

from mailroom import metrics
from mailroom.daemon import account, suppression
from mailroom.daemon.retry import Policy, dispose, released
from mailroom.daemon.signing import render
from mailroom.outbox import UNAVAILABLE, Disposition, Message
from mailroom.transports import BULK_MAX_ENTRIES, Defaults, Result, Transport, bulk_key
from mailroom.transports.classify import Verdict, pause_cause, reason_class

if TYPE_CHECKING:
    from mailroom.daemon.capstep import CapStep

log = structlog.get_logger("mailroom.sender")

MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True, slots=True)
class Call:
    messages: Sequence[Message]
    bulk: bool


def plan(batch: Sequence[Message]) -> list[Call]:
    """Group templated messages into SendBulkEmail calls of at most 50 entries; every
    simple or raw message is a SendEmail call of its own."""
    groups: dict[tuple[object, ...], list[Message]] = {}
    calls: list[Call] = []
    for message in batch:
        if message.template is None:
            calls.append(Call([message], bulk=False))
        else:
            groups.setdefault(bulk_key(message), []).append(message)
    for members in groups.values():
        for start in range(0, len(members), BULK_MAX_ENTRIES):
            calls.append(Call(members[start : start + BULK_MAX_ENTRIES], bulk=True))
    return calls


def _error(result: Result) -> str | None:
    if not result.code:
        return None
    text = f"{result.code}: {result.detail}" if result.detail else result.code
    return text[:MAX_ERROR_LENGTH]


class Sender:
    """Runs calls with bounded concurrency; pauses the daemon on account-level stops."""

    def __init__(
        self,
        transport: Transport,
        policy: Policy,
        *,
        concurrency: int,
        call_budget: float,
        keys: Sequence[bytes] = (),
        reserve: Callable[[int], Awaitable[float]] | None = None,
        defaults: Defaults | None = None,
    ) -> None:
        self.transport = transport
        self.defaults = defaults  # the daemon's From and configuration set (account.problem)
        self.caps: CapStep | None = None  # per-recipient caps, a step before planning
        self.on_throttle: Callable[[], Awaitable[None]] | None = None  # AIMD: cut the rate
        self._problems: set[str] = set()  # account problems flagged in the metric
        self.keys = tuple(keys)
        self.reserve = reserve  # send-rate budget: recipients -> seconds to wait
        self.policy = policy
        self.call_budget = call_budget  # the longest one call may take (connect + read)
        self.paused_until = 0.0
        self.pause_reason = ""  # why the current (or last) pause: for /readyz
        self.draining = False
        self._slots = anyio.CapacityLimiter(concurrency)
        # Calls planned but still waiting for a slot. The daemon claims more only while
        # fewer than `concurrency` wait: enough to keep every slot busy, and no thousands
        # of leased messages (and tasks) queueing behind them.
        self.queued = 0
        self.on_room: Callable[[], None] | None = None
        # the suppression list: normalized recipients -> those suppressed (one query)
        self.suppressed: Callable[[list[str]], Awaitable[Mapping[str, suppression.Entry]]]
        self.suppressed = _nothing_suppressed
        # Calls a backlog claim is sized for: half the slots, so that several batches are in
        # flight and each is recorded (its leases ended) as soon as its own calls are done.
        self.batch_calls = max(1, concurrency // 2)

    def paused(self) -> bool:
        return anyio.current_time() < self.paused_until

    def free_calls(self) -> int:
        """Calls this sender can take now: free slots, plus a queue as deep as the slots
        (calls waiting there start the moment a slot frees: no gap while a batch records)."""
        slots = int(self._slots.total_tokens)
        return max(0, 2 * slots - int(self._slots.borrowed_tokens) - self.queued)

    async def send(
        self, batch: Sequence[Message], deadline: float
    ) -> list[tuple[int, Disposition]]:
        """Send a batch; no call starts unless it can end before ``deadline`` (the lease)."""
        results: list[tuple[Message, Result | None]] = []
        # Until its calls are planned, the batch counts as one queued call per message (at
        # most what it can make): the daemon must not claim more while the list is read.
        claimed = len(batch)
        self.queued += claimed
        try:
            batch = await self._unsuppressed(batch, results)
        finally:
            self.queued -= claimed
        ready = []
        for message in batch:
            rendered = render(message, self.keys)
            if isinstance(rendered, Result):
                log.warning("cannot_sign", message_id=message.id, code=rendered.code,
                            token=message.token and message.token.action)  # fmt: skip
                results.append((message, rendered))
            else:
                ready.append(rendered)
        if self.caps is not None and ready:
            ready = await self._cap(ready, results)
        calls = plan(ready)
        self.queued += len(calls)
        if self.queued < self._slots.total_tokens and self.on_room is not None:
            self.on_room()  # fewer calls than the batch's placeholder: room to claim more
        if len(calls) == 1:  # an idle daemon's lone email: no task between claim and call
            await self._call(calls[0], deadline, results)
        else:
            async with anyio.create_task_group() as tg:
                for call in calls:
                    tg.start_soon(self._call, call, deadline, results)
        return self._outcomes(results)

    def _outcomes(
        self, results: list[tuple[Message, Result | None]]
    ) -> list[tuple[int, Disposition]]:
        counts: Counter[tuple[str, str, str]] = Counter()
        outcomes = [(m.id, self._dispose(m, r, counts)) for m, r in results]
        for (outcome, template, reason), n in counts.items():  # one update per kind, not message
            if outcome == "sent":
                metrics.SENT.labels(template).inc(n)
            elif outcome == "retry":
                metrics.RETRIED.labels(template, reason).inc(n)
            else:
                metrics.DEAD.labels(template, reason).inc(n)
        return outcomes

    async def _unsuppressed(
        self, batch: Sequence[Message], results: list[tuple[Message, Result | None]]
    ) -> Sequence[Message]:
        """The plan's first step: suppressed recipients leave each message; a message
        with none left dies ("suppressed: bounce since ...") and never reaches SES. The
        list is read in one query per batch; without it nothing is sent (released)."""
        try:
            listed = await self.suppressed(suppression.recipients(batch))
        except UNAVAILABLE:
            results.extend((m, None) for m in batch)
            return []
        kept, dead, removed = suppression.strip(batch, listed)
        if removed:
            metrics.RECIPIENTS_SUPPRESSED.inc(removed)
        for message, reason in dead:
            results.append((message, Result(Verdict.DEAD, code="suppressed", detail=reason)))
        return kept

    async def _call(
        self, call: Call, deadline: float, results: list[tuple[Message, Result | None]]
    ) -> None:
        async with self._slot():
            if not await self._may_start(call, deadline):
                results.extend((m, None) for m in call.messages)
                return
            outcome = await self._attempt(call)
        outcome = await self._account_health(call, outcome)
        first = outcome[0]
        whole_call_dead = first.whole_call and first.verdict is Verdict.DEAD
        if call.bulk and len(call.messages) > 1 and whole_call_dead:
            # One bad entry can fail a whole bulk call: send each alone so that only the
            # bad one is dead-lettered and the good ones go out.
            log.info("bulk_call_split", code=first.code, entries=len(call.messages))
            self.queued += len(call.messages)
            for message in call.messages:
                await self._call(Call([message], bulk=True), deadline, results)
            return
        pausing = [r for r in outcome if r.verdict is Verdict.PAUSE]
        if pausing:
            self._pause(pausing[0])
        results.extend(zip(call.messages, outcome, strict=True))

    def _pause(self, result: Result) -> None:
        """Stop sending for the pause duration: the account, or the daemon's credentials,
        permissions, proxy or CA bundle, refused the call; no message is at fault."""
        self.pause(self.policy.pause, result.code, detail=result.detail)

    async def _cap(
        self, ready: list[Message], results: list[tuple[Message, Result | None]]
    ) -> list[Message]:
        """Per-recipient caps: capped messages get their result now, the rest go on. If
        the counts cannot be read, the whole batch is released (nothing lost, no try)."""
        assert self.caps is not None  # noqa: S101 -- checked by the caller
        try:
            send, capped = await self.caps.apply(ready)
        except UNAVAILABLE as exc:
            log.warning("caps_unavailable", error=type(exc).__name__, messages=len(ready))
            results.extend((m, None) for m in ready)
            return []
        results.extend(capped)
        return send

    async def _account_health(self, call: Call, outcome: list[Result]) -> list[Result]:
        """A missing configuration set or sender identity pauses sending instead of
        dead-lettering (mailroom.daemon.account); throttling cuts the shared rate (AIMD)."""
        found: set[str] = set()
        for i, (message, result) in enumerate(zip(call.messages, outcome, strict=True)):
            if result.verdict is Verdict.DEAD:
                problem = account.problem(result, message, self.defaults)
                if problem is not None:
                    found.add(problem)
                    outcome[i] = dataclasses.replace(result, verdict=Verdict.PAUSE)
        for problem in found - self._problems:
            metrics.ACCOUNT_PROBLEM.labels(problem).set(1)
            log.error("account_problem", problem=problem, code=outcome[0].code,
                      detail=outcome[0].detail[:300])  # fmt: skip
        if found:
            self._problems |= found
        elif self._problems and any(r.verdict is Verdict.SENT for r in outcome):
            for problem in self._problems:
                metrics.ACCOUNT_PROBLEM.labels(problem).set(0)
            log.info("account_problem_cleared", problems=sorted(self._problems))
            self._problems.clear()
        if self.on_throttle is not None and account.throttled(outcome):
            with contextlib.suppress(*UNAVAILABLE):  # the next throttle will try again
                await self.on_throttle()
        return outcome

    def pause(self, seconds: float, code: str, *, detail: str = "") -> None:
        """Stop starting calls for ``seconds``: after a refused call, or for a stop found
        before one (the daily quota's margin). The reason goes to /readyz and a metric."""
        cause, label = pause_cause(code), reason_class(code)
        self.paused_until = max(self.paused_until, anyio.current_time() + seconds)
        reason = f"{label} ({cause})" + (f": {detail}" if detail else "")
        self.pause_reason = reason[:300]
        metrics.SENDING_PAUSED.set(1)
        metrics.SENDING_PAUSE_REASON.clear()
        metrics.SENDING_PAUSE_REASON.labels(cause, label).set(1)
        log.warning("sending_paused", code=code, cause=cause, seconds=seconds)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A call slot for a call counted in ``queued``, which it leaves on getting one."""
        try:
            try:
                self._slots.acquire_nowait()  # a free slot: no trip through the event loop
            except anyio.WouldBlock:
                await self._slots.acquire()
        finally:
            self.queued -= 1
            if self.queued == self._slots.total_tokens - 1 and self.on_room is not None:
                self.on_room()  # room to claim more again
        try:
            yield
        finally:
            self._slots.release()
            if self.free_calls() == self.batch_calls and self.on_room is not None:
                self.on_room()  # room for a backlog claim again

    async def _may_start(self, call: Call, deadline: float) -> bool:
        """Whether the call may go now: not draining nor paused, within the send-rate
        budget (waiting for it), and able to finish before the lease's deadline."""
        if self.draining or self.paused():
            return False
        if self.reserve is not None:
            recipients = sum(len(m.to) + len(m.cc) + len(m.bcc) for m in call.messages)
            try:
                wait = await self.reserve(recipients)
            except UNAVAILABLE:
                return False  # the batch is released; the budget is back when the DB is
            if math.isinf(wait):  # the day's SES quota (less its margin) is used up
                if not self.paused():
                    metrics.QUOTA_PAUSES.inc()
                    self.pause(self.policy.pause, "DailyQuotaMargin")
                return False
            if wait > 0:
                metrics.RATE_LIMIT_WAITS.inc()
                metrics.RATE_LIMIT_WAIT_SECONDS.inc(wait)
                if anyio.current_time() + wait + self.call_budget > deadline:
                    with contextlib.suppress(*UNAVAILABLE):  # else the reservation just lapses
                        await self.reserve(-recipients)  # give the reservation back
                    return False
                await anyio.sleep(wait)
                if self.draining:
                    return False
        return anyio.current_time() + self.call_budget <= deadline

    async def _attempt(self, call: Call) -> list[Result]:
        """One transport call. A transport bug must not stop the daemon or lose the batch:
        it becomes a retry, and after max_attempts a dead letter."""
        operation = "SendBulkEmail" if call.bulk else "SendEmail"
        started = time.perf_counter()
        try:
            if call.bulk:
                results = await self.transport.send_bulk(call.messages)
            else:
                results = [await self.transport.send_one(call.messages[0])]
        except Exception as exc:
            log.exception("transport_error", messages=[m.id for m in call.messages])
            detail = f"{type(exc).__name__}: {exc}"
            results = [Result(Verdict.RETRY, code="InternalError", detail=detail, whole_call=True)]
            results *= len(call.messages)
        failed = results[0].whole_call
        elapsed = time.perf_counter() - started
        metrics.SES_CALL_SECONDS.labels(operation, "error" if failed else "ok").observe(elapsed)
        if failed:
            metrics.SES_ERRORS.labels(operation, reason_class(results[0].code)).inc()
        return results

    def _dispose(
        self, message: Message, result: Result | None, counts: Counter[tuple[str, str, str]]
    ) -> Disposition:
        if result is None:
            return released()
        disposition = dispose(
            result.verdict,
            message.attempts,
            message.max_attempts,
            self.policy,
            provider_id=result.provider_id,
            error=_error(result),
        )
        template = metrics.template_label(message.template, message.raw_mime is not None)
        if disposition.status == "sent":
            counts["sent", template, ""] += 1
            metrics.ENQUEUE_TO_SEND.observe(max(time.time() - message.created_at, 0.0))
        elif disposition.attempt_outcome == "retry":
            counts["retry", template, reason_class(result.code)] += 1
            log.info("message_retry", message_id=message.id, attempt=message.attempts,
                     code=result.code, retry_in=round(disposition.delay, 3))  # fmt: skip
        elif disposition.status == "dead":
            counts["dead", template, reason_class(result.code)] += 1
            log.warning("message_dead", message_id=message.id, attempt=message.attempts,
                        code=result.code, template=template,
                        token=message.token and message.token.action)  # fmt: skip
        return disposition


async def _nothing_suppressed(addresses: list[str]) -> Mapping[str, suppression.Entry]:
    return {}
