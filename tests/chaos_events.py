"""SES events flowing through SQS during the chaos run (``tests/chaos.py --events``).

Every message the SES stand-in accepts produces the events SES would publish for it, and
they reach the daemons the way a real queue delivers them: through an SQS queue (the
project's SQS stand-in, bench/sqs_standin.py, in a process of its own: moto's receive
costs O(queue depth), see docs/BENCHMARKS.md), while the daemons are killed and
PostgreSQL restarts. The events are

- **duplicated**: a fifth of them are published twice, at independent times, in the raw
  or EventBridge envelope (SNS's envelope is left out: its signature is the SNS
  verifier's business, not this run's);
- **out of order**: a Delivery, Bounce or Complaint may be published before its Send;
- **late**: a tenth wait 6-10 s, after the message they name was often re-sent;
- **foreign**: transient bounces for addresses mailroom never mailed, naming messageIds
  it never issued (mail sent by other systems), 0 to 4 per address: the transient-bounce
  rule (3 within the window) suppresses those with 3 or more.

Each distinct event names a distinct (type, SES messageId, recipient): whatever a
version's event key covers beyond that, one distinct event is one row. At the end
(every message final, the queue drained): ``mailroom.events`` holds each distinct event
exactly once (no event lost, none stored twice), and the suppression list is exactly
the permanently bounced and complaining addresses plus those with 3 or more distinct
transient bounces.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
TRANSIENT_COUNT = 3  # MAILROOM_SUPPRESS_TRANSIENT_COUNT given to the daemons
FOREIGN_ADDRESSES = 20
Identity = tuple[str, str, str]  # (event type, SES messageId, recipient)


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _kind(n: int) -> str:
    """What happens to message n at its recipient."""
    return {3: "bounce", 7: "complaint", 11: "transient"}.get(n % 20, "delivery")


class EventFlow:
    """The queue, the events published into it, and the check of what the daemons stored."""

    def __init__(self, seed: int, workdir: Path) -> None:
        self.rng = random.Random(seed + 2)
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None
        self.sqs: Any = None
        self.url = ""
        # (release time, seq, body, published in a SendMessageBatch of its own)
        self._heap: list[tuple[float, int, str, bool]] = []
        self._seq = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._publisher: threading.Thread | None = None
        self.distinct: set[Identity] = set()
        self.suppress: set[str] = set()  # expected: permanent bounces and complaints
        self.transient: Counter[str] = Counter()  # distinct transient bounces per address
        self.counts: Counter[str] = Counter()  # published, duplicated, late, out_of_order
        self.publish_errors = 0
        self.problems: list[str] = []
        self.stored = 0
        self.drained = False

    # -- set-up ------------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start the SQS stand-in and the publisher; the daemons' settings for the queue."""
        log = (self.workdir / "sqs-standin.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sqs_standin", "--port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"the SQS stand-in did not start: {line!r}")
        endpoint = line.split(" ", 1)[1]
        self.sqs = boto3.client(
            "sqs", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        # short: a message a killed daemon had received comes back within the run
        attributes = {"VisibilityTimeout": "3"}
        self.url = self.sqs.create_queue(QueueName="ses-events", Attributes=attributes)["QueueUrl"]
        self._publisher = threading.Thread(target=self._publish, name="events", daemon=True)
        self._publisher.start()
        return {
            "MAILROOM_EVENTS_QUEUE_URL": self.url,
            "AWS_ENDPOINT_URL_SQS": endpoint,
            "MAILROOM_SUPPRESS_TRANSIENT_COUNT": str(TRANSIENT_COUNT),
        }

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- the events --------------------------------------------------------------------------

    def on_sent(self, rec: dict[str, Any]) -> None:
        """The stand-in accepted a message (called in its request thread: only schedules)."""
        data = rec.get("template_data") or {}
        n = int(data.get("n", -1))
        recipients = [*rec["to"], *rec["cc"], *rec["bcc"]]
        mail = {"timestamp": _stamp(), "source": rec["from"], "messageId": rec["message_id"],
                "destination": recipients}  # fmt: skip
        events: list[dict[str, Any]] = [{"eventType": "Send", "mail": mail, "send": {}}]
        kind = _kind(n)
        at = _stamp()
        if kind in ("bounce", "transient"):
            events.append({"eventType": "Bounce", "mail": mail, "bounce": {
                "bounceType": "Permanent" if kind == "bounce" else "Transient",
                "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": a, "status": "5.1.1"} for a in recipients],
                "timestamp": at, "feedbackId": str(uuid.uuid4()),
            }})  # fmt: skip
        else:
            events.append({"eventType": "Delivery", "mail": mail, "delivery": {
                "timestamp": at, "recipients": recipients, "smtpResponse": "250 ok",
            }})  # fmt: skip
        if kind == "complaint":
            events.append({"eventType": "Complaint", "mail": mail, "complaint": {
                "complainedRecipients": [{"emailAddress": a} for a in recipients],
                "timestamp": at, "feedbackId": str(uuid.uuid4()),
                "complaintFeedbackType": "abuse",
            }})  # fmt: skip
        with self._lock:
            for address in recipients:
                if kind in ("bounce", "complaint"):
                    self.suppress.add(address)
                elif kind == "transient":
                    self.transient[address] += 1
            self._schedule(events, reorder=True)

    def foreign(self, span: float) -> None:
        """Transient bounces from other systems' mail over ``span`` seconds: for half the
        addresses spread out, for the other half all at once, each in a SendMessageBatch
        of its own, so that several pollers store them in concurrent transactions (the
        transient-bounce count must see the others' commits: issue 19 item 5)."""
        with self._lock:
            for k in range(FOREIGN_ADDRESSES):
                address = f"flaky{k}@elsewhere.example"
                burst = self.rng.uniform(0, span) if k % 2 else None
                for j in range(k % 5):
                    mail = {"timestamp": _stamp(), "source": "other@elsewhere.example",
                            "messageId": f"foreign-{k}-{j}", "destination": [address]}  # fmt: skip
                    event = {"eventType": "Bounce", "mail": mail, "bounce": {
                        "bounceType": "Transient", "bounceSubType": "MailboxFull",
                        "bouncedRecipients": [{"emailAddress": address}],
                        "timestamp": _stamp(), "feedbackId": str(uuid.uuid4()),
                    }}  # fmt: skip
                    self.transient[address] += 1
                    if burst is None:
                        self._schedule([event], base=self.rng.uniform(0, span))
                        continue
                    self.distinct.add(("Bounce", mail["messageId"], address))
                    self._push(time.monotonic() + burst, self._body(event), alone=True)
                    self.counts["burst"] += 1
            self._lock.notify_all()

    def _schedule(self, events: list[dict[str, Any]], *, reorder: bool = False,
                  base: float = 0.0) -> None:  # fmt: skip
        """Give each event its release time(s); the caller holds the lock."""
        now = time.monotonic() + base
        send_at = now + self.rng.uniform(0, 1.0)
        for index, event in enumerate(events):
            mail = event["mail"]
            for address in mail["destination"]:
                self.distinct.add((event["eventType"], mail["messageId"], address))
            at = send_at if index == 0 else now + self.rng.uniform(0, 1.5)
            if reorder and index and at < send_at:
                self.counts["out_of_order"] += 1
            if self.rng.random() < 0.1:
                at += self.rng.uniform(6, 10)
                self.counts["late"] += 1
            copies = [at]
            if self.rng.random() < 0.2:
                copies.append(now + self.rng.uniform(0, 8))
                self.counts["duplicated"] += 1
            for release in copies:
                self._push(release, self._body(event))
        self._lock.notify_all()

    def _push(self, release: float, body: str, *, alone: bool = False) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (release, self._seq, body, alone))

    def _body(self, event: dict[str, Any]) -> str:
        if self.rng.random() < 0.5:
            return json.dumps(event)  # SNS raw message delivery
        return json.dumps({"version": "0", "id": str(uuid.uuid4()), "source": "aws.ses",
                           "detail-type": f"Email {event['eventType']}",
                           "account": "123456789012", "detail": event})  # fmt: skip

    def _publish(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                due: list[str] = []
                while self._heap and self._heap[0][0] <= now and len(due) < 10:
                    alone = self._heap[0][3]
                    if alone and due:
                        break  # sent by itself, in the next call
                    due.append(heapq.heappop(self._heap)[2])
                    if alone:
                        break
                if not due:
                    wait = self._heap[0][0] - now if self._heap else 0.5
                    self._lock.wait(min(wait, 0.5))
                    continue
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(due)]
            try:
                answer = self.sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
                failed = len(answer.get("Failed") or [])
            except Exception:  # counted: verify() reports it
                failed = len(due)
            self.publish_errors += failed
            with self._lock:
                self.counts["published"] += len(due) - failed

    # -- the end -----------------------------------------------------------------------------

    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in attributes.values())

    def wait_drained(self, timeout: float) -> bool:
        """Every event published and every message deleted by a daemon."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.pending() == 0 and self.queue_depth() == 0:
                    self.drained = True
                    return True
            time.sleep(0.2)
        return False

    def expected_suppressed(self) -> set[str]:
        with self._lock:
            flaky = {a for a, n in self.transient.items() if n >= TRANSIENT_COUNT}
            return self.suppress | flaky

    def verify(self, rows: list[tuple[Any, ...]], suppressed: set[str]) -> list[str]:
        """Compare the stored events (type, messageId, recipient) and the suppression list
        with what was published."""
        problems = []
        if not self.drained:
            problems.append(f"events: not drained ({self.pending()} unpublished)")
        if self.publish_errors:
            problems.append(f"events: {self.publish_errors} could not be published")
        stored = Counter((str(t), str(m), str(r)) for t, m, r in rows)
        self.stored = sum(stored.values())
        twice = [k for k, n in stored.items() if n > 1]
        lost = sorted(self.distinct - set(stored))
        extra = sorted(set(stored) - self.distinct)
        if twice:
            problems.append(f"events: {len(twice)} stored more than once, e.g. {twice[:3]}")
        if lost:
            problems.append(f"events: {len(lost)} of {len(self.distinct)} lost, e.g. {lost[:3]}")
        if extra:
            problems.append(f"events: {len(extra)} stored but never published: {extra[:3]}")
        expected = self.expected_suppressed()
        if suppressed != expected:
            missing = sorted(expected - suppressed)
            wrong = sorted(suppressed - expected)
            problems.append(
                f"suppression: {len(missing)} missing, e.g. {missing[:5]};"
                f" {len(wrong)} not implied by the events, e.g. {wrong[:5]}"
            )
        return problems

    def table_rows(self, suppressed: int) -> list[tuple[str, str]]:
        c = self.counts
        return [
            ("SES events distinct / published", f"{len(self.distinct)} / {c['published']}"),
            (
                "events duplicated / late / out of order",
                f"{c['duplicated']} / {c['late']} / {c['out_of_order']}",
            ),
            ("other systems' transient bounces sent in bursts", str(c["burst"])),
            ("events stored", str(self.stored)),
            (
                "addresses suppressed / expected",
                f"{suppressed} / {len(self.expected_suppressed())}",
            ),
        ]
