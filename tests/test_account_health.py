"""SES account health: a missing configuration set or sender identity pauses instead of
dead-lettering (precisely: a message's own problem still dead-letters), the shared rate's
AIMD back-off across replicas, and MAILROOM_SEND_RATE=auto pausing before the day's quota.
Real PostgreSQL, the daemon as a process, SES over real HTTP (the stand-in)."""

from __future__ import annotations

import math
import time
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import all_final, statuses, wait_for
from mailroom.config import settings as config
from mailroom.daemon import account
from mailroom.outbox import Message
from mailroom.transports import Defaults, Result
from mailroom.transports.classify import Verdict

DEFAULTS = Defaults(source="noreply@example.com", config_set="default")
NOT_VERIFIED = (
    "Email address is not verified. The following identities failed the check in region "
    "US-EAST-1: {}"
)


def _message(**fields: Any) -> Message:
    base: dict[str, Any] = dict.fromkeys(Message._fields)
    base.update(id=1, attempts=1, max_attempts=10, to=["ann@example.org"], cc=[], bcc=[],
                reply_to=[], created_at=0.0)  # fmt: skip
    base.update(fields)
    return Message(**base)


def _dead(code: str, detail: str = "") -> Result:
    return Result(Verdict.DEAD, code=code, detail=detail, whole_call=True)


# ---------------------------------------------------------------- the pure decision


def test_a_missing_default_configuration_set_is_the_accounts_problem() -> None:
    m = _message()
    for result in (
        _dead("NotFoundException", "Configuration set <default> does not exist."),
        _dead("BadRequestException", "Configuration set <default> does not exist."),
        _dead("ConfigurationSetDoesNotExist", "Configuration set <default> does not exist."),
        Result(Verdict.DEAD, code="CONFIGURATION_SET_NOT_FOUND"),
    ):
        assert account.problem(result, m, DEFAULTS) == account.CONFIG_SET_MISSING
    # a message that names its own (missing) set: that message's problem
    own = _message(config_set="campaign-x")
    gone = _dead("NotFoundException", "Configuration set <campaign-x> does not exist.")
    assert account.problem(gone, own, DEFAULTS) is None
    # a missing template is the message's, however it is worded
    missing = _dead("NotFoundException", "Template activationv9 does not exist.")
    assert account.problem(missing, m, DEFAULTS) is None


def test_an_unverified_sender_is_the_accounts_problem_an_unverified_recipient_is_not() -> None:
    m = _message()
    sender = _dead("MessageRejected", NOT_VERIFIED.format("noreply@example.com"))
    assert account.problem(sender, m, DEFAULTS) == account.SENDER_NOT_VERIFIED
    domain = _dead("MessageRejected", NOT_VERIFIED.format("example.com"))
    assert account.problem(domain, m, DEFAULTS) == account.SENDER_NOT_VERIFIED
    # the sandbox: the recipient is the unverified identity
    recipient = _dead("MessageRejected", NOT_VERIFIED.format("Ann@Example.org"))
    assert account.problem(recipient, m, DEFAULTS) is None
    # no identity named: nothing shows it is the sender
    vague = _dead("MessageRejected", "Email address is not verified.")
    assert account.problem(vague, m, DEFAULTS) is None
    # other rejections are the message's
    assert account.problem(_dead("MessageRejected", "Illegal address"), m, DEFAULTS) is None
    # a message with its own From: its own problem
    own = _message(from_address="Other@elsewhere.example")
    other = _dead("MessageRejected", NOT_VERIFIED.format("other@elsewhere.example"))
    assert account.problem(other, own, DEFAULTS) is None
    same = _message(from_address="NoReply@example.com")
    assert account.problem(sender, same, DEFAULTS) == account.SENDER_NOT_VERIFIED
    mail_from = Result(Verdict.DEAD, code="MAIL_FROM_DOMAIN_NOT_VERIFIED")
    assert account.problem(mail_from, m, DEFAULTS) == account.SENDER_NOT_VERIFIED
    assert account.problem(mail_from, own, DEFAULTS) is None


