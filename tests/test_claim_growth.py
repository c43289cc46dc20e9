"""Defaults that fill the pipe: under a backlog, claims grow past MAILROOM_BATCH_LIMIT to
what the free SES call slots carry; a lone message is still claimed alone and sent at once.

Real daemon processes, a real PostgreSQL, the SES stand-in over HTTP with a per-call
delay. Behaviour, not speed: what the calls carried, what was leased, what was claimed.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mailroom
from conftest import all_final, statuses, wait_for
from mailroom.batcher import claim_size, lease_cap
from mailroom.config import Config
from mailroom.transports import BULK_MAX_ENTRIES
from sesv2_standin import SesStandin

DEFAULT_LIMIT = Config(database_url="").batch_limit
DEFAULT_CONCURRENCY = Config(database_url="").ses_concurrency

# -- pure logic -------------------------------------------------------------------------


def test_a_claim_that_is_not_backlogged_is_the_seed_batch() -> None:
    assert claim_size(10, backlogged=False, free_calls=32, simple_share=0.0, room=10_000) == 10


def test_a_backlogged_claim_fills_the_free_calls_with_full_bulk_calls() -> None:
    assert claim_size(10, backlogged=True, free_calls=7, simple_share=0.0, room=10_000) == 350


def test_simple_messages_are_one_call_each_so_the_claim_stays_small() -> None:
    assert claim_size(10, backlogged=True, free_calls=7, simple_share=1.0, room=10_000) == 10
    assert claim_size(10, backlogged=True, free_calls=30, simple_share=1.0, room=10_000) == 30
    # half simple: 0.5 + 0.5 / 50 calls per message
    assert claim_size(10, backlogged=True, free_calls=51, simple_share=0.5, room=10_000) == 100


def test_no_free_call_means_the_seed_batch_and_no_room_means_nothing() -> None:
    assert claim_size(10, backlogged=True, free_calls=0, simple_share=0.0, room=10_000) == 10
    assert claim_size(10, backlogged=True, free_calls=8, simple_share=0.0, room=0) == 0
    assert claim_size(10, backlogged=True, free_calls=8, simple_share=0.0, room=-5) == 0


@given(
    limit=st.integers(1, 10_000),
    concurrency=st.integers(1, 256),
    backlogged=st.booleans(),
    share=st.floats(-1.0, 2.0, allow_nan=False),
    busy=st.integers(0, 512),
    leased=st.integers(0, 3_000_000),
)
def test_a_claim_never_leases_past_the_cap_nor_below_the_batch_without_reason(  # noqa: PLR0917 -- hypothesis passes each drawn value as an argument
    limit: int, concurrency: int, backlogged: bool, share: float, busy: int, leased: int
) -> None:
    cap = lease_cap(limit, concurrency)
    free = max(0, 2 * concurrency - busy)
    size = claim_size(limit, backlogged=backlogged, free_calls=free, simple_share=share,
                      room=cap - leased)  # fmt: skip
    assert 0 <= size <= max(0, cap - leased)
    if leased + limit <= cap:
        assert size >= limit  # MAILROOM_BATCH_LIMIT stays the floor
    if not backlogged:
        assert size <= limit
    # never more than the free calls can carry when every message rides a full bulk call
    assert size <= max(limit, free * BULK_MAX_ENTRIES)


def test_the_lease_cap_keeps_the_seed_bound_and_covers_full_bulk_calls() -> None:
    assert lease_cap(10, 16) == 16 * 100
    assert lease_cap(500, 16) == 16 * 500  # concurrency x batch limit, as before


# -- the daemon -------------------------------------------------------------------------


def _batches(daemon: Any) -> list[int]:
    return [e["messages"] for e in daemon.events() if e["event"] == "batch_done"]


def _fill_templated(conn: psycopg.Connection[Any], n: int) -> None:
    with conn.transaction():  # one commit, one NOTIFY: a backlog, as after an outage
        conn.execute(
            "INSERT INTO mailroom.outbox (to_addresses, template, template_data)"
            " SELECT ARRAY['user' || g || '@example.com'], 'activationv1',"
            " jsonb_build_object('n', g) FROM generate_series(1, %s) AS g",
            (n,),
        )


@pytest.mark.slow
def test_with_defaults_a_backlog_rides_bulk_calls_bigger_than_the_batch_limit(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.latency = 0.05
    daemon = spawn(MAILROOM_BATCH_TIMEOUT="5000")  # the seed's default: nothing tuned
    daemon.wait_listening()
    n = 3000
    _fill_templated(conn, n)
    wait_for(lambda: all_final(conn, n), timeout=60)
    assert statuses(conn) == {"sent": n}
    calls = standin.calls()
    assert calls.get("SendEmail", 0) == 0
    bulk = calls["SendBulkEmail"]
    # 10-message batches would need 300 calls; claims that fill the call slots carry up
    # to 50 entries per call
    assert bulk < n / DEFAULT_LIMIT / 2, calls
    batches = _batches(daemon)
    assert batches[0] == DEFAULT_LIMIT  # the wake-up claims the seed's batch first
    assert max(batches) > DEFAULT_LIMIT
    assert max(batches) <= lease_cap(DEFAULT_LIMIT, DEFAULT_CONCURRENCY)
    assert sum(batches) == n
    sends = [r["template_data"]["n"] for r in standin.sent()]
    assert len(sends) == len(set(sends)) == n  # nothing sent twice


@pytest.mark.slow
def test_leased_messages_never_exceed_the_cap_under_a_backlog(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    # 2 slots, batch limit 5: the cap is 2 x max(5, 100) = 200 leased at most, while
    # claims of full bulk calls would otherwise keep growing with the 2,000 waiting.
    standin.latency = 0.05
    _fill_templated(conn, 2000)
    spawn(MAILROOM_BATCH_LIMIT="5", MAILROOM_SES_CONCURRENCY="2")
    cap = lease_cap(5, 2)
    leased: list[int] = []

    def done() -> bool:
        counts = statuses(conn)
        leased.append(counts.get("sending", 0))
        return counts.get("sent", 0) == 2000

    wait_for(done, timeout=90, interval=0.02)
    assert max(leased) <= cap
    assert max(leased) > 5 * 2  # claims did grow past the seed's concurrency x batch


@pytest.mark.slow
def test_a_lone_message_after_a_backlog_is_claimed_alone_and_not_held(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.latency = 0.05
    # a 30 s batch timeout: a message held for it would fail the wait below
    daemon = spawn(MAILROOM_BATCH_TIMEOUT="30000")
    daemon.wait_listening()
    _fill_templated(conn, 500)
    wait_for(lambda: all_final(conn, 500), timeout=60)
    wait_for(lambda: sum(_batches(daemon)) == 500)
    before = len(_batches(daemon))
    standin.latency = 0.0
    mailroom.enqueue(conn, "reset@example.com", subject="Reset", text="link")
    wait_for(lambda: all_final(conn, 501), timeout=10)
    wait_for(lambda: len(_batches(daemon)) > before)
    assert _batches(daemon)[before:] == [1]
    assert standin.calls().get("SendEmail") == 1


@pytest.mark.slow
def test_claims_of_simple_messages_do_not_queue_a_call_per_bulk_slot(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    # one SendEmail per simple message: a claim sized for full bulk calls (16 x 50) would
    # lease hundreds of messages behind 4 slots; the daemon sizes it by calls instead.
    standin.latency = 0.05
    with conn.transaction():
        for n in range(300):
            mailroom.enqueue(conn, f"u{n}@example.com", subject="s", text=f"m{n}")
    spawn(MAILROOM_SES_CONCURRENCY="4")
    leased: list[int] = []

    def done() -> bool:
        counts = statuses(conn)
        leased.append(counts.get("sending", 0))
        return counts.get("sent", 0) == 300

    wait_for(done, timeout=60, interval=0.02)
    # batches of max(10, free calls <= 8), at most 4 in flight: a few dozen, not hundreds
    assert max(leased) <= 4 * 10 + 2 * 4
    assert max(leased) >= 10
