"""`mailroom suppression list | add | remove | import`, run as real processes with the
operator role; import pages through SES's account-level list on the stand-in over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import boto3
import psycopg

from ses_simulator import MailboxSimulator
from sesv2_standin import SesStandin


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailroom", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_add_list_remove_as_the_operator(
    conn: psycopg.Connection[Any], daemon_env: dict[str, str], login_as: Callable[..., str]
) -> None:
    env = {**daemon_env, "MAILROOM_DATABASE_URL": login_as("mailroom_operator")}
    added = run(env, "suppression", "add", "Ann@Example.com", '"Bob" <bob@example.com>',
                "--note", "asked by phone", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"added": ["a***@example.com", "b***@example.com"],
                                        "already": 0}  # fmt: skip
    assert run(env, "suppression", "add", "not-an-address").returncode == 2
    long_idn = "x@" + "\u00fc" * 8000 + ".de"
    for bad in ("@", "a@", "@b", "a\nb@c.de", "a@b.c, d@e.f", "a@b.c;d@e.f", "a b@c.de",
                "a\x07@c.de", "x" * 400 + "@example.com", long_idn):  # fmt: skip
        for verb in ("add", "remove"):
            refused = run(env, "suppression", verb, "ok@example.com", bad)
            assert refused.returncode == 2, (verb, bad, refused.stderr)
            error = refused.stderr.strip().splitlines()[-1]
            assert "argument ADDRESS" in error, error
            assert ascii(bad[:20])[1:-1] in error  # the value, escaped, named
            assert "Traceback" not in refused.stderr
    assert conn.execute("SELECT count(*) FROM mailroom.suppressions").fetchone() == (2,)
    listed = json.loads(run(env, "suppression", "list", "--json", "--reveal").stdout)
    assert listed["total"] == 2
    assert {e["address"] for e in listed["entries"]} == {"ann@example.com", "bob@example.com"}
    assert {e["reason"] for e in listed["entries"]} == {"manual"}
    text = run(env, "suppression", "list").stdout
    assert "ann@example.com" not in text  # masked unless --reveal
    removed = run(env, "suppression", "remove", "ANN@example.com", "--json")
    assert removed.returncode == 0
    assert json.loads(removed.stdout)["removed"] == [{"address": "a***@example.com",
                                                      "reason": "manual"}]  # fmt: skip
    assert run(env, "suppression", "remove", "ann@example.com").returncode == 1
    # with a note (0027): kept as the audit row's reason
    noted = run(env, "suppression", "remove", "bob@example.com", "--note", "mailbox fixed")
    assert noted.returncode == 0, noted.stderr
    audit = conn.execute(
        "SELECT action, reason FROM mailroom.audit WHERE action = 'unsuppress' ORDER BY at"
    ).fetchall()
    assert audit == [("unsuppress", None), ("unsuppress", "mailbox fixed")]
    # the application role may not touch the list
    app = {**daemon_env, "MAILROOM_DATABASE_URL": login_as("mailroom_app")}
    assert run(app, "suppression", "add", "x@example.com").returncode == 3


def test_import_pages_through_the_ses_account_list(
    conn: psycopg.Connection[Any], standin: SesStandin, daemon_env: dict[str, str]
) -> None:
    simulator = MailboxSimulator(standin, sqs=None, queue_url="")
    ses = boto3.client("sesv2", endpoint_url=standin.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    for i in range(25):
        ses.put_suppressed_destination(EmailAddress=f"User{i}@example.com",
                                       Reason="BOUNCE" if i % 5 else "COMPLAINT")  # fmt: skip
    conn.execute(
        "INSERT INTO mailroom.suppressions (address, reason) VALUES ('user3@example.com', 'bounce')"
    )
    done = run(daemon_env, "suppression", "import", "--page-size", "10", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"listed": 25, "added": 24, "already": 1}
    assert simulator.list_calls == 3
    rows = dict(conn.execute("SELECT address, reason FROM mailroom.suppressions").fetchall())
    assert len(rows) == 25
    assert rows["user0@example.com"] == "ses_import"
    assert rows["user3@example.com"] == "bounce"  # an existing entry keeps its reason
    detail = conn.execute("SELECT detail FROM mailroom.suppressions"
                          " WHERE address = 'user0@example.com'").fetchone()  # fmt: skip
    assert detail is not None
    assert detail[0].startswith("SES COMPLAINT (")
    again = run(daemon_env, "suppression", "import", "--json")
    assert json.loads(again.stdout)["added"] == 0


def test_import_stops_on_an_endless_or_repeating_next_token(
    conn: psycopg.Connection[Any], standin: SesStandin, daemon_env: dict[str, str]
) -> None:
    simulator = MailboxSimulator(standin, sqs=None, queue_url="")
    ses = boto3.client("sesv2", endpoint_url=standin.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    for i in range(5):
        ses.put_suppressed_destination(EmailAddress=f"u{i}@example.com", Reason="BOUNCE")
    simulator.endless = "repeat"
    looped = run(daemon_env, "suppression", "import", "--page-size", "2")
    assert looped.returncode == 1, looped.stderr
    assert "NextToken it had returned before" in looped.stderr
    assert simulator.list_calls <= 3
    simulator.endless, simulator.list_calls = "fresh", 0
    bounded = run(daemon_env, "suppression", "import", "--page-size", "2", "--max-pages", "7")
    assert bounded.returncode == 1, bounded.stderr
    assert "stopped after 7 page(s)" in bounded.stderr
    assert simulator.list_calls == 7
    assert conn.execute("SELECT count(*) FROM mailroom.suppressions").fetchone() == (5,)
    for bad in ("0", "1001", "-3", "\u00b2"):
        refused = run(daemon_env, "suppression", "import", "--page-size", bad)
        assert refused.returncode == 2, bad