def test_throttling_is_recognised_and_the_daily_quota_is_not_a_throttle() -> None:
    assert account.throttled([Result(Verdict.RETRY, code="ACCOUNT_THROTTLED")])
    assert account.throttled([_dead("TooManyRequestsException", "Maximum sending rate")])
    assert not account.throttled([_dead("Throttling", "Daily message quota exceeded.")])
    assert not account.throttled([Result(Verdict.SENT)])


def test_send_rate_auto_and_margin_configuration() -> None:
    env = {"MAILROOM_DATABASE_URL": "postgresql:///x"}
    cfg = config.load({**env, "MAILROOM_SEND_RATE": "auto", "MAILROOM_SEND_QUOTA_MARGIN": "10"})
    assert cfg.send_rate_auto
    assert cfg.send_quota_margin == pytest.approx(0.1)
    assert dict(config.describe(cfg))["MAILROOM_SEND_RATE"] == "auto"
    assert not config.load({**env, "MAILROOM_SEND_RATE": "14"}).send_rate_auto
    bad = {**env, "MAILROOM_SEND_RATE": "fast", "MAILROOM_SEND_QUOTA_MARGIN": "80",
           "MAILROOM_ACCOUNT_POLL_INTERVAL": "5s"}  # fmt: skip
    with pytest.raises(config.ConfigError) as caught:
        config.load(bad)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "MAILROOM_SEND_RATE", "MAILROOM_SEND_QUOTA_MARGIN", "MAILROOM_ACCOUNT_POLL_INTERVAL",
    ]  # fmt: skip
    assert "auto" in caught.value.problems[0]


# ---------------------------------------------------------------- the shared rate in SQL


def _reserve(conn: psycopg.Connection[Any], wanted: float, *, rate: float = 10.0,
             auto: bool = True, margin: float = 0.05) -> float:  # fmt: skip
    row = conn.execute(
        "SELECT mailroom.reserve_send('ses', %s, 0, %s, %s, %s, %s)",
        (rate, wanted, auto, margin, account.RECOVERY),
    ).fetchone()
    assert row is not None
    return float(row[0])


def _throttled(conn: psycopg.Connection[Any]) -> float | None:
    row = conn.execute(
        "SELECT mailroom.rate_throttled('ses', %s, %s, %s, %s)",
        (account.DECREASE, account.FLOOR, account.RECOVERY, account.COOLDOWN),
    ).fetchone()
    assert row is not None
    return None if row[0] is None else float(row[0])


def test_the_day_quota_stops_reservations_before_it_is_reached(
    login_as: Any,
) -> None:
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        daemon.execute("SELECT mailroom.rate_quota('ses', 100, 100, 90)")
        assert _reserve(daemon, 4) == 0.0  # 94 of 95 allowed (5 % margin)
        assert math.isinf(_reserve(daemon, 2))  # 96 > 95: nothing reserved, pause
        assert _reserve(daemon, 1) == 0.0  # exactly 95
        assert math.isinf(_reserve(daemon, 1))
        # a fixed rate ignores the SES day quota (only auto follows the account)
        assert not math.isinf(_reserve(daemon, 1, auto=False))
        # a new read of SentLast24Hours replaces the count kept since the last one
        daemon.execute("SELECT mailroom.rate_quota('ses', 100, 100, 10)")
        assert not math.isinf(_reserve(daemon, 50))
        # Max24HourSend of -1 (unlimited) never pauses
        daemon.execute("SELECT mailroom.rate_quota('ses', 100, -1, 10)")
        assert not math.isinf(_reserve(daemon, 10_000))


def test_the_auto_rate_follows_the_quota_and_spaces_reservations(login_as: Any) -> None:
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        daemon.execute("SELECT mailroom.rate_quota('ses', 2, 0, 0)")
        assert _reserve(daemon, 2) == 0.0  # the burst: one second's worth
        assert _reserve(daemon, 2) == pytest.approx(1.0, abs=0.05)  # 2 more at 2/s
        daemon.execute("SELECT mailroom.rate_quota('ses', 20, 0, 0)")
        wait = _reserve(daemon, 20)  # at 20/s the debt of the last reservation goes faster
        assert wait < 1.2


