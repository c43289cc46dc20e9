"""A minimal SQS over real HTTP for ``bench.events``: the JSON protocol boto3 speaks
(``X-Amz-Target: AmazonSQS.<Action>``), standard queues, in memory, O(1) per message.

moto's SQS re-counts every message of a queue for each message it hands out (its
retention check reads the queue's attributes), so a receive costs O(queue depth) and a
drain O(depth²): it cannot show what a daemon's reader does at thousands of events per
second. This stand-in can; it is a benchmark tool, not a test double (no signatures are
checked, no FIFO, no attributes but the approximate counts, no dead-letter queues).

``python -m bench.sqs_standin [--port N]`` prints ``listening http://127.0.0.1:N``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT = "123456789012"
MAX_WAIT = 20.0  # SQS's longest long poll


class SqsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Queue:
    visibility: float = 30.0
    ready: deque[tuple[str, str]] = field(default_factory=deque)  # (message id, body)
    inflight: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # by receipt
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def requeue_expired(self, now: float) -> None:
        """In-flight messages whose visibility timeout passed are received again."""
        expired = [r for r, (_, _, until) in self.inflight.items() if until <= now]
        for receipt in expired:
            message_id, body, _ = self.inflight.pop(receipt)
            self.ready.append((message_id, body))


class Sqs:
    def __init__(self) -> None:
        self.base = ""
        self.queues: dict[str, Queue] = {}
        self.lock = threading.Lock()

    def queue(self, body: dict[str, Any]) -> Queue:
        url = str(body.get("QueueUrl", ""))
        found = self.queues.get(url.rsplit("/", 1)[-1])
        if found is None:
            raise SqsError("AWS.SimpleQueueService.NonExistentQueue", f"no queue {url!r}")
        return found

    def create_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body["QueueName"])
        visibility = float((body.get("Attributes") or {}).get("VisibilityTimeout", 30))
        with self.lock:
            self.queues.setdefault(name, Queue(visibility=visibility))
        return {"QueueUrl": f"{self.base}/{ACCOUNT}/{name}"}

    def delete_queue(self, body: dict[str, Any]) -> dict[str, Any]:
        url = str(body.get("QueueUrl", ""))
        with self.lock:
            self.queues.pop(url.rsplit("/", 1)[-1], None)
        return {}

    def get_queue_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(body)
        with queue.arrived:
            queue.requeue_expired(time.monotonic())
            counts = {
                "ApproximateNumberOfMessages": str(len(queue.ready)),
                "ApproximateNumberOfMessagesNotVisible": str(len(queue.inflight)),
            }
        return {"Attributes": counts}

    def send_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(body)
        done = []
        with queue.arrived:
            for entry in body["Entries"]:
                text = str(entry["MessageBody"])
                message_id = str(uuid.uuid4())
                queue.ready.append((message_id, text))
                digest = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
                done.append(
                    {"Id": entry["Id"], "MessageId": message_id, "MD5OfMessageBody": digest}
                )
            queue.arrived.notify_all()
        return {"Successful": done, "Failed": []}

    def receive_message(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(body)
        count = max(1, min(10, int(body.get("MaxNumberOfMessages", 1))))
        deadline = time.monotonic() + min(MAX_WAIT, float(body.get("WaitTimeSeconds", 0)))
        visibility = float(body.get("VisibilityTimeout", queue.visibility))
        out = []
        with queue.arrived:
            while True:
                now = time.monotonic()
                if not queue.ready:
                    queue.requeue_expired(now)
                if queue.ready or now >= deadline:
                    break
                queue.arrived.wait(min(1.0, deadline - now))
            while queue.ready and len(out) < count:
                message_id, text = queue.ready.popleft()
                receipt = uuid.uuid4().hex
                queue.inflight[receipt] = (message_id, text, now + visibility)
                digest = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
                out.append({"MessageId": message_id, "ReceiptHandle": receipt,
                            "MD5OfBody": digest, "Body": text})  # fmt: skip
        return {"Messages": out} if out else {}

    def delete_message_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(body)
        with queue.arrived:
            for entry in body["Entries"]:
                queue.inflight.pop(str(entry["ReceiptHandle"]), None)  # gone already: fine
        return {"Successful": [{"Id": e["Id"]} for e in body["Entries"]], "Failed": []}


ACTIONS = {
    "CreateQueue": Sqs.create_queue,
    "DeleteQueue": Sqs.delete_queue,
    "GetQueueAttributes": Sqs.get_queue_attributes,
    "SendMessageBatch": Sqs.send_message_batch,
    "ReceiveMessage": Sqs.receive_message,
    "DeleteMessageBatch": Sqs.delete_message_batch,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
    sqs: Sqs
    latency = 0.0  # seconds added to every answer: a network and service's round trip

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes: without this, Nagle's algorithm holds the
        # body back until the client's delayed ACK (40 ms a response)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        action = self.headers.get("X-Amz-Target", "").removeprefix("AmazonSQS.")
        try:
            handler = ACTIONS.get(action)
            if handler is None:
                raise SqsError("InvalidAction", f"action {action[:40]!r} is not served here")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise SqsError("InvalidParameterValue", "the body is not JSON") from None
            status, answer = 200, handler(self.sqs, body)
        except SqsError as exc:
            status, answer = exc.status, {"__type": exc.code, "message": str(exc)}
        except (KeyError, TypeError, ValueError) as exc:
            status = 400
            answer = {"__type": "InvalidParameterValue", "message": f"bad request: {exc!r}"[:200]}
        data = json.dumps(answer).encode()
        if self.latency:
            time.sleep(self.latency)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would cost more than the request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    args = parser.parse_args(argv)
    sqs = Sqs()
    Handler.sqs = sqs
    Handler.latency = args.latency_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    sqs.base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"listening {sqs.base}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
