"""Poison SQS messages against a real daemon process and moto's SQS (real HTTP): hostile
event content must never stop sending, never loop in the queue, and never cost the good
events that arrived in the same batch."""

from __future__ import annotations

import json
import secrets
import signal
import uuid
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import wait_for
from ses_simulator import envelope
from sesv2_standin import SesStandin
from test_deliverability_e2e import bounce_event, count, publish, queue_empty, sqs_client

pytestmark = pytest.mark.slow

MAX_RECEIVES = 2  # the redrive policy: a message received more often lands in the DLQ


@pytest.fixture
def queues(moto_url: str) -> tuple[Any, str, str]:
    """(client, queue URL, dead-letter queue URL): moto moves a message received more than
    MAX_RECEIVES times to the DLQ, so an empty DLQ proves no message looped."""
    sqs = sqs_client(moto_url)
    name = f"ses-events-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
               "maxReceiveCount": str(MAX_RECEIVES)}  # fmt: skip
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": "2", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return sqs, url, dlq


def test_poison_messages_neither_stop_sending_nor_loop_nor_cost_good_events(
    conn: psycopg.Connection[Any], standin: SesStandin, queues: tuple[Any, str, str],
    moto_url: str, spawn: Any,
) -> None:  # fmt: skip
    sqs, url, dlq = queues
    surrogate = bounce_event("sur@example.com", "ses-surrogate")
    surrogate["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550 \ud800 no"
    surrogate["bounce"]["bounceSubType"] = "General\udfff"
    nul = bounce_event("nul@example.com", "ses-nul")
    nul["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550\x00 user unknown"
    # random hex: a btree index entry this long cannot be compressed below the page limit
    huge = bounce_event(f"{secrets.token_hex(1500)}@example.com", "ses-huge")
    long_id = bounce_event("longid@example.com", "x" * 3000)
    good = bounce_event("good@example.com", "ses-good")
    publish(sqs, url, [envelope(e) for e in (surrogate, nul, huge, long_id, good)])

    daemon = spawn(MAILROOM_EVENTS_QUEUE_URL=url, AWS_ENDPOINT_URL_SQS=moto_url)
    wait_for(lambda: queue_empty(sqs, url), timeout=30)
    assert daemon.proc.poll() is None, "the daemon exited"
    control = mailroom.enqueue(conn, "control@example.com", subject="control", text="t")
    final = "SELECT count(*) FROM mailroom.outbox WHERE id = %s AND status = 'sent'"
    wait_for(lambda: count(conn, final, control) == 1, timeout=30)
    assert any(r["to"] == ["control@example.com"] for r in standin.sent())

    by_id = "SELECT count(*) FROM mailroom.events WHERE provider_message_id = %s"
    assert count(conn, by_id, "ses-good") == 1
    # sanitised, not lost: the bounce still suppresses its address
    assert count(conn, by_id, "ses-nul") == 1
    assert count(conn, by_id, "ses-surrogate") == 1
    assert count(conn, "SELECT count(*) FROM mailroom.events WHERE length(recipient) > 320") == 0
    suppressed = {a for (a,) in conn.execute("SELECT address FROM mailroom.suppressions")}
    assert suppressed == {"good@example.com", "nul@example.com", "sur@example.com"}
    assert queue_empty(sqs, dlq), "a message was received more than twice"
    assert daemon.proc.poll() is None, "the daemon exited"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    malformed = sorted(e["reason"] for e in daemon.events() if e["event"] == "event_malformed")
    assert malformed == ["too_long", "too_long"]
