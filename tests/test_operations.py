"""What operators see: /metrics, /healthz, /readyz, `mailroom check`, sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

import mailroom
from conftest import all_final, wait_for
from mailroom.embedded import free_port
from sesv2_standin import SesStandin
from test_deploy import EXPECTED_METRICS, HISTOGRAMS


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_and_health_endpoints_of_a_running_daemon(
    conn: psycopg.Connection[Any], standin: SesStandin, spawn: Any
) -> None:
    standin.entry_status_for("bounce@", "MESSAGE_REJECTED")
    standin.fail_address("slow@", "throttle")
    port = free_port()
    daemon = spawn(
        MAILROOM_HTTP_PORT=str(port), MAILROOM_RETRY_BASE="60000", MAILROOM_RETRY_CAP="60000"
    )
    daemon.wait_listening()
    with conn.transaction():
        for to in ("ann@example.com", "bob@example.com", "bounce@example.com"):
            mailroom.enqueue(conn, to, template="activationv1", data={"login": "x"})
        mailroom.enqueue(conn, "slow@example.com", subject="S", text="x")
    wait_for(lambda: all_final(conn, 3) or conn.execute(
        "SELECT count(*) = 4 FROM mailroom.outbox WHERE status IN ('sent', 'dead', 'retrying')"
    ).fetchone()[0])  # fmt: skip

    # The rows are final once the record commits; the daemon drops the in-flight gauge
    # when it resumes after that commit, so read /metrics once it has.
    def scrape() -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str] | None:
        status, body = _get(port, "/metrics")
        assert status == 200
        samples = _samples(body)
        return (samples, body) if samples[("mailroom_in_flight_messages", ())] == 0 else None

    samples, body = wait_for(scrape)
    assert samples[("mailroom_messages_sent_total", (("template", "activationv1"),))] == 2
    dead = (
        "mailroom_messages_dead_total",
        (("reason", "MESSAGE_REJECTED"), ("template", "activationv1")),
    )
    assert samples[dead] == 1
    retried = (
        "mailroom_messages_retried_total",
        (("reason", "TooManyRequestsException"), ("template", "simple")),
    )
    assert samples[retried] == 1
    errors = (
        "mailroom_ses_errors_total",
        (("code", "TooManyRequestsException"), ("operation", "SendEmail")),
    )
    assert samples[errors] == 1
    assert samples[("mailroom_listen_connected", ())] == 1
    assert samples[("mailroom_listen_last_heartbeat_timestamp_seconds", ())] > 0
    assert samples[("mailroom_batch_size_count", ())] >= 1
    assert samples[("mailroom_enqueue_to_send_seconds_count", ())] == 2
    assert samples[("mailroom_in_flight_messages", ())] == 0
    assert samples[("mailroom_outbox_messages", (("status", "pending"),))] >= 0
    assert ("mailroom_oldest_due_message_age_seconds", ()) in samples
    assert any(name == "mailroom_build_info" for name, _ in samples)
    assert any(name == "mailroom_ses_call_duration_seconds_bucket" for name, _ in samples)
    assert "@" not in body  # no address in any label or help text
    # every metric the alert rules and docs rely on is really exported
    exported = {name for name, _ in samples}
    for metric in EXPECTED_METRICS:
        wanted = f"{metric}_count" if metric in HISTOGRAMS else metric
        assert wanted in exported, metric

    status, body = _get(port, "/healthz")
    assert status == 200
    assert json.loads(body)["checks"]["event_loop"]["ok"]
    status, body = _get(port, "/readyz")
    assert status == 200, body
    assert set(json.loads(body)["checks"]) == {"event_loop", "database", "listen", "shutdown",
                                             "sending"}  # fmt: skip

    events = daemon.events()
    (dead_event,) = [e for e in events if e["event"] == "message_dead"]
    assert dead_event["code"] == "MESSAGE_REJECTED"
    assert dead_event["batch"].startswith(daemon.env.get("MAILROOM_WORKER_NAME", ""))
    assert dead_event["message_id"] > 0
    assert dead_event["level"] == "warning"
    assert all(e.get("batch") for e in events if e["event"] in ("batch_done", "message_retry"))
    log_text = daemon.log_path.read_text()
    for address in ("ann@example.com", "bounce@example.com", "slow@example.com"):
        assert address not in log_text

    env = {**daemon.env, "MAILROOM_HTTP_PORT": str(port)}
    check = subprocess.run([sys.executable, "-m", "mailroom", "check"], env=env,
                           capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(20) == 0
    down = subprocess.run([sys.executable, "-m", "mailroom", "check", "--live"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert down.returncode == 1
    assert "cannot reach" in down.stdout


def test_systemd_notify_ready_watchdog_stopping(
    standin: SesStandin, spawn: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        daemon = spawn(NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        received: list[str] = []

        def receive_until(wanted: str) -> None:
            while wanted not in received:
                received.extend(sock.recv(4096).decode().splitlines())

        receive_until("READY=1")
        receive_until("WATCHDOG=1")
        received.clear()
        receive_until("WATCHDOG=1")  # keeps pinging while healthy
        daemon.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert daemon.wait(20) == 0
    assert os.path.exists(path)


def test_a_busy_http_port_is_one_line_and_exit_2(standin: SesStandin, spawn: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = spawn(MAILROOM_HTTP_PORT=str(port))
        assert daemon.wait(30) == 2
    text = daemon.log_path.read_text()
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "MAILROOM_HTTP_PORT" in line]
    assert len(lines) == 1, text
    problem = f"MAILROOM_HTTP_PORT: cannot listen on 0.0.0.0:{port}: Address already in use"
    assert problem in lines[0]
    assert json.loads(lines[0])["exit_code"] == 2
