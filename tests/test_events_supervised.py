"""An SQS endpoint answering what no real SQS answers (a message without a receipt
handle) to a real daemon process. With botocore's client this crashed the reader (the
supervisor restarted it, tests/test_events_reader.py covers the restart itself); the
project's own SQS client (mailroom.events.sqsclient) reads answers item by item: the
message is counted and left out, the reader polls on, and sending goes on."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import wait_for
from sesv2_standin import SesStandin
from test_deliverability_e2e import count

pytestmark = pytest.mark.slow


class _BrokenSqs(BaseHTTPRequestHandler):
    """SQS's JSON protocol, answering every ReceiveMessage with a message that has no
    ReceiptHandle, and every other call with an empty success."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        answer: dict[str, Any] = {}
        if target.endswith(".ReceiveMessage"):
            answer = {"Messages": [{"MessageId": "m-1", "Body": "not json"}]}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def broken_sqs() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenSqs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_message_without_receipt_handle_is_counted_and_mail_is_still_sent(
    conn: psycopg.Connection[Any], standin: SesStandin, broken_sqs: str, spawn: Any,
) -> None:  # fmt: skip
    daemon = spawn(
        MAILROOM_EVENTS_QUEUE_URL=f"{broken_sqs}/123456789012/ses-events",
        AWS_ENDPOINT_URL_SQS=broken_sqs,
    )
    daemon.wait_listening()
    named = lambda name: [e for e in daemon.events() if e["event"] == name]  # noqa: E731 -- a one-line probe
    wait_for(lambda: len(named("events_unusable_messages")) >= 2, timeout=30)  # polls on
    assert daemon.proc.poll() is None, "the daemon exited"
    assert named("events_reader_crashed") == []
    control = mailroom.enqueue(conn, "control@example.com", subject="control", text="t")
    final = "SELECT count(*) FROM mailroom.outbox WHERE id = %s AND status = 'sent'"
    wait_for(lambda: count(conn, final, control) == 1, timeout=30)
    assert any(r["to"] == ["control@example.com"] for r in standin.sent())
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
