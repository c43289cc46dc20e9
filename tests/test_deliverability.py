"""Events, delivery state and the suppression list in a real PostgreSQL (sql/0009), through
the same named queries the daemon runs, and as each role."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors

import mailroom
from mailroom.config import settings as configuration
from mailroom.events import parsing as events
from mailroom.events.storing import ingest_params
from mailroom.outbox import query
from test_events import fixture, sns

CONFIG = configuration.Config(database_url="")


def ingest(
    conn: psycopg.Connection[Any],
    records: list[events.Event],
    config: configuration.Config = CONFIG,
) -> tuple[list[str], list[str]]:
    row = conn.execute(query("events_ingest"), ingest_params(records, config)).fetchone()
    assert row is not None
    return list(row[0]), list(row[1])


def sent_message(conn: psycopg.Connection[Any], to: str | list[str], provider_id: str) -> int:
    message_id = mailroom.enqueue(conn, to, subject="S", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sent', sent_at = now(), provider_message_id = %s"
        " WHERE id = %s",
        [provider_id, message_id],
    )
    return message_id


def bounce(
    address: str, kind: str = "Permanent", message_id: str = "m-1", at: str = ""
) -> events.Event:
    document = fixture("bounce")
    document["mail"]["messageId"] = message_id
    document["bounce"]["bounceType"] = kind
    document["bounce"]["bounceSubType"] = "General" if kind == "Permanent" else "MailboxFull"
    document["bounce"]["bouncedRecipients"][0]["emailAddress"] = address
    document["bounce"]["timestamp"] = at or datetime.now(UTC).isoformat()
    (record,) = events.parse(sns(document))
    return record


def test_ingest_is_idempotent_and_suppresses_once(conn: psycopg.Connection[Any]) -> None:
    record = bounce("Ann@Example.com")
    new, suppressed = ingest(conn, [record, record])  # the same event twice in one batch
    assert new == [record.key]
    assert suppressed == ["bounce"]
    assert ingest(conn, [record]) == ([], [])  # redelivered later: nothing, not even a count
    rows = conn.execute("SELECT address, reason FROM mailroom.suppressions").fetchall()
    assert rows == [("ann@example.com", "bounce")]
    assert conn.execute("SELECT count(*) FROM mailroom.events").fetchone() == (1,)


def test_transient_bounces_suppress_after_the_count_within_the_window(
    conn: psycopg.Connection[Any],
) -> None:
    config = dataclasses.replace(CONFIG, suppress_transient_count=3)
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    first = bounce("ivy@example.com", "Transient", "m-1")
    second = bounce("ivy@example.com", "Transient", "m-2")
    ancient = bounce("ivy@example.com", "Transient", "m-0", at=old)  # outside the window
    assert ingest(conn, [first, ancient], config)[1] == []
    # redeliveries of the same bounces count once (the PostHog #71038 bug)
    assert ingest(conn, [first, second, second], config)[1] == []
    third = bounce("ivy@example.com", "Undetermined", "m-3")
    assert ingest(conn, [third], config)[1] == ["transient_bounces"]
    row = conn.execute("SELECT reason, detail FROM mailroom.suppressions").fetchone()
    assert row is not None
    assert row[0] == "transient_bounces"
    assert row[1].startswith("3 transient bounces within 168.0 h")


def test_events_for_unknown_messages_still_suppress(conn: psycopg.Connection[Any]) -> None:
    (complaint,) = events.parse(sns(fixture("complaint")))
    assert ingest(conn, [complaint])[1] == ["complaint"]
    with conn.cursor() as cur:
        assert cur.execute("SELECT mailroom.is_suppressed('Bob <BOB@example.com>')").fetchone() == (
            True,
        )
        assert cur.execute("SELECT mailroom.is_suppressed('zed@example.com')").fetchone() == (
            False,
        )


def states(conn: psycopg.Connection[Any], message_id: int) -> tuple[Any, ...]:
    row = conn.execute(query("message_delivery"), {"id": message_id}).fetchone()
    assert row is not None
    return tuple(row)


def test_delivery_state_whatever_order_the_events_arrive_in(
    conn: psycopg.Connection[Any],
) -> None:
    delivered = sent_message(conn, ["carol@example.com", "dave@example.com"], "0100018f-message-3")
    assert states(conn, delivered)[0] == "sent"
    # recent: older timestamps are clamped to 30 days ago (events_ingest)
    delivered_at = datetime.now(UTC).replace(microsecond=500000) - timedelta(hours=1)
    delivery_document = fixture("delivery")
    delivery_document["delivery"]["timestamp"] = delivered_at.isoformat()
    delivery = events.parse(sns(delivery_document))
    send, opened = (events.parse(sns(fixture(n))) for n in ("send", "open"))
    ingest(conn, opened)  # out of order: the open first, then delivery, then send
    ingest(conn, delivery)
    ingest(conn, send)
    state, at, reason = states(conn, delivered)
    assert state == "delivered"
    assert reason == "Delivery: 250 2.6.0 Message received"
    assert at == delivered_at

    delayed = sent_message(conn, "frank@example.com", "0100018f-message-5")
    ingest(conn, events.parse(sns(fixture("delivery_delay"))))
    assert states(conn, delayed)[0] == "delayed"
    late = fixture("delivery")
    late["mail"]["messageId"] = "0100018f-message-5"
    late["delivery"]["recipients"] = ["frank@example.com"]
    ingest(conn, events.parse(sns(late)))
    assert states(conn, delayed)[0] == "delivered"

    complained = sent_message(conn, "bob@example.com", "0100018f-message-2")
    ingest(conn, events.parse(sns(fixture("complaint"))))
    late["mail"]["messageId"] = "0100018f-message-2"
    late["delivery"]["recipients"] = ["bob@example.com"]
    ingest(conn, events.parse(sns(late)))
    assert states(conn, complained)[0] == "complained"  # a delivery later does not undo it

    bounced = sent_message(conn, "ann@example.com", "0100018f-message-1")
    ingest(conn, events.parse(sns(fixture("bounce"))))
    state, _, reason = states(conn, bounced)
    assert (state, reason) == ("bounced", "Bounce Permanent/General: smtp; 550 5.1.1 user unknown")

    pending = mailroom.enqueue(conn, "x@example.com", subject="S", text="t")
    assert states(conn, pending)[0] == "pending"


def test_message_status_for_the_application_shows_delivery_of_its_own_messages_only(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    shop, other = login_as("mailroom_app"), login_as("mailroom_app")
    with psycopg.connect(shop, autocommit=True) as app:
        mine = mailroom.enqueue(app, "ann@example.com", subject="S", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sent', sent_at = now(),"
        " provider_message_id = '0100018f-message-1' WHERE id = %s",
        [mine],
    )
    ingest(conn, events.parse(sns(fixture("bounce"))))
    with psycopg.connect(shop, autocommit=True) as app:
        status = mailroom.status(app, mine)
        assert status is not None
        assert (status["status"], status["delivery_state"]) == ("sent", "bounced")
        assert "Permanent/General" in str(status["delivery_reason"])
        assert app.execute("SELECT mailroom.is_suppressed('ann@example.com')").fetchone() == (True,)
        for statement in (
            "SELECT * FROM mailroom.events",
            "SELECT * FROM mailroom.suppressions",
            "DELETE FROM mailroom.suppressions",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)
    with psycopg.connect(other, autocommit=True) as app:
        assert mailroom.status(app, mine) is None


def test_a_message_whose_recipients_are_all_suppressed_is_dead_with_why(
    conn: psycopg.Connection[Any],
) -> None:
    message_id = mailroom.enqueue(conn, "x@example.com", subject="S", text="t")
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'dead',"
        " last_error = 'suppressed: bounce since 2024-05-01T10:00:05Z' WHERE id = %s",
        [message_id],
    )
    state, _, reason = states(conn, message_id)
    assert (state, reason) == ("dead", "suppressed: bounce since 2024-05-01T10:00:05Z")


def test_the_daemon_role_may_ingest_and_read_but_not_forget(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        assert ingest(daemon, [bounce("ann@example.com")])[1] == ["bounce"]
        rows = daemon.execute(
            query("suppressed_among"), {"addresses": ["ann@example.com", "b@x.io"]}
        )
        assert [r[:2] for r in rows.fetchall()] == [("ann@example.com", "bounce")]
        for statement in (
            "DELETE FROM mailroom.suppressions",
            "UPDATE mailroom.events SET detail = ''",
            "DELETE FROM mailroom.events",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                daemon.execute(statement)


def test_suppression_entries_are_normalized_and_reasons_known(
    conn: psycopg.Connection[Any],
) -> None:
    for address, reason in (
        ("Ann@example.com", "manual"),
        ("a@example.com", "whim"),
        ("nobody", "manual"),
    ):
        with pytest.raises(errors.CheckViolation):
            conn.execute("INSERT INTO mailroom.suppressions (address, reason) VALUES (%s, %s)",
                          [address, reason])  # fmt: skip


def test_reputation_window(conn: psycopg.Connection[Any]) -> None:
    for first, count in ((0, 50), (50, 47)):  # at most 50 recipients per event
        delivered = fixture("delivery")
        delivered["mail"]["messageId"] = f"m-delivered-{first}"
        delivered["delivery"]["recipients"] = [
            f"r{i}@example.com" for i in range(first, first + count)
        ]
        ingest(conn, events.parse(sns(delivered)))
    for i in range(3):
        ingest(conn, [bounce(f"b{i}@example.com", message_id=f"m-{i}")])
    (complaint,) = events.parse(sns(fixture("complaint")))
    ingest(conn, [complaint])
    row = conn.execute(query("reputation"), {"window": 10_000}).fetchone()
    assert row == (100, 3, 1)
    row = conn.execute(query("reputation"), {"window": 2}).fetchone()
    assert row == (2, 2, 1)  # the newest two: bounces; the complaint came after them


def test_show_lists_events_masked_unless_revealed(conn: psycopg.Connection[Any]) -> None:
    from mailroom.cli.messages import format_show  # noqa: PLC0415
    from mailroom.operator import admin  # noqa: PLC0415
    from mailroom.text import jsonable  # noqa: PLC0415

    message_id = sent_message(conn, "ann@example.com", "0100018f-message-1")
    ingest(conn, events.parse(sns(fixture("bounce"))))
    shown = admin.show(conn, message_id)
    assert shown is not None
    (event,) = shown["events"]
    assert event["type"] == "Bounce"
    assert event["recipient"] == "a***@example.com"
    assert shown["delivery"]["state"] == "bounced"
    assert "ann@example.com" not in json.dumps(jsonable(shown))
    text = format_show(shown)
    assert "Bounce Permanent/General" in text
    revealed = admin.show(conn, message_id, reveal=True)
    assert revealed is not None
    assert revealed["events"][0]["recipient"] == "ann@example.com"
