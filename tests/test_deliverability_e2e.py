"""The deliverability loop end to end, over real HTTP: the daemon sends through the SES
stand-in acting as the mailbox simulator, SES events come back through SQS (moto's server),
the daemon stores them, suppresses bounced and complaining addresses, and the next message
to such an address never reaches SES. Then chaos: redelivered and out-of-order events, a
daemon killed mid-batch, the database refusing connections while events arrive."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql

import mailroom
from conftest import wait_for
from ses_simulator import SIMULATOR, MailboxSimulator, envelope
from sesv2_standin import SesStandin
from test_events import fixture

pytestmark = pytest.mark.slow


def sqs_client(url: str) -> Any:
    return boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


@pytest.fixture
def queue(moto_url: str) -> tuple[Any, str]:
    sqs = sqs_client(moto_url)
    name = f"ses-events-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    return sqs, url


@pytest.fixture
def events_env(moto_url: str, queue: tuple[Any, str]) -> dict[str, str]:
    return {"MAILROOM_EVENTS_QUEUE_URL": queue[1], "AWS_ENDPOINT_URL_SQS": moto_url}


def queue_empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return set(attributes.values()) == {"0"}


def count(conn: psycopg.Connection[Any], sql: str, *params: Any) -> int:
    row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def test_bounce_then_suppression_then_the_next_message_is_never_sent(
    conn: psycopg.Connection[Any], standin: SesStandin, queue: tuple[Any, str],
    events_env: dict[str, str], spawn: Any,
) -> None:  # fmt: skip
    simulator = MailboxSimulator(standin, *queue)
    daemon = spawn(**events_env)
    daemon.wait_listening()
    ids = {
        kind: mailroom.enqueue(conn, f"{kind}@{SIMULATOR}", template="activationv1", data={})
        for kind in ("success", "bounce", "ooto", "complaint", "suppressionlist")
    }

    def state(message_id: int) -> str | None:
        status = mailroom.status(conn, message_id)
        return None if status is None else status["delivery_state"]

    # message_status() is the application's view; the test's owner role enqueued them
    expected = {"success": "delivered", "bounce": "bounced", "ooto": "delivered",
                "complaint": "complained", "suppressionlist": "bounced"}  # fmt: skip
    wait_for(lambda: all(state(ids[k]) == v for k, v in expected.items()), timeout=30)
    suppressed = dict(conn.execute("SELECT address, reason FROM mailroom.suppressions").fetchall())
    assert suppressed == {
        f"bounce@{SIMULATOR}": "bounce",
        f"complaint@{SIMULATOR}": "complaint",
        f"suppressionlist@{SIMULATOR}": "bounce",
    }
    # a Send and a Delivery or Bounce each, and the complaint
    assert simulator.published == 5 * 2 + 1
    wait_for(lambda: queue_empty(*queue))

    # the next message to a bounced address never reaches SES; a mixed one goes to the rest
    sent_before = len(standin.sent())
    again = mailroom.enqueue(conn, f"BOUNCE@{SIMULATOR}", subject="again", text="t")
    mixed = mailroom.enqueue(conn, [f"complaint@{SIMULATOR}", f"success@{SIMULATOR}"],
                             subject="mixed", text="t")  # fmt: skip
    final = "SELECT count(*) FROM mailroom.outbox WHERE id IN (%s, %s)"
    final += " AND status IN ('sent', 'dead')"
    wait_for(lambda: count(conn, final, again, mixed) == 2)
    status = mailroom.status(conn, again)
    assert status is not None
    assert status["delivery_state"] == "dead"
    assert status["delivery_reason"] is not None
    assert status["delivery_reason"].startswith("suppressed: bounce since ")
    new = standin.sent()[sent_before:]
    assert [r["to"] for r in new] == [[f"success@{SIMULATOR}"]]
    assert all(f"bounce@{SIMULATOR}" not in r["to"] for r in standin.sent()[sent_before:])

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    logged = daemon.log_path.read_text()
    assert f"bounce@{SIMULATOR}" not in logged  # addresses are masked in the logs
    stored = [e for e in daemon.events() if e["event"] == "events_stored"]
    assert sum(e["events"] for e in stored) == count(conn, "SELECT count(*) FROM mailroom.events")


def bounce_event(address: str, message_id: str, kind: str = "Permanent") -> dict[str, Any]:
    document = fixture("bounce")
    document["mail"]["messageId"] = message_id
    document["bounce"]["bounceType"] = kind
    document["bounce"]["bouncedRecipients"][0]["emailAddress"] = address
    document["bounce"]["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return document


def publish(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
        ]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def test_redelivered_out_of_order_and_poison_events(
    conn: psycopg.Connection[Any], queue: tuple[Any, str], events_env: dict[str, str],
    spawn: Any,
) -> None:  # fmt: skip
    sqs, url = queue
    message_id = mailroom.enqueue(conn, "ivy@example.com", subject="S", text="t")
    conn.execute("UPDATE mailroom.outbox SET status = 'sent', sent_at = now(),"
                 " provider_message_id = 'ses-1' WHERE id = %s", [message_id])  # fmt: skip
    transient = [bounce_event("ivy@example.com", f"ses-{i}", "Transient") for i in (1, 2)]
    delivery = fixture("delivery")
    delivery["mail"]["messageId"] = "ses-9"
    bodies = [
        envelope(transient[0]),
        envelope(transient[0]),
        json.dumps(transient[1]),  # raw delivery
        envelope(transient[1]),
        envelope(transient[0]),
        "not json at all",
        json.dumps({"eventType": "Teleport", "mail": {}}),
        envelope(delivery),
        envelope(fixture("send")),  # a delivery before its send
        json.dumps({"Type": "SubscriptionConfirmation", "Message": "confirm me"}),
    ]
    publish(sqs, url, bodies)
    daemon = spawn(**events_env, MAILROOM_SUPPRESS_TRANSIENT_COUNT="3")
    wait_for(lambda: queue_empty(sqs, url), timeout=30)
    # two transient bounces, each seen up to three times: two, below the threshold of 3
    assert count(conn, "SELECT count(*) FROM mailroom.events WHERE event_type = 'Bounce'") == 2
    assert count(conn, "SELECT count(*) FROM mailroom.suppressions") == 0
    assert count(conn, "SELECT count(*) FROM mailroom.events") == 2 + 2 + 2
    status = mailroom.status(conn, message_id)
    assert status is not None
    assert status["delivery_state"] == "bounced"
    malformed = [e for e in daemon.events() if e["event"] == "event_malformed"]
    assert sorted(e["reason"] for e in malformed) == ["not_json", "unknown_type"]
    assert any(e["event"] == "event_ignored" for e in daemon.events())
    publish(sqs, url, [envelope(bounce_event("ivy@example.com", "ses-3", "Transient"))])
    wait_for(lambda: count(conn, "SELECT count(*) FROM mailroom.suppressions") == 1)


def test_sigkill_mid_batch_and_database_outage_lose_no_event_and_count_none_twice(  # noqa: PLR0917 -- fixtures
    conn: psycopg.Connection[Any], db: str, pg_admin_dsn: str, queue: tuple[Any, str],
    events_env: dict[str, str], spawn: Any,
) -> None:  # fmt: skip
    sqs, url = queue
    n = 400
    publish(sqs, url, [envelope(bounce_event(f"r{i}@example.com", f"m-{i}")) for i in range(n)])
    first = spawn(**events_env, MAILROOM_EVENTS_POLLERS="4")
    wait_for(lambda: count(conn, "SELECT count(*) FROM mailroom.events") > 20, interval=0.005)
    first.signal(signal.SIGKILL)
    first.wait(10)
    time.sleep(0.5)  # a statement the killed daemon had sent may still commit
    killed_at = count(conn, "SELECT count(*) FROM mailroom.events")
    assert killed_at < n, "the kill came too late to be mid-batch"

    # the database refuses connections while more events arrive
    dbname = psycopg.conninfo.conninfo_to_dict(db)["dbname"]
    second = spawn(**events_env)
    wait_for(lambda: any(e["event"] == "events_stored" for e in second.events()))
    admin = psycopg.connect(pg_admin_dsn, autocommit=True)
    allow = "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}"
    admin.execute(sql.SQL(allow).format(sql.Identifier(dbname), sql.SQL("false")))
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                  " WHERE application_name = 'mailroom' AND datname = %s", [dbname])  # fmt: skip
    publish(sqs, url, [envelope(bounce_event(f"late{i}@example.com", f"l-{i}")) for i in range(50)])
    wait_for(lambda: any(e["event"] == "events_store_failed" for e in second.events()), timeout=30)
    admin.execute(sql.SQL(allow).format(sql.Identifier(dbname), sql.SQL("true")))
    admin.close()

    wait_for(lambda: count(conn, "SELECT count(*) FROM mailroom.events") == n + 50, timeout=60)
    wait_for(lambda: queue_empty(sqs, url), timeout=30)
    assert count(conn, "SELECT count(*) FROM mailroom.suppressions") == n + 50
    assert count(conn, "SELECT count(DISTINCT event_key) FROM mailroom.events") == n + 50
    # the surviving daemon counted each event it stored once, redeliveries as duplicates
    stored = sum(e["events"] for e in second.events() if e["event"] == "events_stored")
    assert stored == n + 50 - killed_at
