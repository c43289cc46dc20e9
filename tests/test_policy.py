"""The pure decision modules: classification, retry policy, batching, call planning and
configuration. No I/O."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from mailroom.config import settings as config
from mailroom.config import variables
from mailroom.daemon.batcher import Batcher
from mailroom.daemon.retry import Policy, dispose, released
from mailroom.daemon.sender import plan
from mailroom.outbox import Message
from mailroom.transports.classify import ENTRY_STATUS, Verdict, classify_entry, classify_error

# -- classify ---------------------------------------------------------------------------

# SPEC section 3.5, spelled out independently of classify.ENTRY_STATUS.
SPEC_ENTRY_VERDICTS = {
    "SUCCESS": Verdict.SENT,
    "MESSAGE_REJECTED": Verdict.DEAD,
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": Verdict.DEAD,
    "TEMPLATE_NOT_FOUND": Verdict.DEAD,
    "TEMPLATE_DOES_NOT_EXIST": Verdict.DEAD,
    "INVALID_PARAMETER": Verdict.DEAD,
    "ACCOUNT_THROTTLED": Verdict.RETRY,
    "TRANSIENT_FAILURE": Verdict.RETRY,
    "ACCOUNT_SUSPENDED": Verdict.PAUSE,
    "ACCOUNT_SENDING_PAUSED": Verdict.PAUSE,
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": Verdict.PAUSE,
}


@pytest.mark.parametrize(("status", "verdict"), sorted(SPEC_ENTRY_VERDICTS.items()))
def test_entry_status_verdicts_follow_the_spec(status: str, verdict: Verdict) -> None:
    assert status in ENTRY_STATUS
    assert classify_entry(status) is verdict


def test_every_listed_entry_status_has_a_sensible_verdict() -> None:
    for status, verdict in ENTRY_STATUS.items():
        assert classify_entry(status) is verdict
        if status in SPEC_ENTRY_VERDICTS:
            assert verdict is SPEC_ENTRY_VERDICTS[status], status
        # only SUCCESS means sent; nothing else may be mistaken for a success
        assert (verdict is Verdict.SENT) == (status == "SUCCESS"), status
    # configuration-set problems are not the account's fault: they must not burn attempts
    assert classify_entry("CONFIGURATION_SET_SENDING_PAUSED") in (Verdict.DEFER, Verdict.PAUSE)


@pytest.mark.parametrize("status", ["", "SOMETHING_NEW", "success", "Success"])
def test_unknown_entry_status_retries(status: str) -> None:
    assert classify_entry(status) is Verdict.RETRY


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("TooManyRequestsException", Verdict.RETRY),
        ("LimitExceededException", Verdict.RETRY),
        ("InternalFailure", Verdict.RETRY),
        ("NetworkError", Verdict.RETRY),
        ("SendingPausedException", Verdict.PAUSE),
        ("AccountSuspendedException", Verdict.PAUSE),
        ("AccessDeniedException", Verdict.PAUSE),
        ("MessageRejected", Verdict.DEAD),
        ("MailFromDomainNotVerifiedException", Verdict.DEAD),
        ("BadRequestException", Verdict.DEAD),
        ("NotFoundException", Verdict.DEAD),
        ("SomeBrandNewException", Verdict.RETRY),
        ("", Verdict.RETRY),
    ],
)
def test_call_level_error_codes(code: str, verdict: Verdict) -> None:
    assert classify_error(code, "whatever the provider said") is verdict


def test_daily_quota_throttling_pauses_but_rate_throttling_retries() -> None:
    assert classify_error("Throttling", "Daily message quota exceeded") is Verdict.PAUSE
    assert classify_error("Throttling", "Maximum sending rate exceeded") is Verdict.RETRY
    assert classify_error("Throttling") is Verdict.RETRY


# -- retry policy -----------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 11, 12, 13, 20])
def test_backoff_full_jitter_bounds(attempt: int) -> None:
    policy = Policy(base=2.0, cap=3600.0)
    ceiling = min(3600.0, 2.0 * 2 ** (attempt - 1))
    assert policy.backoff(attempt, rand=lambda: 1.0) == ceiling
    assert policy.backoff(attempt, rand=lambda: 0.0) == 0.0
    assert policy.backoff(attempt, rand=lambda: 0.5) == ceiling / 2


def test_backoff_doubles_until_the_cap() -> None:
    policy = Policy(base=0.5, cap=10.0)
    top = [policy.backoff(n, rand=lambda: 1.0) for n in range(1, 8)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("attempt", [63, 64, 100, 1000, 10**9])
def test_backoff_is_capped_for_huge_attempts(attempt: int) -> None:
    policy = Policy(base=2.0, cap=3600.0)
    value = policy.backoff(attempt, rand=lambda: 1.0)
    assert value == 3600.0
    assert math.isfinite(value)


def test_backoff_with_default_randomness_stays_in_range() -> None:
    policy = Policy(base=1.0, cap=5.0)
    for attempt in range(1, 12):
        ceiling = min(5.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert 0.0 <= policy.backoff(attempt) <= ceiling


def test_dispose_retry_below_max_backs_off() -> None:
    policy = Policy(base=2.0, cap=3600.0)
    d = dispose(Verdict.RETRY, 3, 10, policy, error="TooManyRequests", rand=lambda: 1.0)
    assert d.status == "retrying"
    assert d.delay == 8.0
    assert d.refund == 0
    assert d.attempt_outcome == "retry"
    assert d.error == "TooManyRequests"


def test_dispose_retry_at_max_gives_up() -> None:
    d = dispose(Verdict.RETRY, 5, 5, Policy(), error="InternalFailure: boom")
    assert d.status == "dead"
    assert d.attempt_outcome == "dead"
    assert d.refund == 0
    assert d.error is not None
    assert "gave up after 5 attempts" in d.error
    assert "InternalFailure: boom" in d.error


def test_dispose_dead_is_final_at_once() -> None:
    d = dispose(Verdict.DEAD, 1, 10, Policy(), error="MessageRejected: bad")
    assert (d.status, d.attempt_outcome, d.refund) == ("dead", "dead", 0)
    assert d.error == "MessageRejected: bad"


@pytest.mark.parametrize("verdict", [Verdict.PAUSE, Verdict.DEFER])
def test_dispose_pause_and_defer_refund_the_attempt(verdict: Verdict) -> None:
    policy = Policy(pause=42.0)
    # even on the last allowed attempt: an account stop says nothing about the message
    for attempts in (1, 10):
        d = dispose(verdict, attempts, 10, policy, error="SendingPausedException")
        assert d.status == "retrying"
        assert d.refund == 1
        assert d.attempt_outcome == "paused"
        assert d.delay == 42.0


def test_dispose_sent_keeps_the_provider_id() -> None:
    d = dispose(Verdict.SENT, 10, 10, Policy(), provider_id="0100-abc")
    assert (d.status, d.provider_id, d.attempt_outcome, d.refund) == ("sent", "0100-abc", "sent", 0)


def test_released_refunds_and_logs_no_attempt() -> None:
    d = released()
    assert (d.status, d.refund, d.delay, d.attempt_outcome) == ("pending", 1, 0.0, None)


# -- batcher ----------------------------------------------------------------------------


def test_batcher_nothing_waiting_is_never_due() -> None:
    b = Batcher(limit=10, timeout=5.0)
    assert not b.due(0.0, in_flight=0)
    assert not b.due(1000.0, in_flight=3)
    assert b.deadline() is None


def test_batcher_idle_daemon_claims_at_once() -> None:
    b = Batcher(limit=10, timeout=5.0)
    b.notified(100.0)
    assert b.due(100.0, in_flight=0)


def test_batcher_busy_daemon_waits_for_limit_or_timeout() -> None:
    b = Batcher(limit=3, timeout=5.0)
    b.notified(100.0)
    assert not b.due(100.0, in_flight=1)
    b.notified(101.0)
    assert not b.due(104.9, in_flight=1)
    assert b.deadline() == 105.0  # from the first waiting notification, not the last
    b.notified(102.0)
    assert b.due(102.0, in_flight=1)  # limit reached


def test_batcher_busy_daemon_flushes_after_timeout() -> None:
    b = Batcher(limit=100, timeout=5.0)
    b.notified(100.0, count=4)
    assert b.waiting == 4
    assert not b.due(104.99, in_flight=2)
    assert b.due(105.0, in_flight=2)
    assert b.due(200.0, in_flight=2)


def test_batcher_flushed_resets() -> None:
    b = Batcher(limit=2, timeout=5.0)
    b.notified(100.0, count=5)
    b.flushed()
    assert b.waiting == 0
    assert b.deadline() is None
    assert not b.due(500.0, in_flight=0)
    b.notified(300.0)
    assert b.deadline() == 305.0
    assert not b.due(301.0, in_flight=1)


# -- sender.plan ------------------------------------------------------------------------

_next_id = iter(range(1, 1_000_000))


def message(**fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": next(_next_id),
        "attempts": 1,
        "max_attempts": 10,
        "from_address": None,
        "to": ["ann@example.com"],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "config_set": None,
        "template": None,
        "template_data": None,
        "subject": None,
        "body_text": None,
        "body_html": None,
        "raw_mime": None,
        "created_at": 0.0,
    }
    values.update(fields)
    return Message(**values)


def test_plan_splits_one_template_group_into_calls_of_at_most_50() -> None:
    batch = [message(template="welcome", template_data=f'{{"n": {n}}}') for n in range(120)]
    calls = plan(batch)
    assert [len(c.messages) for c in calls] == [50, 50, 20]
    assert all(c.bulk for c in calls)
    assert [m.id for c in calls for m in c.messages] == [m.id for m in batch]


def test_plan_groups_by_template_sender_config_set_and_reply_to() -> None:
    keys: list[dict[str, Any]] = [
        {"template": "welcome"},
        {"template": "reset"},
        {"template": "welcome", "from_address": "team@example.com"},
        {"template": "welcome", "config_set": "marketing"},
        {"template": "welcome", "reply_to": ["help@example.com"]},
    ]
    batch = [message(**key) for _ in range(3) for key in keys]
    simple = message(subject="Hi", body_text="Hello")
    raw = message(raw_mime=b"From: a@example.com\r\n\r\nhi")
    simple2 = message(subject="Hi", body_text="Hello")  # identical: still its own call
    calls = plan([*batch, simple, raw, simple2])

    bulk = [c for c in calls if c.bulk]
    single = [c for c in calls if not c.bulk]
    assert len(bulk) == len(keys)
    for call in bulk:
        assert len(call.messages) == 3
        first = call.messages[0]
        for m in call.messages:
            assert (m.template, m.from_address, m.config_set, m.reply_to) == (
                first.template,
                first.from_address,
                first.config_set,
                first.reply_to,
            )
    assert sorted(m.id for c in single for m in c.messages) == sorted(
        [simple.id, raw.id, simple2.id]
    )
    assert all(len(c.messages) == 1 for c in single)
    # every message is planned exactly once
    planned = [m.id for c in calls for m in c.messages]
    assert sorted(planned) == sorted(m.id for m in [*batch, simple, raw, simple2])


def test_plan_of_nothing_is_nothing() -> None:
    assert plan([]) == []


# -- config -----------------------------------------------------------------------------

DSN = "postgresql://mailroom:hunter2@db.internal:5432/app"
KEY = "ab" * 32


def test_config_defaults_match_the_seed() -> None:
    cfg = config.load({"MAILROOM_DATABASE_URL": DSN})
    assert cfg.database_url == DSN
    assert cfg.channel_name == "token_insert"
    assert cfg.queue_name == "user_action_queue"
    assert cfg.healthcheck_interval == 270.0
    assert cfg.batch_timeout == 5.0
    assert cfg.batch_limit == 10
    assert cfg.debug is False
    assert cfg.ses_config_set == "default"
    assert cfg.ses_source == "noreply@example.com"  # the seed's noreply@localhost: see settings
    assert cfg.ses_output_path == Path("./output")
    assert cfg.secret_keys == ()
    assert cfg.worker_name  # host:pid when unset


def test_config_parses_milliseconds_and_values() -> None:
    cfg = config.load(
        {
            "MAILROOM_DATABASE_URL": DSN,
            "MAILROOM_BATCH_TIMEOUT": "200",
            "MAILROOM_HEALTHCHECK_INTERVAL": "1500",
            "MAILROOM_LEASE_DURATION": "30000",
            "MAILROOM_BATCH_LIMIT": "25",
            "MAILROOM_DEBUG": "true",
            "MAILROOM_CHANNEL_NAME": "other_channel",
            "MAILROOM_WORKER_NAME": "w1",
            "MAILROOM_SECRET_KEY": f"{KEY}, {'cd' * 32}",
        }
    )
    assert cfg.batch_timeout == pytest.approx(0.2)
    assert cfg.healthcheck_interval == pytest.approx(1.5)
    assert cfg.lease == pytest.approx(30.0)
    assert cfg.batch_limit == 25
    assert cfg.debug is True
    assert cfg.channel_name == "other_channel"
    assert cfg.worker_name == "w1"
    assert cfg.secret_keys == (bytes.fromhex(KEY), bytes.fromhex("cd" * 32))


def test_config_reports_every_invalid_variable_at_once() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(
            {
                "MAILROOM_DATABASE_URL": DSN,
                "MAILROOM_BATCH_TIMEOUT": "soon",
                "MAILROOM_BATCH_LIMIT": "0",
                "MAILROOM_CHANNEL_NAME": "bad channel",
                "MAILROOM_LOG_LEVEL": "loud",
                "MAILROOM_DEBUG": "maybe",
            }
        )
    text = str(caught.value)
    for variable in (
        "MAILROOM_BATCH_TIMEOUT",
        "MAILROOM_BATCH_LIMIT",
        "MAILROOM_CHANNEL_NAME",
        "MAILROOM_LOG_LEVEL",
        "MAILROOM_DEBUG",
    ):
        assert variable in text
        assert any(p.startswith(variable) for p in caught.value.problems), variable
    assert len(caught.value.problems) == 5


PYTHON_WORDS = ("invalid literal", "base 10", "could not convert", "for int()", "for float()")


@pytest.mark.parametrize("bad", ["soon", "12.5", "", "1e3x", "-"])
def test_every_setting_answers_bad_text_in_the_users_words(bad: str) -> None:
    env = {s.variable: bad for s in variables.SETTINGS if s.variable != "MAILROOM_DATABASE_URL"}
    with pytest.raises(config.ConfigError) as caught:
        config.load({**env, "MAILROOM_DATABASE_URL": DSN})
    problems = caught.value.problems
    numeric = [p for p in problems if "number" in p or "TCP port" in p or "percentage" in p]
    assert len(numeric) >= 14  # every numeric setting refused this text, in words
    for problem in problems:
        assert "\n" not in problem
        assert not any(word in problem for word in PYTHON_WORDS), problem


def test_a_64_character_key_that_is_not_hex_is_called_that() -> None:
    key = "g" * 64
    with pytest.raises(config.ConfigError) as caught:
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY": f"{KEY},{key}"})
    (problem,) = caught.value.problems
    assert problem.startswith("MAILROOM_SECRET_KEY: key 2 is not hexadecimal")
    assert "got 64 characters" not in problem
    assert key not in problem  # a secret: never shown
    with pytest.raises(config.ConfigError, match="got 63 characters"):
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY": "a" * 63})


def test_config_requires_the_database_url() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({})
    assert any("MAILROOM_DATABASE_URL" in p for p in caught.value.problems)
    with pytest.raises(config.ConfigError, match="MAILROOM_DATABASE_URL"):
        config.load({"MAILROOM_DATABASE_URL": "   "})


def test_config_reads_file_variants(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(DSN + "\n", encoding="utf-8")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    cfg = config.load(
        {"MAILROOM_DATABASE_URL_FILE": str(url_file), "MAILROOM_SECRET_KEY_FILE": str(key_file)}
    )
    assert cfg.database_url == DSN
    assert cfg.secret_keys == (bytes.fromhex(KEY),)


def test_config_rejects_both_variable_and_file(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(DSN, encoding="utf-8")
    with pytest.raises(config.ConfigError) as caught:
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_DATABASE_URL_FILE": str(url_file)})
    text = str(caught.value)
    assert "MAILROOM_DATABASE_URL_FILE" in text
    assert "hunter2" not in text


def test_config_unreadable_file_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(config.ConfigError, match="MAILROOM_SECRET_KEY_FILE"):
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY_FILE": str(missing)})


@pytest.mark.parametrize(
    "key",
    [
        "deadbeef",  # too short
        "zz" * 32,  # right length, not hex
        KEY + "00",  # too long
        f"{KEY},not-a-key-at-all-but-secret",  # second key of a rotation
    ],
)
def test_bad_secret_key_is_never_echoed(key: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY": key})
    text = str(caught.value)
    assert "MAILROOM_SECRET_KEY" in text
    for part in key.split(","):
        assert part not in text
    assert repr(key) not in repr(caught.value)


def test_bad_secret_key_from_file_is_never_echoed(tmp_path: Path) -> None:
    not_a_key = "my-very-private-words"
    key_file = tmp_path / "key"
    key_file.write_text(not_a_key, encoding="utf-8")
    with pytest.raises(config.ConfigError) as caught:
        config.load({"MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY_FILE": str(key_file)})
    assert not_a_key not in str(caught.value)


@pytest.mark.parametrize(
    ("dsn", "secret", "kept"),
    [
        ("postgresql://mailroom:hunter2@db.internal:5432/app", "hunter2", "db.internal:5432/app"),
        ("postgres://u:p%40ss:w0rd@h/db?sslmode=require", "w0rd", "sslmode=require"),
        ("host=db user=mailroom password=secret dbname=app", "secret", "dbname=app"),
        ("host=db password='a b' dbname=app", "a b", "dbname=app"),
        ("host=db password = 'it\\'s s3cr3t' dbname=app", "s3cr3t", "dbname=app"),
        ("postgresql://db/app?user=u&password=secret", "secret", "postgresql://db/app"),
    ],
)
def test_redact_dsn_hides_passwords(dsn: str, secret: str, kept: str) -> None:
    redacted = config.redact_dsn(dsn)
    assert secret not in redacted
    assert "***" in redacted
    assert kept in redacted


def test_redact_dsn_leaves_passwordless_dsns_alone() -> None:
    for dsn in ("postgresql://mailroom@db/app", "host=db dbname=app", "postgresql:///app"):
        assert config.redact_dsn(dsn) == dsn


def test_describe_never_shows_password_or_key() -> None:
    cfg = config.load(
        {
            "MAILROOM_DATABASE_URL": DSN,
            "MAILROOM_SECRET_KEY": KEY,
            "MAILROOM_BATCH_TIMEOUT": "200",
        }
    )
    rows = dict(config.describe(cfg))
    assert set(rows) == {s.variable for s in variables.SETTINGS}
    everything = repr(config.describe(cfg)) + repr(cfg)
    assert "hunter2" not in everything
    assert KEY not in everything
    assert "db.internal" in rows["MAILROOM_DATABASE_URL"]
    assert rows["MAILROOM_SECRET_KEY"].startswith("(set: 1 ")
    assert rows["MAILROOM_BATCH_TIMEOUT"] == "200"
    assert rows["MAILROOM_CHANNEL_NAME"] == "token_insert"
