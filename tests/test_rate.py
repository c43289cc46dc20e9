"""The send-rate budget shared by all replicas through PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import mailroom
from conftest import all_final, wait_for
from sesv2_standin import SesStandin


def _reserve(conn: psycopg.Connection[Any], rate: float, burst: float, wanted: float) -> float:
    row = conn.execute(
        "SELECT mailroom.reserve_rate('test', %s, %s, %s)", [rate, burst, wanted]
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_bucket_spaces_reservations_after_the_burst(conn: psycopg.Connection[Any]) -> None:
    waits = [_reserve(conn, 10.0, 5.0, 1) for _ in range(8)]
    assert waits[:5] == [0.0] * 5  # the burst goes at once
    # then one every 1/rate seconds, queued behind each other (allow the refill that
    # happens while these statements run)
    for n, wait in enumerate(waits[5:], start=1):
        assert wait == pytest.approx(n / 10.0, abs=0.05)
    # a refund gives a reservation back
    before = _reserve(conn, 10.0, 5.0, 0)
    _reserve(conn, 10.0, 5.0, -3)
    assert _reserve(conn, 10.0, 5.0, 0) == pytest.approx(max(before - 0.3, 0), abs=0.05)


def test_two_daemons_share_one_send_rate(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    rate, burst, count = 20, 5, 60
    settings = {
        "MAILROOM_SEND_RATE": str(rate), "MAILROOM_SEND_BURST": str(burst),
        "MAILROOM_BATCH_LIMIT": "4", "MAILROOM_SES_CONCURRENCY": "4",
    }  # fmt: skip
    first, second = spawn(**settings), spawn(**settings)
    first.wait_listening()
    second.wait_listening()
    with conn.transaction():
        for n in range(count):
            mailroom.enqueue(conn, f"u{n}@example.com", subject=f"s{n}", text="x")
    wait_for(lambda: all_final(conn, count), timeout=60)
    times = sorted(r["received_at"] for r in standin.sent())
    assert len(times) == count
    # however the two replicas interleave, no one-second window holds more than the
    # budget allows (rate x 1 s + burst; +2 for the call's own jitter)
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= rate + burst + 2, (i, in_window)
    assert times[-1] - times[0] >= (count - burst) / rate - 0.25
