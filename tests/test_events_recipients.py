"""Whoever can write to the events queue decides less (issue 19, item 3): an event naming a
message mailroom sent acts only on that message's recipients; events for messages mailroom
does not know suppress by default, or are ignored (MAILROOM_EVENTS_UNKNOWN=ignore). Attacks
first, against a real PostgreSQL, through the named queries the daemon runs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import mailroom
from mailroom.config import settings as configuration
from mailroom.events import parsing as events
from mailroom.events.storing import ingest_params
from mailroom.outbox import query
from test_deliverability import sent_message, states
from test_events import fixture, sns

CONFIG = configuration.Config(database_url="")


def ingest(
    conn: psycopg.Connection[Any], records: list[events.Event], config: Any = CONFIG
) -> tuple[list[str], list[str], list[str]]:
    """(keys stored, suppression reasons added, reasons of the events dropped)."""
    row = conn.execute(query("events_ingest"), ingest_params(records, config)).fetchone()
    assert row is not None
    return list(row[0]), list(row[1]), list(row[3])


def bounce_of(message_id: str, addresses: list[str], kind: str = "Permanent") -> str:
    document = fixture("bounce")
    document["mail"]["messageId"] = message_id
    document["bounce"]["bounceType"] = kind
    document["bounce"]["bouncedRecipients"] = [
        {"emailAddress": a, "diagnosticCode": "smtp; 550 5.1.1 user unknown"} for a in addresses
    ]
    return sns(document)


def suppressed(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(a) for (a,) in conn.execute("SELECT address FROM mailroom.suppressions ORDER BY 1")]


def test_an_event_for_our_message_naming_5000_strangers_suppresses_none_of_them(
    conn: psycopg.Connection[Any],
) -> None:
    """Before: every address in the event was suppressed (5,001 rows from one message)."""
    sent_message(conn, "ann@example.com", "ses-ours")
    strangers = [f"victim{i}@example.org" for i in range(5000)]
    records = events.parse(bounce_of("ses-ours", ["ann@example.com", *strangers]))
    stored, added, dropped = ingest(conn, records)
    assert suppressed(conn) == ["ann@example.com"]
    assert added == ["bounce"]
    assert len(stored) == 1
    assert dropped
    assert set(dropped) == {"not_a_recipient"}
    rows = conn.execute("SELECT DISTINCT recipient FROM mailroom.events").fetchall()
    assert rows == [("ann@example.com",)]


def test_an_event_for_our_message_cannot_mark_it_bounced_for_someone_else(
    conn: psycopg.Connection[Any],
) -> None:
    """Before: message X (to ann) showed "bounced" from an event naming bob, who is the
    recipient of another application's message Y, and bob was suppressed."""
    ours = sent_message(conn, "ann@example.com", "ses-x")
    theirs = sent_message(conn, "bob@example.com", "ses-y")
    ingest(conn, events.parse(bounce_of("ses-x", ["bob@example.com"])))
    assert states(conn, ours)[0] == "sent"
    assert states(conn, theirs)[0] == "sent"
    assert suppressed(conn) == []


def test_the_delivery_state_ignores_stored_events_of_non_recipients(
    conn: psycopg.Connection[Any],
) -> None:
    """A hostile row stored before the recipient rule (sql/0022 makes delivery_summary read
    only the message's own recipients)."""
    ours = sent_message(conn, "ann@example.com", "ses-x")
    conn.execute(
        "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
        " subtype, detail, occurred_at) VALUES ('old-1', 'ses-x', 'mallory@example.org',"
        " 'Bounce', 'Permanent/General', 'attacker text', now())"
    )
    assert states(conn, ours)[0] == "sent"
    ingest(conn, events.parse(bounce_of("ses-x", ["Ann@Example.com"])))
    state, _, reason = states(conn, ours)
    assert state == "bounced"
    assert "attacker text" not in str(reason)


