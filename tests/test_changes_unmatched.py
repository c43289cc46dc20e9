"""SES events stored before their message's record (sql/0034): the events trigger notes
them in mailroom.changes_unmatched, the record's trigger reads that table instead of every
stored event, and nothing else reads or writes it. Real PostgreSQL, the daemon's own
claim and record statements; the race in both orders is in tests/test_changes.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

import mailroom
from mailroom import migrate
from mailroom.outbox import query
from test_changes import EVENT


def delivered(conn: psycopg.Connection[Any], key: str, provider_id: str, to: str) -> None:
    conn.execute(EVENT, [key, provider_id, to, "Delivery", "", "250 ok"])


def send(conn: psycopg.Connection[Any], provider_ids: dict[int, str]) -> None:
    """The daemon's claim, then its record of every claimed message as sent."""
    claim = {"queue": "user_action_queue", "limit": 100, "owner": "w", "lease_seconds": 60.0}
    rows = conn.cursor(binary=True).execute(query("claim"), claim).fetchall()
    assert sorted(r[0] for r in rows) == sorted(provider_ids)
    outcome = {"owner": "w", "ids": [r[0] for r in rows],
               "provider_ids": [provider_ids[r[0]] for r in rows], "statuses": None,
               "refunds": None, "delays": None, "errors": None, "attempt_outcomes": None,
               "tries": [r[1] for r in rows], "leases": [r[-1] for r in rows]}  # fmt: skip
    conn.execute(query("record"), outcome)


def waiting(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT provider_message_id FROM mailroom.changes_unmatched ORDER BY event_id"
    ).fetchall()
    return [r[0] for r in rows]


def states(app: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    return [(c.message_id, c.state) for c in mailroom.changes(app, follow=False)]


@pytest.fixture
def app(login_as: Callable[..., str]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as connection:
        yield connection


def test_an_early_event_waits_until_its_record_and_a_foreign_one_until_pruned(
    conn: psycopg.Connection[Any], app: psycopg.Connection[Any]
) -> None:
    early, later = (
        mailroom.enqueue(app, f"u{i}@example.com", subject="s", text="t") for i in (1, 2)
    )
    delivered(conn, "k1", "p-early", "u1@example.com")  # SES was faster than the record
    delivered(conn, "k2", "p-foreign", "x@example.com")  # mail mailroom did not send
    conn.execute(EVENT, ["k3", "p-early", "u1@example.com", "Open", "", None])  # no change
    assert waiting(conn) == ["p-early", "p-foreign"]
    send(conn, {early: "p-early", later: "p-later"})
    assert states(app) == [(early, "sent"), (later, "sent"), (early, "delivered")]
    assert waiting(conn) == ["p-foreign"]  # matched, so gone
    # an event whose message is already recorded is written at once and never waits
    delivered(conn, "k4", "p-later", "u2@example.com")
    assert waiting(conn) == ["p-foreign"]
    assert states(app)[-1] == (later, "delivered")
    # the foreign one goes with its event (prune_events deletes events as the owner)
    conn.execute("DELETE FROM mailroom.events WHERE event_key = 'k2'")
    assert waiting(conn) == []


@pytest.mark.parametrize(
    "role", ["mailroom_app", "mailroom_daemon", "mailroom_operator", "mailroom_viewer", None]
)
def test_no_role_reads_or_writes_the_waiting_events(
    role: str | None, conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    delivered(conn, "k1", "p-1", "x@example.com")
    with psycopg.connect(login_as(role), autocommit=True) as other:
        for statement in (
            "SELECT * FROM mailroom.changes_unmatched",
            "DELETE FROM mailroom.changes_unmatched",
            "INSERT INTO mailroom.changes_unmatched VALUES (1, 'p-1')",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute(statement)
    assert waiting(conn) == ["p-1"]


@pytest.fixture
def at_0032(migrated_to: Callable[[int], str]) -> str:
    return migrated_to(32)


def test_an_event_stored_before_the_upgrade_still_meets_its_record(
    at_0032: str, login_as: Callable[..., str]
) -> None:
    """A record in flight across the upgrade: its event was stored under 0032 (which
    noted nothing), the record commits under 0034."""
    with (
        psycopg.connect(at_0032, autocommit=True) as owner,
        psycopg.connect(login_as("mailroom_app", db=at_0032), autocommit=True) as app,
    ):
        mid = mailroom.enqueue(app, "u1@example.com", subject="s", text="t")
        delivered(owner, "k1", "p-1", "u1@example.com")
        owner.execute(EVENT, ["k2", "p-old", "x@example.com", "Bounce", "Permanent/General", ""])
        owner.execute("UPDATE mailroom.events SET occurred_at = now() - interval '2 days'"
                      " WHERE event_key = 'k2'")  # fmt: skip
        migrate.migrate(owner, channel="token_insert")
        assert waiting(owner) == ["p-1"]  # the last day's only
        send(owner, {mid: "p-1"})
        assert states(app) == [(mid, "sent"), (mid, "delivered")]
        assert waiting(owner) == []
