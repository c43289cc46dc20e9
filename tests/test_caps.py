"""Per-recipient caps: the pure decision, the configuration, and a daemon over real HTTP
and a real PostgreSQL (a password-reset button pressed 50 times sends a handful)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mailroom
from conftest import all_final, wait_for
from mailroom.config import settings as config
from mailroom.config.values import Caps, parse_cap, parse_template_caps
from mailroom.daemon.caps import Candidate, decide

ENV = {"MAILROOM_DATABASE_URL": "postgresql:///x"}


def test_parse_cap_accepts_limit_per_window() -> None:
    cap = parse_cap("3/15m")
    assert (cap.limit, cap.window, cap.text) == (3, 900, "3/15m")
    assert parse_cap(" 5 / 1h ").window == 3600
    assert parse_cap("10/1d").window == 86400
    assert cap.reason() == "capped: 3 per 15m to this recipient"


@pytest.mark.parametrize("text", ["", "5", "5/", "/1h", "0/1h", "5/0m", "5/1w", "-1/1h",
                                  "5/31d", "five/1h", "5/1h,3/1m"])  # fmt: skip
def test_parse_cap_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match=r"LIMIT/WINDOW|limit|window"):
        parse_cap(text)


def test_parse_template_caps() -> None:
    caps = parse_template_caps("passwordrecoveryv1:3/15m, activationv1:2/1h,")
    assert {k: v.text for k, v in caps.items()} == {
        "passwordrecoveryv1": "3/15m",
        "activationv1": "2/1h",
    }
    for bad in ("passwordrecoveryv1", "a b:3/1m", "x:3/1m,x:4/1m", ":3/1m", "x:3"):
        with pytest.raises(ValueError, match=r"\S"):
            parse_template_caps(bad)


def test_configuration_names_each_bad_variable_on_one_line() -> None:
    env = {**ENV, "MAILROOM_RECIPIENT_CAP": "lots", "MAILROOM_RECIPIENT_CAP_TEMPLATES": "x:1"}
    with pytest.raises(config.ConfigError) as caught:
        config.load(env)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("MAILROOM_RECIPIENT_CAP: ")
    assert problems[1].startswith("MAILROOM_RECIPIENT_CAP_TEMPLATES: ")
    assert all("\n" not in p for p in problems)


def test_configuration_and_its_description() -> None:
    env = {**ENV, "MAILROOM_RECIPIENT_CAP": "5/1h",
           "MAILROOM_RECIPIENT_CAP_TEMPLATES": "passwordrecoveryv1:3/15m"}  # fmt: skip
    cfg = config.load(env)
    assert cfg.caps
    assert cfg.caps.horizon == 3600
    shown = dict(config.describe(cfg))
    assert shown["MAILROOM_RECIPIENT_CAP"] == "5/1h"
    assert shown["MAILROOM_RECIPIENT_CAP_TEMPLATES"] == "passwordrecoveryv1:3/15m"
    assert not config.load(ENV).caps


def _c(i: int, template: str = "passwordrecoveryv1", *to: str) -> Candidate:
    return Candidate(i, template, to or ("ann@example.com",))


def test_a_storm_in_one_batch_sends_the_cap_and_no_more() -> None:
    caps = Caps(templates={"passwordrecoveryv1": parse_cap("3/15m")})
    capped = decide(caps, [_c(i) for i in range(10)], {})
    assert sorted(capped) == list(range(3, 10))
    assert {c.text for c in capped.values()} == {"3/15m"}


def test_earlier_sends_count_only_within_their_window() -> None:
    caps = Caps(templates={"passwordrecoveryv1": parse_cap("3/15m")})
    recent = {"ann@example.com": [("passwordrecoveryv1", 10.0), ("passwordrecoveryv1", 899.0),
                                  ("passwordrecoveryv1", 901.0)]}  # fmt: skip
    assert sorted(decide(caps, [_c(1), _c(2)], recent)) == [2]


def test_a_template_cap_counts_only_its_template_and_the_overall_cap_counts_all() -> None:
    only_template = Caps(templates={"passwordrecoveryv1": parse_cap("1/1h")})
    recent = {"ann@example.com": [("activationv1", 5.0), ("simple", 5.0)]}
    assert decide(only_template, [_c(1)], recent) == {}
    assert decide(only_template, [_c(1, "activationv1")], recent) == {}  # no cap applies
    overall = Caps(overall=parse_cap("2/1h"))
    assert list(decide(overall, [_c(1, "simple")], recent)) == [1]


def test_addresses_are_compared_as_given_lower_case_and_any_recipient_caps() -> None:
    caps = Caps(overall=parse_cap("1/1h"))
    batch = [_c(1, "t", "bob@example.com"), _c(2, "t", "ann@example.com", "bob@example.com"),
             _c(3, "t", "carl@example.com")]  # fmt: skip
    assert list(decide(caps, batch, {})) == [2]  # bob already had one: the pair is capped


@given(
    limit=st.integers(1, 5),
    presses=st.integers(0, 40),
    history=st.lists(st.floats(0, 7200), max_size=10),
)
def test_never_more_than_the_limit_within_a_window(
    limit: int, presses: int, history: list[float]
) -> None:
    caps = Caps(templates={"t": parse_cap(f"{limit}/1h")})
    recent = {"ann@example.com": [("t", age) for age in history]}
    capped = decide(caps, [_c(i, "t") for i in range(presses)], recent)
    earlier = sum(age < 3600 for age in history)
    assert presses - len(capped) == max(0, min(presses, limit - earlier))


# ---------------------------------------------------------------- the daemon, end to end


def _reasons(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, coalesce(last_error, ''), count(*) FROM mailroom.outbox GROUP BY 1, 2"
    ).fetchall()
    return {f"{s}|{e}": int(n) for s, e, n in rows}


def test_a_password_reset_pressed_50_times_sends_three(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    for _ in range(50):
        mailroom.enqueue(conn, "Ann@Example.com", template="passwordrecoveryv1",
                         data={"login": "ann"})  # fmt: skip
    mailroom.enqueue(conn, "bob@example.com", template="passwordrecoveryv1", data={"login": "b"})
    mailroom.enqueue(conn, "ann@example.com", template="activationv1", data={"login": "ann"})
    # two daemons share the work: the cap holds across replicas
    first = spawn(MAILROOM_RECIPIENT_CAP_TEMPLATES="passwordrecoveryv1:3/15m",
                  MAILROOM_BATCH_LIMIT="7")  # fmt: skip
    second = spawn(MAILROOM_RECIPIENT_CAP_TEMPLATES="passwordrecoveryv1:3/15m",
                   MAILROOM_BATCH_LIMIT="7")  # fmt: skip
    wait_for(lambda: all_final(conn, 52))
    reasons = _reasons(conn)
    assert reasons == {"sent|": 5, "dead|capped: 3 per 15m to this recipient": 47}
    sent = [r["to"] for r in standin.sent()]
    assert sorted(a.lower() for to in sent for a in to) == (
        ["ann@example.com"] * 4 + ["bob@example.com"]
    )
    # the counts keep the capped template's sends only (hashed addresses, no copy)
    rows = conn.execute("SELECT count(*) FROM mailroom.recipient_sends").fetchone()
    assert rows == (4,)
    capped_logged = [e for d in (first, second) for e in d.events()
                     if e.get("event") == "message_capped"]  # fmt: skip
    assert len(capped_logged) == 47
    assert all("ann" not in str(e).lower() for e in capped_logged)


def test_a_later_storm_counts_what_was_sent_before_and_caps_off_sends_all(
    conn: psycopg.Connection[Any], standin: Any, spawn: Any
) -> None:
    daemon = spawn(MAILROOM_RECIPIENT_CAP="2/1h")
    daemon.wait_listening()
    mailroom.enqueue(conn, "ann@example.com", subject="one", text="x")
    wait_for(lambda: all_final(conn, 1))
    for i in range(5):
        mailroom.enqueue(conn, "ann@example.com", subject=f"more {i}", text="x")
    wait_for(lambda: all_final(conn, 6))
    assert _reasons(conn) == {"sent|": 2, "dead|capped: 2 per 1h to this recipient": 4}
    metrics_text = " ".join(str(e) for e in daemon.events())
    assert "capped" in metrics_text

    # without a cap, nothing is held back (and nothing is written to the counts table)
    conn.execute("DELETE FROM mailroom.outbox")
    conn.execute("DELETE FROM mailroom.recipient_sends")
    daemon.signal(15)
    assert daemon.wait() == 0
    spawn()
    for i in range(5):
        mailroom.enqueue(conn, "ann@example.com", subject=f"again {i}", text="x")
    wait_for(lambda: all_final(conn, 5))
    assert _reasons(conn) == {"sent|": 5}
    assert conn.execute("SELECT count(*) FROM mailroom.recipient_sends").fetchone() == (0,)


@pytest.mark.parametrize("scope", ["application", "global", None])
def test_one_application_cannot_use_up_another_applications_caps(
    conn: psycopg.Connection[Any],
    standin: Any,
    spawn: Any,
    login_as: Any,
    scope: str | None,
) -> None:
    """The attack: a second application (its own login role) floods a recipient with
    recovery mail, hoping the victim application's next reset to that person ends capped.
    Per application (the default) it cannot; with the global scope it can, as configured."""
    storm, shop = login_as("mailroom_app"), login_as("mailroom_app")
    env = {"MAILROOM_RECIPIENT_CAP_TEMPLATES": "passwordrecoveryv1:2/15m"}
    if scope is not None:
        env["MAILROOM_RECIPIENT_CAP_SCOPE"] = scope
    daemon = spawn(**env)
    daemon.wait_listening()
    with psycopg.connect(storm, autocommit=True) as attacker:
        for _ in range(5):
            mailroom.enqueue(attacker, "ANN@example.com", template="passwordrecoveryv1",
                             data={"login": "x"})  # fmt: skip
    wait_for(lambda: all_final(conn, 5))
    assert _reasons(conn) == {"sent|": 2, "dead|capped: 2 per 15m to this recipient": 3}
    with psycopg.connect(shop, autocommit=True) as victim:
        reset = mailroom.enqueue(victim, "ann@example.com", template="passwordrecoveryv1",
                                 data={"login": "ann"})  # fmt: skip
    wait_for(lambda: all_final(conn, 6))
    row = conn.execute("SELECT status FROM mailroom.outbox WHERE id = %s", [reset]).fetchone()
    assert row == (("dead",) if scope == "global" else ("sent",))
    # the victim's own storm is still capped at its own count
    if scope != "global":
        with psycopg.connect(shop, autocommit=True) as victim:
            for _ in range(3):
                mailroom.enqueue(victim, "ann@example.com", template="passwordrecoveryv1",
                                 data={"login": "ann"})  # fmt: skip
        wait_for(lambda: all_final(conn, 9))
        assert _reasons(conn) == {"sent|": 4, "dead|capped: 2 per 15m to this recipient": 5}


def test_the_cap_scope_is_validated_and_shown() -> None:
    assert config.load(ENV).caps.per_application
    shown = dict(config.describe(config.load({**ENV, "MAILROOM_RECIPIENT_CAP_SCOPE": "global"})))
    assert shown["MAILROOM_RECIPIENT_CAP_SCOPE"] == "global"
    assert not config.load({**ENV, "MAILROOM_RECIPIENT_CAP_SCOPE": "Global"}).caps.per_application
    with pytest.raises(config.ConfigError) as caught:
        config.load({**ENV, "MAILROOM_RECIPIENT_CAP_SCOPE": "tenant"})
    assert caught.value.problems == [
        "MAILROOM_RECIPIENT_CAP_SCOPE: must be one of application, global (got 'tenant')"
    ]


def test_the_daemon_refuses_a_bad_cap_with_one_line(spawn: Any) -> None:
    daemon = spawn(MAILROOM_RECIPIENT_CAP="3 per hour")
    assert daemon.wait() == 2
    text = daemon.log_path.read_text()
    assert re.search(r"MAILROOM_RECIPIENT_CAP: .*LIMIT/WINDOW", text)
