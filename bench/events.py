"""``python -m bench.events``: how fast one daemon stores SES events it reads from SQS.

Two SQS servers over real HTTP, each its own process: moto's (``ThreadedMotoServer``,
``python -m bench.events moto``) and bench/sqs_standin.py (``--sqs-latency-ms`` delays
its answers as a network would). moto costs O(queue depth) per message received, so it
measures moto (see bench/sqs_standin.py); the stand-in measures the daemon.

Each run: a fresh queue is filled with N SES events, one per SQS message, each in an SNS
envelope (94 % Delivery, 3 % permanent Bounce, 1 % transient Bounce, 1 % Complaint, 1 %
DeliveryDelay; every one a recipient and a message of its own); then a real daemon
(``python -m mailroom run`` with ``MAILROOM_EVENTS_QUEUE_URL`` and
``AWS_ENDPOINT_URL_SQS`` pointing at the server) is started on a fresh database, and the
rows of ``mailroom.events`` are counted every 50 ms. The rate runs from the first sample
that sees a stored event to the one that sees all N (the daemon's start-up is not in it);
CPU (daemon, SQS server) over the same window.

Two ceilings, measured in the same run, tell whose limit it is:

- ``SQS alone``: threads as many as the daemon's pollers, each looping ReceiveMessage
  (10) and DeleteMessageBatch over a filled queue with boto3, storing nothing;
- ``database alone``: one psycopg connection running the ``events_ingest`` query (from
  the code under test) for batches of 10 parsed events, as one poller does, no SQS.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import (
    Daemon,
    Postgres,
    Standin,
    cpu_seconds,
    memory_mib,
    snapshot,
)
from bench.scenarios import Bench, Result
from mailroom.config.settings import Config

MIX = (  # (per 100 events, kind)
    (94, "Delivery"),
    (3, "Bounce/Permanent"),
    (1, "Bounce/Transient"),
    (1, "Complaint"),
    (1, "DeliveryDelay"),
)
KINDS = [kind for share, kind in MIX for _ in range(share)]
SQS_BATCH = 10  # SendMessageBatch / ReceiveMessage / DeleteMessageBatch maximum
COUNT_EVENTS = "SELECT count(*) FROM mailroom.events"
DEFAULT_POLLERS = Config(database_url="").events_pollers  # of the installed code


def _stamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ses_event(i: int, now: datetime) -> dict[str, Any]:
    """The i-th event of a run, shaped as the SES developer guide's event examples."""
    kind = KINDS[(i * 37) % len(KINDS)]  # spread the kinds over the queue
    address = f"user{i}@example.com"
    mail = {
        "timestamp": _stamp(now), "source": "Shop <noreply@shop.example>",
        "sendingAccountId": "123456789012", "messageId": f"0100018f-bench-{i:09d}",
        "destination": [address], "headersTruncated": False,
        "tags": {"ses:configuration-set": ["default"]},
    }  # fmt: skip
    later = _stamp(now + timedelta(seconds=1))
    if kind == "Delivery":
        return {"eventType": "Delivery", "mail": mail, "delivery": {
            "timestamp": later, "processingTimeMillis": 1000, "recipients": [address],
            "smtpResponse": "250 2.6.0 Message received",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        }}  # fmt: skip
    if kind.startswith("Bounce/"):
        permanent = kind.endswith("Permanent")
        status = "5.1.1" if permanent else "4.2.2"
        return {"eventType": "Bounce", "mail": mail, "bounce": {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General" if permanent else "MailboxFull",
            "bouncedRecipients": [{
                "emailAddress": address, "action": "failed", "status": status,
                "diagnosticCode": f"smtp; {'550' if permanent else '452'} {status} mailbox",
            }],
            "timestamp": later, "feedbackId": f"0100018f-bench-bounce-{i:09d}",
            "reportingMTA": "dsn; mx.example.com",
        }}  # fmt: skip
    if kind == "Complaint":
        return {"eventType": "Complaint", "mail": mail, "complaint": {
            "complainedRecipients": [{"emailAddress": address}], "timestamp": later,
            "feedbackId": f"0100018f-bench-complaint-{i:09d}", "complaintFeedbackType": "abuse",
        }}  # fmt: skip
    return {"eventType": "DeliveryDelay", "mail": mail, "deliveryDelay": {
        "timestamp": later, "delayType": "MailboxFull", "expirationTime": later,
        "delayedRecipients": [{"emailAddress": address, "status": "4.2.2",
                               "diagnosticCode": "smtp; 452 4.2.2 mailbox full"}],
    }}  # fmt: skip


def sns_envelope(event: dict[str, Any], now: datetime) -> str:
    """An SES event as SNS delivers it to SQS (raw message delivery off), unsigned: a
    signature present must verify (mailroom.events.sns), and only AWS's key makes one that does
    (tests/test_sns.py signs envelopes with a key of its own)."""
    return json.dumps({
        "Type": "Notification", "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": json.dumps(event), "Timestamp": _stamp(now),
    })  # fmt: skip


def bodies(n: int) -> list[str]:
    now = datetime.now(UTC)
    return [sns_envelope(ses_event(i, now), now) for i in range(n)]


