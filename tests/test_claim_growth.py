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
from mailroom.config.settings import Config
from mailroom.daemon.batcher import claim_size, lease_cap
from mailroom.transports import BULK_MAX_ENTRIES
from sesv2_standin import SesStandin

DEFAULT_LIMIT = Config(database_url="").batch_limit
DEFAULT_CONCURRENCY = Config(database_url="").ses_concurrency

# -- pure logic -------------------------------------------------------------------------


def _size(*, backlogged: bool = True, free: int = 32, share: float = 0.0, room: int = 10_000,
           limit: int = 10, want: int = 8) -> int:  # fmt: skip
    return claim_size(limit, backlogged=backlogged, free_calls=free, want_calls=want,
                      simple_share=share, room=room)  # fmt: skip


def test_a_claim_that_is_not_backlogged_is_the_seed_batch() -> None:
    assert _size(backlogged=False, free=32) == 10
    assert _size(backlogged=False, free=0) == 10  # a wake-up does not wait for free calls
    assert _size(backlogged=False, room=4) == 4


def test_a_backlogged_claim_fills_half_the_slots_with_full_bulk_calls() -> None:
    assert _size(free=32, want=8) == 8 * 50
    assert _size(free=8, want=8) == 8 * 50


def test_a_backlogged_bulk_claim_waits_for_half_the_slots_rather_than_claim_per_call() -> None:
    assert _size(free=7, want=8) == 0
    assert _size(free=0, want=8) == 0
    # but when the lease cap allows no more than the free calls carry, take that
    assert _size(free=2, want=8, room=60) == 60


def test_simple_messages_are_one_call_each_so_the_claim_stays_the_seed_batch() -> None:
    assert _size(free=7, share=1.0) == 10
    assert _size(free=1, share=1.0) == 10  # no wait: the batch limit is the size anyway
    assert _size(free=30, want=30, share=1.0) == 30
    assert _size(free=30, want=30, share=1.0, limit=500) == 500
    # half simple: 0.5 + 0.5 / 50 calls per message
    assert _size(free=51, want=51, share=0.5) == 100


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
    want = max(1, concurrency // 2)
    size = _size(backlogged=backlogged, free=free, want=want, share=share, room=cap - leased,
                 limit=limit)  # fmt: skip
    assert 0 <= size <= max(0, cap - leased)
    if not backlogged:
        assert size == max(0, min(limit, cap - leased))
    elif size:
        assert size >= min(limit, cap - leased)  # MAILROOM_BATCH_LIMIT stays the floor
        # never more than the wanted calls can carry when every message rides a full call
        assert size <= max(limit, want * BULK_MAX_ENTRIES)
    if backlogged and free >= want and leased < cap:
        assert size > 0  # enough free calls: never waits


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
    # a batch's batch_done line is written after its record commits: wait for the last
    wait_for(lambda: sum(_batches(daemon)) >= n, timeout=10)
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