def test_aimd_one_cut_per_cooldown_across_replicas_then_additive_recovery(
    login_as: Any,
) -> None:
    first = psycopg.connect(login_as("mailroom_daemon"), autocommit=True)
    second = psycopg.connect(login_as("mailroom_daemon"), autocommit=True)
    with first, second:
        first.execute("SELECT mailroom.rate_quota('ses', 100, 0, 0)")
        assert _throttled(first) == pytest.approx(0.5)
        assert _throttled(second) is None  # the same burst, another replica: no second cut
        state = "SELECT mailroom.rate_factor(factor, cut_at, %s) FROM mailroom.rate_buckets"
        row = second.execute(state, (account.RECOVERY,)).fetchone()
        assert row is not None
        assert 0.5 <= row[0] < 0.55
        # the rate in force is halved: 100 recipients now take about 2 s, not 1
        _reserve(first, 0)
        assert _reserve(first, 100) > 1.5
        # after the cool-down a new throttle cuts again, from the recovered factor
        second.execute("UPDATE mailroom.rate_buckets SET cut_at = cut_at - interval '10 seconds'")
        cut = _throttled(second)
        assert cut is not None
        assert cut == pytest.approx((0.5 + 10 * account.RECOVERY) * 0.5, abs=0.01)
        # recovery is additive and stops at 1
        second.execute("UPDATE mailroom.rate_buckets SET cut_at = now() - interval '1 hour'")
        row = first.execute(state, (account.RECOVERY,)).fetchone()
        assert row == (1.0,)
        # repeated throttling, each after the cool-down: down to the floor, never below
        for _ in range(20):
            _throttled(first)
            first.execute("UPDATE mailroom.rate_buckets SET cut_at = now() - interval '3 s'")
        row = first.execute("SELECT factor FROM mailroom.rate_buckets").fetchone()
        assert row is not None
        assert row[0] == pytest.approx(account.FLOOR)  # never below the floor


def test_the_application_role_cannot_touch_the_shared_rate(login_as: Any) -> None:
    with psycopg.connect(login_as("mailroom_app"), autocommit=True) as app:
        for statement in (
            "SELECT mailroom.rate_throttled('ses', 0.5, 0.05, 0.01, 2)",
            "SELECT mailroom.rate_quota('ses', 1, 1, 1)",
            "SELECT mailroom.reserve_send('ses', 1, 1, 1, true, 0.05, 0.01)",
            "SELECT * FROM mailroom.recipient_sends",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)


# ---------------------------------------------------------------- the daemon


def _enqueue(conn: psycopg.Connection[Any], n: int, **fields: Any) -> list[int]:
    return [
        mailroom.enqueue(conn, f"user{i}@example.org", subject="s", text="t", **fields)
        for i in range(n)
    ]