def test_every_recipient_of_our_message_counts_to_cc_and_bcc_normalised(
    conn: psycopg.Connection[Any],
) -> None:
    message_id = mailroom.enqueue(
        conn, "Ann Smith <Ann@Example.com>", cc=["carol@example.com"],
        bcc=["DAVE@example.com"], subject="S", text="t",
    )  # fmt: skip
    conn.execute(
        "UPDATE mailroom.outbox SET status = 'sent', sent_at = now(),"
        " provider_message_id = 'ses-3' WHERE id = %s",
        [message_id],
    )
    addresses = ["ann@example.com", "Carol@example.com", "dave@example.com", "eve@example.com"]
    _, _, dropped = ingest(conn, events.parse(bounce_of("ses-3", addresses)))
    assert suppressed(conn) == ["ann@example.com", "carol@example.com", "dave@example.com"]
    assert dropped == ["not_a_recipient"]


def test_events_for_unknown_messages_suppress_by_default_or_are_ignored(
    conn: psycopg.Connection[Any],
) -> None:
    records = events.parse(bounce_of("ses-elsewhere", ["zed@example.com"]))
    ignoring = dataclasses.replace(CONFIG, events_unknown="ignore")
    assert ingest(conn, records, ignoring) == ([], [], ["unknown_message"])
    assert conn.execute("SELECT count(*) FROM mailroom.events").fetchone() == (0,)
    assert suppressed(conn) == []
    stored, added, dropped = ingest(conn, records)  # the default: mail sent by other systems
    assert (len(stored), added, dropped) == (1, ["bounce"], [])
    # known messages are judged by their recipients whatever the setting
    sent_message(conn, "ann@example.com", "ses-ours")
    ours = events.parse(bounce_of("ses-ours", ["ann@example.com", "x@example.com"]))
    stored, added, dropped = ingest(conn, ours, ignoring)
    assert (len(stored), added, dropped) == (1, ["bounce"], ["not_a_recipient"])


def test_the_unknown_setting_is_read_and_checked() -> None:
    env = {"MAILROOM_DATABASE_URL": "postgresql:///x"}
    assert configuration.load(env).events_unknown == "suppress"
    assert configuration.load({**env, "MAILROOM_EVENTS_UNKNOWN": "Ignore"}).events_unknown == (
        "ignore"
    )
    with pytest.raises(configuration.ConfigError, match="MAILROOM_EVENTS_UNKNOWN"):
        configuration.load({**env, "MAILROOM_EVENTS_UNKNOWN": "drop"})


# -- timestamps clamped to a plausible window -----------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "clamped_to"),
    [
        ("0001-01-01T00:00:00+14:00", "past"),  # 1 BC in UTC: PostgreSQL stored it so
        ("9999-12-31T23:59:59-14:00", "future"),  # year 10000 in UTC
        ("2000-01-01T00:00:00Z", "past"),
        ("2999-01-01T00:00:00Z", "future"),
    ],
)
def test_implausible_timestamps_are_clamped(
    conn: psycopg.Connection[Any], stamp: str, clamped_to: str
) -> None:
    document = fixture("delivery_delay")
    document["deliveryDelay"]["timestamp"] = stamp
    records = events.parse(sns(document))
    ingest(conn, records)
    row = conn.execute(
        "SELECT bool_and(occurred_at BETWEEN now() - interval '30 days 1 minute'"
        "                            AND now() - interval '30 days'),"
        " bool_and(occurred_at BETWEEN now() + interval '14 minutes'"
        "                          AND now() + interval '15 minutes') FROM mailroom.events"
    ).fetchone()
    assert row == ((True, False) if clamped_to == "past" else (False, True))
    # the key is the event's own: a redelivery next week is still a duplicate
    assert ingest(conn, events.parse(sns(document)))[0] == []


def test_plausible_timestamps_are_kept_as_they_are(conn: psycopg.Connection[Any]) -> None:
    document = fixture("delivery_delay")
    document["deliveryDelay"]["timestamp"] = "2026-01-01T00:00:00Z"
    (record,) = events.parse(sns(document))
    recent = dataclasses.replace(record, occurred_at=datetime.now(UTC) - timedelta(days=29))
    ingest(conn, [recent])
    row = conn.execute("SELECT occurred_at FROM mailroom.events").fetchone()
    assert row == (recent.occurred_at,)
