"""`mailroom check --ses`, the go-live preflight, as an operator runs it: the real CLI in a
subprocess, boto3 over real HTTP against the SES stand-in (every read it makes) and moto's
server (identities and configuration sets, which it implements), with a good and a broken
set-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import boto3
import psycopg

import mailroom

DESTINATION = {"Name": "events", "Enabled": True, "MatchingEventTypes": ["BOUNCE", "COMPLAINT"]}


def _check(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "mailroom", "check", "--ses", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _findings(stdout: str) -> dict[str, dict[str, str]]:
    document = json.loads(stdout)
    return {f["check"]: f for f in document["findings"]}


def _good(standin: Any) -> None:
    standin.identities = {"example.com": True}
    standin.config_sets = {"default": [DESTINATION]}
    standin.templates = {"activationv1"}


def test_a_good_set_up_passes(
    conn: psycopg.Connection[Any], standin: Any, daemon_env: dict[str, str]
) -> None:
    _good(standin)
    mailroom.enqueue(conn, "ann@example.org", template="activationv1", data={"login": "a"})
    env = {**daemon_env, "MAILROOM_SES_SOURCE": "noreply@example.com"}
    code, out, err = _check(env, "--json")
    assert code == 0, out + err
    findings = _findings(out)
    assert json.loads(out)["ok"] is True
    assert {f["status"] for f in findings.values()} == {"pass"}
    assert set(findings) >= {
        "credentials", "sending_enabled", "production_access", "sender_identity",
        "configuration_set", "event_destination", "template:activationv1",
    }  # fmt: skip
    assert "BOUNCE" in findings["event_destination"]["detail"]
    code, text, _ = _check(env)  # the readable form
    assert code == 0
    assert "PASS  sender_identity" in text
    assert "0 failed" in text


def test_a_broken_set_up_fails_each_item_with_what_to_do(
    conn: psycopg.Connection[Any], standin: Any, daemon_env: dict[str, str]
) -> None:
    standin.identities = {"example.com": False}  # pending verification
    standin.config_sets = {"other": []}
    standin.templates = set()
    standin.production = False
    mailroom.enqueue(conn, "ann@example.org", template="activationv2", data={"login": "a"})
    env = {**daemon_env, "MAILROOM_SES_SOURCE": "noreply@example.com"}
    code, out, err = _check(env, "--json")
    assert code == 1, out + err
    findings = _findings(out)
    assert findings["production_access"]["status"] == "warn"
    assert "production access" in findings["production_access"]["action"]
    assert findings["sender_identity"]["status"] == "fail"
    assert "create-email-identity" in findings["sender_identity"]["action"]
    assert findings["configuration_set"]["status"] == "fail"
    assert findings["template:activationv2"]["status"] == "fail"
    assert "1 pending" in findings["template:activationv2"]["detail"]
    assert all(f["action"] for f in findings.values() if f["status"] != "pass")

    standin.config_sets = {"default": [{**DESTINATION, "Enabled": False}]}
    _, out, _ = _check(env, "--json")
    assert _findings(out)["event_destination"]["status"] == "fail"


def test_wrong_credentials_stop_at_the_first_check(
    standin: Any, daemon_env: dict[str, str]
) -> None:
    env = {**daemon_env, "AWS_SECRET_ACCESS_KEY": "wrong"}
    code, out, _ = _check(env, "--json")
    assert code == 1
    findings = json.loads(out)["findings"]
    assert [f["check"] for f in findings] == ["credentials"]
    assert "SignatureDoesNotMatch" in findings[0]["detail"]
    assert "wrong" not in out  # the secret never appears


def test_bad_configuration_exits_2_and_the_readiness_check_still_works(
    daemon_env: dict[str, str],
) -> None:
    code, _, err = _check({**daemon_env, "MAILROOM_SEND_RATE": "fast"})
    assert code == 2
    assert "MAILROOM_SEND_RATE" in err
    done = subprocess.run(
        [sys.executable, "-m", "mailroom", "check"],
        env={**daemon_env, "MAILROOM_HTTP_PORT": "1"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1  # nothing listens there: not ready, as before


def test_identity_and_configuration_set_checks_against_moto(
    moto_url: str, daemon_env: dict[str, str]
) -> None:
    kw = {"endpoint_url": moto_url, "region_name": "us-east-1",
          "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fmt: skip
    env = {k: v for k, v in daemon_env.items() if k != "MAILROOM_DATABASE_URL"}
    env.update(AWS_ENDPOINT_URL_SESV2=moto_url, MAILROOM_SES_SOURCE="noreply@moto.example",
               MAILROOM_SES_CONFIG_SET="moto-set", PATH=os.environ["PATH"])  # fmt: skip

    # broken: nothing exists yet
    code, out, _ = _check(env, "--json")
    assert code == 1
    broken = _findings(out)
    assert broken["sender_identity"]["status"] == "fail"
    assert broken["configuration_set"]["status"] == "fail"
    assert "does not exist" in broken["configuration_set"]["detail"]
    assert broken["templates"]["status"] == "warn"  # no database given: said, not guessed

    # good: the domain verified and the set created (moto has no GetAccount or event
    # destinations in v2: those are reported as unknown, never as passing)
    boto3.client("ses", **kw).verify_domain_identity(Domain="moto.example")
    boto3.client("sesv2", **kw).create_configuration_set(ConfigurationSetName="moto-set")
    code, out, _ = _check(env, "--json")
    good = _findings(out)
    assert good["sender_identity"]["status"] == "pass"
    assert good["configuration_set"]["status"] == "pass"
    assert good["account"]["status"] == "fail"  # moto 5 answers GetAccount with a 404
    assert good["event_destination"]["status"] == "warn"
    assert code == 1