def test_a_missing_configuration_set_pauses_and_loses_no_attempt(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    standin.config_sets = {}  # "default" does not exist
    ids = _enqueue(conn, 5)
    own = mailroom.enqueue(conn, "x@example.org", subject="s", text="t", config_set="mine")
    bulk = [mailroom.enqueue(conn, f"b{i}@example.org", template="activationv1",
                             data={"login": "b"}) for i in range(3)]  # fmt: skip
    daemon = spawn()
    wait_for(lambda: any(e.get("event") == "account_problem" for e in daemon.events()))
    # the message that named its own missing set is dead; the others wait
    wait_for(lambda: statuses(conn).get("dead") == 1)
    row = conn.execute("SELECT status, last_error FROM mailroom.outbox WHERE id = %s", (own,))
    status, error = row.fetchone() or ("", "")
    assert status == "dead"
    assert "Configuration set <mine> does not exist" in error
    time.sleep(2.5)  # a pause (1 s in tests) and another try
    rows = conn.execute(
        "SELECT status, attempts FROM mailroom.outbox WHERE id = ANY(%s)", (ids + bulk,)
    ).fetchall()
    assert {s for s, _ in rows} <= {"pending", "retrying", "sending"}
    assert {a for _, a in rows} <= {0, 1}  # refunded: no attempt burnt by the pauses
    problem = next(e for e in daemon.events() if e.get("event") == "account_problem")
    assert problem["problem"] == account.CONFIG_SET_MISSING
    assert any(e.get("event") == "sending_paused" for e in daemon.events())
    assert not any(e.get("event") == "bulk_call_split" for e in daemon.events())
    # the start-up preflight said so too, as a warning, and the daemon kept running
    wait_for(lambda: any(e.get("event") == "preflight" for e in daemon.events()))
    said = {e["check"]: e["status"] for e in daemon.events() if e.get("event") == "preflight"}
    assert said["configuration_set"] == "fail"

    standin.config_sets = {"default": []}  # the operator creates it
    wait_for(lambda: all_final(conn, 9), timeout=30)
    assert statuses(conn) == {"sent": 8, "dead": 1}
    wait_for(lambda: any(e.get("event") == "account_problem_cleared" for e in daemon.events()))


def test_an_unverified_sender_pauses_an_unverified_recipient_or_own_from_dead_letters(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    standin.identities = {"example.net": True, "ok@example.org": True}
    standin.production = False  # the sandbox: recipients must be verified too
    good = mailroom.enqueue(conn, "ok@example.org", subject="s", text="t")
    stranger = mailroom.enqueue(conn, "stranger@example.org", subject="s", text="t")
    own_from = mailroom.enqueue(conn, "ok@example.org", subject="s", text="t",
                                from_address="me@unverified.example")  # fmt: skip
    daemon = spawn(MAILROOM_SES_SOURCE="noreply@example.com")  # example.com: not verified
    wait_for(lambda: any(e.get("event") == "account_problem" for e in daemon.events()))
    wait_for(lambda: statuses(conn).get("dead") == 1)
    assert conn.execute(
        "SELECT status FROM mailroom.outbox WHERE id = %s", (own_from,)
    ).fetchone() == ("dead",)
    problem = next(e for e in daemon.events() if e.get("event") == "account_problem")
    assert problem["problem"] == account.SENDER_NOT_VERIFIED

    standin.identities["example.com"] = True  # the operator verifies the domain
    wait_for(lambda: all_final(conn, 3), timeout=30)
    rows = dict(conn.execute("SELECT id, status FROM mailroom.outbox").fetchall())
    assert rows == {good: "sent", stranger: "dead", own_from: "dead"}
    error = conn.execute("SELECT last_error FROM mailroom.outbox WHERE id = %s", (stranger,))
    assert "stranger@example.org" in (error.fetchone() or ("",))[0]


def test_auto_rate_pauses_before_the_daily_quota_and_burns_no_attempt(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    standin.max_24h_send, standin.sent_offset = 100.0, 92.0  # 95 allowed with a 5 % margin
    _enqueue(conn, 6)
    daemon = spawn(MAILROOM_SEND_RATE="auto", MAILROOM_BATCH_LIMIT="1")
    wait_for(lambda: statuses(conn).get("sent") == 3)
    wait_for(lambda: any(e.get("event") == "sending_paused" for e in daemon.events()))
    time.sleep(1.5)
    assert statuses(conn).get("sent") == 3
    assert len(standin.sent()) == 3
    rows = conn.execute("SELECT status, attempts FROM mailroom.outbox WHERE status <> 'sent'")
    assert {(s, a) for s, a in rows.fetchall()} == {("pending", 0)}
    quota = next(e for e in daemon.events() if e.get("event") == "send_quota")
    assert quota["max_24_hour_send"] == 100.0
    paused = next(e for e in daemon.events() if e.get("event") == "sending_paused")
    assert paused["code"] == "DailyQuotaMargin"
    row = conn.execute("SELECT quota_rate, day_quota FROM mailroom.rate_buckets").fetchone()
    assert row == (14.0, 100.0)
    assert standin.calls().get("GetAccount", 0) >= 1


def test_throttling_cuts_the_shared_rate(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    standin.inject("throttle", 3)
    _enqueue(conn, 4)
    daemon = spawn(MAILROOM_SEND_RATE="50")
    wait_for(lambda: all_final(conn, 4), timeout=30)
    assert statuses(conn) == {"sent": 4}
    backoffs = [e for e in daemon.events() if e.get("event") == "send_rate_backoff"]
    assert backoffs
    assert backoffs[0]["factor"] == 0.5
    row = conn.execute("SELECT factor, cut_at IS NOT NULL FROM mailroom.rate_buckets")
    factor, cut = row.fetchone() or (1.0, False)
    assert cut
    assert factor < 1.0
