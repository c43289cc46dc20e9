"""What a daemon with the default settings keeps in memory (issue 21): it sends, yet never
imports the events reader, the console, the Django backend, boto3 or botocore (the
preflight's client, botocore's decisions and the credential chain live in child
processes). Checked through sys.modules of a real ``mailroom run``,
not through a size or a time."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import mailroom
from conftest import all_final, wait_for
from sesv2_standin import SesStandin
from test_deliverability_e2e import publish, queue_empty, sqs_client

# The daemon's own entry point, plus a note of every module loaded when it exits.
WRAPPER = """
import atexit, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv = ["mailroom", "run"]
runpy.run_module("mailroom", run_name="__main__", alter_sys=True)
"""
NOT_WITH_DEFAULTS = ("mailroom.events", "mailroom.web", "mailroom.django", "django", "jinja2",
                     "boto3", "cryptography",
                     # the credentials come from a child too (mailroom.transports.credentials)
                     "botocore", "urllib3", "dateutil", "jmespath",
                     # the SES calls ride the standard library's asyncio (transports/exchange)
                     "aiohttp", "yarl", "multidict",
                     # structlog loads without rich (mailroom/cli/__init__.py) when installed
                     "rich", "pygments",
                     # the templates commands load the renderer only when they run
                     "mailroom.templates", "difflib")  # fmt: skip


def _modules_of_a_daemon(
    env: dict[str, str], tmp_path: Path, conn: Any, ready: Callable[[], bool] = lambda: True
) -> set[str]:
    out = tmp_path / "modules.txt"
    with (tmp_path / "daemon.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER, str(out)], env=env, stdout=log, stderr=log
        )
    try:
        with conn.transaction():
            mailroom.enqueue(conn, "ann@example.com", template="activationv1", data={"n": 1})
            mailroom.enqueue(conn, "bob@example.com", subject="Hi", text="Hello")
        wait_for(lambda: all_final(conn, 2), timeout=60)
        # the preflight's child has run and its findings are logged: the daemon is steady
        wait_for(lambda: b'"preflight"' in (tmp_path / "daemon.log").read_bytes(), timeout=60)
        wait_for(ready, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return set(out.read_text().split())


def test_a_daemon_with_defaults_loads_no_events_console_django_boto3_or_aiohttp(
    conn: psycopg.Connection[Any], standin: SesStandin, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    modules = _modules_of_a_daemon(daemon_env, tmp_path, conn)
    # the list is the daemon's: it sent through the SES transport
    assert {"mailroom.daemon.run", "mailroom.transports.ses", "mailroom.transports.exchange"} <= (
        modules
    )
    assert len(standin.sent()) == 2
    loaded = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_WITH_DEFAULTS)
    )
    assert loaded == []


# botocore's session and sqs client (issue 21): the events reader's SQS calls are its own;
# cryptography loads with the first SNS signature to verify, and this queue holds none
NOT_WITH_EVENTS = tuple(n for n in NOT_WITH_DEFAULTS if n != "mailroom.events")


def test_a_daemon_reading_events_loads_no_botocore(
    conn: psycopg.Connection[Any], standin: SesStandin, daemon_env: dict[str, str],
    tmp_path: Path, moto_url: str,
) -> None:  # fmt: skip
    sqs = sqs_client(moto_url)
    url = sqs.create_queue(QueueName=f"imports-{tmp_path.name[-20:]}")["QueueUrl"]
    publish(sqs, url, ["not an SES event"])  # read, counted malformed and deleted
    env = {**daemon_env, "MAILROOM_EVENTS_QUEUE_URL": url, "AWS_ENDPOINT_URL_SQS": moto_url}
    modules = _modules_of_a_daemon(env, tmp_path, conn, ready=lambda: queue_empty(sqs, url))
    # the reader ran (it received and deleted the message) on the project's own client
    assert b"events_reader_started" in (tmp_path / "daemon.log").read_bytes()
    assert {"mailroom.events.reader", "mailroom.events.sqsclient"} <= modules
    loaded = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_WITH_EVENTS)
    )
    assert loaded == []


def test_rich_stays_importable_after_the_cli_hid_it_from_structlog() -> None:
    # in a fresh interpreter: this one may have loaded structlog already
    probe = (
        "import sys, mailroom.cli.commands; assert 'rich' not in sys.modules; "
        "import rich.console; print(rich.console.Console.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    if "No module named 'rich'" in done.stderr:
        pytest.skip("rich is not installed (as in a production install)")
    assert (done.returncode, done.stdout.strip()) == (0, "Console"), done.stderr