# -- moto -------------------------------------------------------------------------------


def serve_moto() -> int:
    """``python -m bench.events moto``: moto's threaded server until SIGTERM."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 -- only this process needs it

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"listening http://{host}:{port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    return 0


SERVERS = {
    "moto": [sys.executable, "-m", "bench.events", "moto"],
    "standin": [sys.executable, "-m", "bench.sqs_standin"],
}


class SqsServer:
    """An SQS server as its own process (its CPU is measured apart from the daemon's):
    moto's (``kind="moto"``) or bench/sqs_standin.py (``kind="standin"``)."""

    def __init__(self, kind: str, latency_ms: float = 0.0) -> None:
        self.kind = kind
        command = SERVERS[kind] + (["--latency-ms", str(latency_ms)] if latency_ms else [])
        # moto's process waits for SIGTERM with sigwait(), which needs the signal blocked
        # from its start: the child inherits the mask (the stand-in keeps the default)
        blocked = {signal.SIGTERM, signal.SIGINT} if kind == "moto" else set()
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # werkzeug logs every request
                text=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError(f"{kind} SQS did not start: {line!r}")
        self.url = line.split()[1]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self) -> Any:
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client(
            "sqs", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="bench", aws_secret_access_key="bench",  # noqa: S106 -- no AWS
            config=Config(max_pool_connections=32, retries={"mode": "standard"}),
        )  # fmt: skip

    @contextmanager
    def queue(self, n: int, threads: int = 8) -> Iterator[str]:
        """A fresh queue holding n events (filled from ``threads`` threads); deleted after."""
        sqs = self.client()
        name = f"ses-events-{uuid.uuid4().hex[:8]}"
        url = str(sqs.create_queue(QueueName=name)["QueueUrl"])
        messages = bodies(n)

        def send(start: int) -> None:
            entries = [
                {"Id": str(k), "MessageBody": body}
                for k, body in enumerate(messages[start : start + SQS_BATCH])
            ]
            failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
            assert not failed, failed

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, range(0, n, SQS_BATCH)))
        try:
            yield url
        finally:
            sqs.delete_queue(QueueUrl=url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- measurements -----------------------------------------------------------------------


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(COUNT_EVENTS).fetchone()
    return int(row[0]) if row else 0


def ingest(bench: Bench, server: SqsServer, n: int, pollers: int | None) -> Result:
    """A daemon with ``MAILROOM_EVENTS_POLLERS=pollers`` (None: the default) drains a
    queue of n events; events stored per second from the first row seen to the last."""
    settings = {"MAILROOM_EVENTS_QUEUE_URL": "", "AWS_ENDPOINT_URL_SQS": server.url}
    if pollers is not None:
        settings["MAILROOM_EVENTS_POLLERS"] = str(pollers)
    with server.queue(n) as url, bench.pg.database() as dsn:
        settings["MAILROOM_EVENTS_QUEUE_URL"] = url
        log_path = bench.workdir / f"daemon-events-{uuid.uuid4().hex[:6]}.log"
        daemon = Daemon(dsn, bench.standin.url, settings, log_path).start()
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                deadline = time.monotonic() + max(120.0, n / 50)
                first: tuple[float, int, float, float] | None = None
                while True:
                    count = _count(conn)
                    at = time.perf_counter()
                    if count and first is None:
                        first = (at, count, cpu_seconds(daemon.pid), cpu_seconds(server.pid))
                    if count >= n:
                        break
                    if not daemon.alive() or time.monotonic() > deadline:
                        raise RuntimeError(f"{count} of {n} events stored:\n{daemon.log_tail()}")
                    time.sleep(0.05)
                cpu = cpu_seconds(daemon.pid)
                sqs_cpu = cpu_seconds(server.pid)
                suppressed = conn.execute("SELECT count(*) FROM mailroom.suppressions").fetchone()
            memory = memory_mib(daemon.pid)
        finally:
            daemon.stop()
    assert first is not None
    seconds = at - first[0]
    stored = n - first[1]
    return {
        "n": n,
        "pollers": pollers,
        "seconds": seconds,
        "rate": stored / seconds,
        "cpu_per_1000": (cpu - first[2]) / stored * 1000,
        "daemon_cores": (cpu - first[2]) / seconds,
        "sqs_cores": (sqs_cpu - first[3]) / seconds,
        "rss_mib": memory["VmRSS"],
        "suppressed": int(suppressed[0]) if suppressed else 0,
    }


def database_ceiling(bench: Bench, n: int) -> Result:
    """events_ingest for batches of 10 parsed events from one connection, no SQS."""
    from bench.suppression import snapshot_query  # noqa: PLC0415
    from mailroom.events.parsing import parse  # noqa: PLC0415
    from mailroom.events.storing import ingest_params  # noqa: PLC0415

    config = Config(database_url="")
    statement = snapshot_query("events_ingest")
    batches = []
    messages = bodies(n)
    for start in range(0, n, SQS_BATCH):
        events = [e for body in messages[start : start + SQS_BATCH] for e in parse(body)]
        batches.append(ingest_params(events, config))
    with bench.pg.database() as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for params in batches:
            conn.execute(statement, params).fetchone()
        seconds = time.perf_counter() - started
        stored = _count(conn)
    assert stored == n, (stored, n)
    return {"n": n, "seconds": seconds, "rate": n / seconds}


def sqs_ceiling(server: SqsServer, n: int, threads: int) -> Result:
    """ReceiveMessage (10) + DeleteMessageBatch loops in ``threads`` threads, nothing stored."""
    with server.queue(n) as url:
        sqs = server.client()
        received: list[list[str]] = [[] for _ in range(threads)]

        def drain(k: int) -> None:
            empty = 0
            while empty < 2:  # two empty answers in a row: the queue is drained
                answer = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=SQS_BATCH, WaitTimeSeconds=1
                )
                messages = answer.get("Messages") or []
                if not messages:
                    empty += 1
                    continue
                empty = 0
                received[k] += [m["MessageId"] for m in messages]
                entries = [
                    {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]}
                    for j, m in enumerate(messages)
                ]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)

        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(drain, range(threads)))
        # every thread ends with two empty 1 s long polls after the queue ran dry
        seconds = time.perf_counter() - started - 2.0
        sqs_cpu = cpu_seconds(server.pid) - cpu_before
    ids = [i for got in received for i in got]
    # moto may hand one message to two concurrent receives (its receive takes no lock)
    assert len(set(ids)) == n, (len(set(ids)), n)
    return {
        "n": n,
        "threads": threads,
        "seconds": seconds,
        "rate": n / seconds,
        "sqs_cores": sqs_cpu / seconds,
        "received_twice": len(ids) - len(set(ids)),
    }


