"""Health: /healthz, /readyz and /metrics on one port, and systemd's sd_notify.

The HTTP server runs in a daemon thread, so a stuck event loop is visible from outside:
/healthz fails when the loop has not ticked recently. The checks read plain attributes the
loop writes; no lock is needed for a float or a bool.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailroom.metrics import REGISTRY

LOOP_STALL = 10.0  # seconds without a tick before the event loop counts as stuck


@dataclass
class Health:
    """What the daemon reports about itself; written by the loop, read by HTTP threads."""

    db_stale_after: float  # seconds since the last successful query before "unreachable"
    listen_stale_after: float  # seconds since the last LISTEN heartbeat before "dead"
    loop_tick: float = field(default_factory=time.monotonic)
    db_ok_at: float | None = None
    db_ok: bool = True  # the last database round trip succeeded
    db_error: str = ""
    listen_connected: Callable[[], bool] = lambda: False
    listen_heartbeat: Callable[[], float | None] = lambda: None
    pause: Callable[[], str] = lambda: ""  # why sending is paused, "" when it is not
    draining: bool = False
    # further readiness checks by name (the SES events reader when it is on)
    extra: dict[str, Callable[[], tuple[bool, str]]] = field(default_factory=dict)

    def liveness(self) -> dict[str, tuple[bool, str]]:
        age = time.monotonic() - self.loop_tick
        return {"event_loop": (age < LOOP_STALL, f"last tick {age:.1f} s ago")}

    def readiness(self) -> dict[str, tuple[bool, str]]:
        now = time.monotonic()
        checks = self.liveness()
        if self.db_ok_at is None:
            checks["database"] = (False, self.db_error or "not reached yet")
        else:
            age = now - self.db_ok_at
            ok = self.db_ok and age < self.db_stale_after
            checks["database"] = (
                ok,
                f"last query {age:.1f} s ago" + ("" if ok else f"; {self.db_error}"),
            )
        heartbeat = self.listen_heartbeat()
        if not self.listen_connected() or heartbeat is None:
            checks["listen"] = (False, "not connected")
        else:
            age = now - heartbeat
            checks["listen"] = (age < self.listen_stale_after, f"heartbeat {age:.1f} s ago")
        for name, check in self.extra.items():
            checks[name] = check()
        checks["shutdown"] = (not self.draining, "draining" if self.draining else "running")
        # Informative only: a paused daemon is doing what it should (a restart would not
        # help), so it stays ready; the reason is here and in mailroom_sending_pause_reason.
        pause = self.pause()
        checks["sending"] = (True, f"paused: {pause}" if pause else "sending")
        return checks


def _body(checks: dict[str, tuple[bool, str]]) -> tuple[int, bytes]:
    healthy = all(ok for ok, _ in checks.values())
    document = {
        "status": "ok" if healthy else "fail",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
    }
    return (200 if healthy else 503), json.dumps(document).encode()


def serve(health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP endpoints in a daemon thread; returns the server (for its port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                status, body, kind = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                status, body = _body(health.liveness())
                kind = "application/json"
            elif path == "/readyz":
                status, body = _body(health.readiness())
                kind = "application/json"
            else:
                status, body, kind = 404, b'{"error": "not found"}', "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would drown the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mailroom-http", daemon=True).start()
    return server


def probe(port: int, path: str = "/readyz", timeout: float = 5.0) -> tuple[bool, str]:
    """GET a local endpoint, for ``mailroom check``: (healthy, body or error)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return True, response.read().decode()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode()
    except OSError as exc:
        return False, f"cannot reach {url}: {exc}"


def sd_notify(state: str) -> bool:
    """Send a systemd notification (READY=1, WATCHDOG=1, STOPPING=1, STATUS=…) to
    $NOTIFY_SOCKET; a no-op returning False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asked for, or None when there is none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