def smoke(bench: Bench, n: int = 500) -> Result:
    """``python -m bench --smoke``: a daemon with the default pollers stores n events
    read from the SQS stand-in."""
    server = SqsServer("standin")
    try:
        return ingest(bench, server, n, None)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["moto"]:
        return serve_moto()
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="events per run (stand-in)")
    parser.add_argument("--n-moto", type=int, default=1_000, help="events per run (moto)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, in turn")
    parser.add_argument("--pollers", default="default,8", help="MAILROOM_EVENTS_POLLERS values")
    parser.add_argument("--sqs", default="moto,standin", help="SQS servers: moto, standin")
    parser.add_argument(
        "--sqs-latency-ms", type=float, default=0.0, help="the stand-in's delay per answer"
    )
    parser.add_argument("--source", default="HEAD", help="git commit, or 'worktree'")
    parser.add_argument("--json", type=Path, help="also save raw results as JSON here")
    args = parser.parse_args(argv)
    variants: list[int | None] = [
        None if p.strip() == "default" else int(p) for p in args.pollers.split(",")
    ]
    kinds = [k.strip() for k in args.sqs.split(",") if k.strip()]
    sizes = {"moto": args.n_moto, "standin": args.n}
    results: dict[str, list[Result]] = {}
    servers: dict[str, SqsServer] = {}
    with tempfile.TemporaryDirectory(prefix="mailroom-bench-") as workdir:
        commit, _ = snapshot(Path(workdir), args.source)
        pg = Postgres()
        pg.start()
        standin = Standin()
        try:
            for kind in kinds:
                servers[kind] = SqsServer(kind, args.sqs_latency_ms if kind == "standin" else 0)
            bench = Bench(pg, standin, Path(workdir))
            plan: list[tuple[str, Callable[[], Result]]] = []
            for kind, server in servers.items():
                n = sizes[kind]
                plan += [
                    (
                        f"{kind}: daemon, pollers {p or 'default'}",
                        partial(ingest, bench, server, n, p),
                    )
                    for p in variants
                ]
                plan += [
                    (f"{kind}: SQS alone, {t} threads", partial(sqs_ceiling, server, n, t))
                    for t in sorted({p or DEFAULT_POLLERS for p in variants})
                ]
            plan.append(("database alone: events_ingest", partial(database_ceiling, bench, args.n)))
            for round_ in range(1, args.runs + 1):
                for key, what in plan:
                    result = what()
                    results.setdefault(key, []).append(result)
                    shown = {k: round(v, 3) for k, v in result.items() if isinstance(v, float)}
                    print(f"[round {round_}] {key}: {shown}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            standin.stop()
            pg.stop()
    print(
        f"\ncode {commit}, {args.n:,} events per run ({args.n_moto:,} with moto),"
        f" {args.runs} run(s) each, medians (range); default pollers: {DEFAULT_POLLERS};"
        f" stand-in latency {args.sqs_latency_ms:g} ms"
    )
    print("\n| what | events/s | daemon CPU s / 1,000 | daemon cores | SQS server cores |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, runs in results.items():
        rates = [r["rate"] for r in runs]
        cells = [f"{statistics.median(rates):,.0f} ({min(rates):,.0f} to {max(rates):,.0f})"]
        for name in ("cpu_per_1000", "daemon_cores", "sqs_cores"):
            values = [r[name] for r in runs if name in r]
            cells.append(f"{statistics.median(values):.3f}" if values else "—")
        print(f"| {key} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
