"""The console that watches (issue 22), in a real headless Chromium against a real
console process and PostgreSQL: the overview and queue pages refresh themselves, stuck
queues and orphaned leases are raised in red on their own, a queue is paused and resumed
from the browser (audited, honoured), the read-only role sees and cannot act (through the
console and in SQL), the login form works for the token and basic modes, and the console
recovers from lost database connections without a bare 500. Pure pieces (the chart's
axes, the alarms, the session cookie, the login's redirect) are tested directly."""

from __future__ import annotations

import base64
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import wait_for
from console_harness import (
    AUTH,
    PASSWORD,
    USER,
    Console,
    _el,
    _request,
    _shot,
    _text,
)
from test_admin import _enqueue, _set

TOKEN = "t0ken-for-the-console-" + "x" * 8


def _stall(conn: psycopg.Connection[Any], queue: str, minutes: int, count: int = 3) -> list[int]:
    ids = [_enqueue(conn, f"w{n}@example.com", queue=queue) for n in range(count)]
    for i in ids:
        _set(conn, i, f"next_attempt_at = now() - interval '{int(minutes)} minutes'")
    return ids


def _orphan(conn: psycopg.Connection[Any], worker: str, count: int) -> None:
    for n in range(count):
        i = _enqueue(conn, f"held{n}@example.com")
        _set(conn, i, f"status = 'sending', attempts = 1, locked_by = '{worker}', "
             "locked_until = now() - interval '3 minutes'")  # fmt: skip


def _live_daemon(conn: psycopg.Connection[Any], worker: str, queue: str) -> None:
    conn.execute(
        "INSERT INTO mailroom.daemons (worker, queue, version, mode, transport, started_at,"
        " seen_at, send_rate) VALUES (%s, %s, '1', 'ses', 'x', now(), now(), 'unlimited')",
        (worker, queue),
    )


# -- in the browser ----------------------------------------------------------------------------


def test_the_overview_refreshes_and_raises_a_stuck_queue_on_its_own(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    _live_daemon(conn, "alive:1", "user_action_queue")
    conn.execute(
        "INSERT INTO mailroom.attempts (message_id, attempt, outcome, worker, at) "
        "SELECT %s, 1, CASE WHEN i %% 9 = 0 THEN 'retry' ELSE 'sent' END, 'alive:1', "
        "now() - i * interval '7 seconds' FROM generate_series(1, 1500) AS i",
        (_enqueue(conn, "chart@example.com"),),
    )
    browser.get(console.url + "/")
    assert not browser.find_elements(By.ID, "stuck")
    marker = browser.execute_script("window.notReloaded = true; return window.notReloaded;")
    assert marker is True
    # nothing serves queue "imports", its work waits; a killed daemon left leases behind
    _stall(conn, "imports", minutes=75)
    _orphan(conn, "killed:294", 4)
    stuck = wait_for(lambda: browser.find_elements(By.ID, "stuck"), timeout=30)
    assert browser.execute_script("return window.notReloaded === true")  # no reload happened
    text = stuck[0].text
    assert "imports: 3 due; no live daemon serves it and the oldest due message has waited" in text
    orphaned = _text(browser, "orphaned")
    assert "killed:294 holds 4 message(s) of queue user_action_queue" in orphaned
    row = browser.find_element(By.XPATH, "//table[@id='queues']//tr[td/a[text()='imports']]")
    assert "stuck" in row.get_attribute("class")
    assert "orphaned" in _text(browser, "leases")
    # the chart has its axes: counts on the left, times of day below
    labels = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart .times text")]
    assert len(labels) >= 5
    assert all(len(label) == 5 and label[2] == ":" for label in labels)
    counts = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart .counts text")]
    assert counts[0] == "0"
    assert int(counts[-1]) >= 9  # 1500 tries in ~175 minutes: about 8-9 a minute at the peak
    _shot(browser, "console-overview.png")

    # a queue with a daemon and young due work is not stuck; the alarm goes by itself
    conn.execute("DELETE FROM mailroom.outbox WHERE queue = 'imports'")
    wait_for(lambda: not browser.find_elements(By.ID, "stuck"), timeout=30)
    assert browser.execute_script("return window.notReloaded === true")


def test_pause_and_resume_a_queue_from_the_browser(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    _stall(conn, "bulk", minutes=1)
    browser.get(console.url + "/queues/bulk")
    assert "Running" in _text(browser, "pause")
    browser.find_element(By.NAME, "note").send_keys("campaign 7 has a bad link")
    browser.find_element(By.CSS_SELECTOR, "button.pause[data-queue='bulk']").click()
    assert "pause queue bulk" in _text(browser, "summary")
    assert conn.execute("SELECT count(*) FROM mailroom.queue_pauses").fetchone() == (0,)
    _el(browser, "confirm").click()
    assert "queue bulk paused" in _text(browser, "result")
    _el(browser, "to-queue").click()
    pause = _text(browser, "pause")
    assert "Paused by oncall" in pause
    assert "campaign 7 has a bad link" in pause
    assert "paused" in _text(browser, "queue-state")
    _shot(browser, "console-queue.png")
    browser.get(console.url + "/")
    assert "bulk: 3 due, waiting" in _text(browser, "queue-paused")  # not "stuck": paused
    assert not browser.find_elements(By.ID, "stuck") or "bulk" not in _text(browser, "stuck")

    browser.find_element(By.CSS_SELECTOR, "button.resume[data-queue='bulk']").click()
    _el(browser, "confirm").click()
    assert "queue bulk resumed" in _text(browser, "result")
    assert conn.execute("SELECT count(*) FROM mailroom.queue_pauses").fetchone() == (0,)
    audit = conn.execute(
        "SELECT action, operator, via, reason, selection FROM mailroom.audit ORDER BY at"
    ).fetchall()
    assert audit == [
        ("pause", "oncall", "web", "campaign 7 has a bad link", {"queue": "bulk"}),
        ("resume", "oncall", "web", None, {"queue": "bulk"}),
    ]


def test_the_viewer_sees_everything_and_can_do_nothing(
    browser: Any,
    login_as: Callable[..., str],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    viewer = login_as("mailroom_viewer")
    pending = _enqueue(conn, "pending.person@example.com")
    dead = _enqueue(conn, "gone@example.com")
    _set(conn, dead, "status = 'dead', last_error = 'MESSAGE_REJECTED: x'")
    _stall(conn, "bulk", minutes=1)

    # in SQL: reads work, every action and every write is refused
    with psycopg.connect(viewer, autocommit=True) as sql:
        for table in ("outbox", "attempts", "audit", "daemons", "events", "suppressions",
                      "queue_pauses", "settings", "message_token_actions"):  # fmt: skip
            sql.execute(f"SELECT count(*) FROM mailroom.{table}")  # noqa: S608 -- names above
        action = uuid.uuid4()
        refused = [
            ("SELECT * FROM mailroom.operator_cancel(%s, 'r', 'v', 'cli', %s)",
             ([pending], action)),
            ("SELECT * FROM mailroom.operator_send_now(%s, NULL, 'v', 'cli', %s)",
             ([pending], action)),
            ("SELECT * FROM mailroom.operator_dead_retry(NULL, NULL, NULL, 500, %s, NULL, NULL,"
             " NULL, NULL, NULL, 'v', 'cli', %s, NULL)", ([dead], action)),
            ("SELECT * FROM mailroom.operator_dead_purge(NULL, NULL, NULL, 500, %s, NULL, NULL,"
             " NULL, NULL, NULL, 'v', 'cli', %s, NULL)", ([dead], action)),
            ("SELECT * FROM mailroom.operator_suppress(ARRAY['a@example.com'], 'manual', NULL,"
             " 'v', 'cli', %s)", (action,)),
            ("SELECT * FROM mailroom.operator_unsuppress(ARRAY['a@example.com'], 'v', 'cli', %s)",
             (action,)),
            ("SELECT mailroom.operator_pause_queue('bulk', NULL, 'v', 'cli', %s)", (action,)),
            ("SELECT mailroom.operator_resume_queue('bulk', NULL, 'v', 'cli', %s)", (action,)),
            ("SELECT mailroom.enqueue(ARRAY['a@example.com'], subject => 's', body_text => 'b')",
             ()),
            ("UPDATE mailroom.outbox SET status = 'cancelled' WHERE id = %s", (pending,)),
            ("DELETE FROM mailroom.outbox WHERE id = %s", (dead,)),
            ("INSERT INTO mailroom.audit (action_id, operator, via, action, message_ids)"
             " VALUES (%s, 'v', 'cli', 'cancel', '{}')", (action,)),
            ("INSERT INTO mailroom.queue_pauses (queue, operator) VALUES ('bulk', 'v')", ()),
            ("DELETE FROM mailroom.recipient_sends", ()),
            ("SELECT * FROM mailroom.message_tokens", ()),
        ]  # fmt: skip
        for statement, params in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                sql.execute(statement, params)

    # the CLI: reading commands work, acting ones are refused (exit 3)
    from test_admin import mailroom_cli  # noqa: PLC0415

    assert mailroom_cli("status", db=viewer).returncode == 0
    assert mailroom_cli("show", str(pending), db=viewer).returncode == 0
    for command in (("cancel", str(pending), "--reason", "x"), ("queue", "pause", "bulk"),
                    ("dead", "retry", str(dead))):  # fmt: skip
        result = mailroom_cli(*command, db=viewer)
        assert result.returncode == 3, (command, result.stdout, result.stderr)

    # the console: it starts, shows every page, offers no action and refuses forged ones
    server = Console(viewer, tmp_path, MAILROOM_WEB_USER=USER, MAILROOM_WEB_PASSWORD=PASSWORD)
    try:
        for path in ("/", "/queues/bulk", f"/messages/{pending}", f"/messages/{dead}",
                     "/messages", "/dead", "/suppressions"):  # fmt: skip
            browser.get(server.url + path)
            assert "(read-only)" in browser.find_element(By.CLASS_NAME, "who").text, path
            acting = "form[method=post]:not(.logout), button[formaction], input[name=id]"
            assert browser.find_elements(By.CSS_SELECTOR, acting) == [], path
        browser.get(f"{server.url}/messages/{dead}")
        assert "may look but not act" in _text(browser, "read-only")
        token = "same"  # a matching CSRF pair and the console's Origin: only the role refuses
        post = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"mailroom_csrf={token}", "Origin": server.url}  # fmt: skip
        for action, form in (("cancel", f"id={pending}&note=x"), ("send-now", f"id={pending}"),
                             ("retry", f"id={dead}"), ("purge", f"id={dead}"),
                             ("pause", "queue=bulk"), ("resume", "queue=bulk"),
                             ("suppress", "addresses=a%40example.com&note=x"),
                             ("unsuppress", "addresses=a%40example.com&note=x")):  # fmt: skip
            body = f"{form}&confirm=yes&csrf={token}".encode()
            status, page = _request(f"{server.url}/actions/{action}", method="POST", data=body,
                                    headers=post)  # fmt: skip
            assert status == 403, (action, status)
            assert "may look but not act" in page
    finally:
        server.stop()
    states = conn.execute(
        "SELECT status FROM mailroom.outbox WHERE id = ANY (%s) ORDER BY id", ([pending, dead],)
    ).fetchall()
    assert states == [("pending",), ("dead",)]
    assert conn.execute("SELECT count(*) FROM mailroom.audit").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM mailroom.queue_pauses").fetchone() == (0,)


@pytest.mark.parametrize("mode", ["token", "basic"])
def test_the_login_form(
    mode: str, bare_browser: Any, operator: str, tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    settings = (
        {"MAILROOM_WEB_TOKEN": TOKEN}
        if mode == "token"
        else {"MAILROOM_WEB_USER": USER, "MAILROOM_WEB_PASSWORD": PASSWORD}
    )
    server = Console(operator, tmp_path, **settings)
    driver = bare_browser
    try:
        _stall(conn, "bulk", minutes=1)
        driver.get(server.url + "/queues/bulk?x=1")
        wait_for(lambda: "/login" in driver.current_url)
        asked = urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)
        assert asked["next"] == ["/queues/bulk?x=1"]

        def log_in(**fields: str) -> None:
            for name, value in fields.items():
                box = driver.find_element(By.NAME, name)
                box.clear()
                box.send_keys(value)
            _el(driver, "log-in").click()

        wrong = {"token": TOKEN + "x"} if mode == "token" else {"user": USER, "password": "nope"}
        log_in(**wrong)
        assert "not logged in" in _text(driver, "error")
        right = {"token": TOKEN} if mode == "token" else {"user": USER, "password": PASSWORD}
        log_in(**right)
        wait_for(lambda: driver.current_url.endswith("/queues/bulk?x=1"))
        assert "Running" in _text(driver, "pause")
        cookie = driver.get_cookie("mailroom_session")
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/"
        assert TOKEN not in cookie["value"]
        assert (
            PASSWORD not in base64.urlsafe_b64decode(cookie["value"].split("|")[0] + "==").decode()
        )
        csrf = driver.get_cookie("mailroom_csrf")
        assert csrf is not None
        assert csrf["httpOnly"] is True
        assert csrf["sameSite"] == "Strict"

        # acting through the session works, and is audited under the login's name
        driver.find_element(By.CSS_SELECTOR, "button.pause[data-queue='bulk']").click()
        _el(driver, "confirm").click()
        assert "queue bulk paused" in _text(driver, "result")
        who = "token" if mode == "token" else USER
        assert conn.execute("SELECT operator FROM mailroom.audit").fetchall() == [(who,)]

        # the sandboxed preview loads with the session cookie too (SameSite=Strict)
        shown = _enqueue(conn, "x@example.com", template=None, data=None, subject="s",
                         html="<h1>Hello</h1>")  # fmt: skip
        driver.get(f"{server.url}/messages/{shown}")
        driver.switch_to.frame(_el(driver, "html"))
        assert driver.find_element(By.TAG_NAME, "h1").text == "Hello"
        driver.switch_to.default_content()

        _el(driver, "log-out").click()
        wait_for(lambda: "/login" in driver.current_url)
        driver.get(server.url + "/")
        wait_for(lambda: "/login" in driver.current_url)
    finally:
        server.stop()


def test_login_attacks_are_refused(operator: str, tmp_path: Path) -> None:
    server = Console(operator, tmp_path, MAILROOM_WEB_TOKEN=TOKEN)
    try:
        page = {"Accept": "text/html"}
        # a forged or altered session cookie proves nothing
        from mailroom.web.security import Sessions  # noqa: PLC0415

        forged = Sessions().issue("token", time.time())
        for cookie in (forged, "x", "|||", forged.replace("|", "||", 1)):
            status, body = _request(
                server.url + "/", headers={"Cookie": f"mailroom_session={cookie}"}
            )
            assert status == 401, cookie
            assert "user_action_queue" not in body
        # a browser is sent to the form; the form's POST needs the CSRF pair and the Origin
        status, body = _request(server.url + "/login", headers=page)
        assert status == 200
        assert 'name="token"' in body
        form = f"token={TOKEN}&next=/".encode()
        post = {"Content-Type": "application/x-www-form-urlencoded"}
        assert _request(server.url + "/login", method="POST", data=form,
                        headers={**post, "Origin": server.url})[0] == 403  # fmt: skip
        assert _request(server.url + "/login", method="POST", data=form + b"&csrf=c",
                        headers={**post, "Cookie": "mailroom_csrf=c",
                                 "Origin": "http://evil.example"})[0] == 403  # fmt: skip
    finally:
        server.stop()


def test_the_console_recovers_from_lost_connections_without_a_bare_500(
    operator: str, tmp_path: Path, pg_admin_dsn: str
) -> None:
    server = Console(operator, tmp_path)
    user = psycopg.conninfo.conninfo_to_dict(operator)["user"]
    try:
        for _ in range(4):  # fill the pool with connections
            assert _request(server.url + "/")[0] == 200
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = %s", (user,),
            ).fetchone()  # fmt: skip
        assert killed is not None
        assert killed[0] >= 1
        answers = [_request(server.url + "/") for _ in range(6)]
        assert [status for status, _ in answers] == [200] * 6  # each broken one replaced
        assert all("Overview" in body for _, body in answers)
    finally:
        server.stop()


def test_suppressions_searched_added_and_removed_with_a_note(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    conn.execute("INSERT INTO mailroom.suppressions (address, reason, detail) VALUES "
                 "('bounced@example.com', 'bounce', 'Permanent/General')")  # fmt: skip
    browser.get(console.url + "/suppressions")
    assert "1 suppressed address(es) match" in _text(browser, "total")
    assert "b***@example.com" in _text(browser, "suppressions")

    form = browser.find_element(By.ID, "suppress")
    form.find_element(By.NAME, "addresses").send_keys("Ann@Example.com\nbounced@example.com")
    form.find_element(By.NAME, "note").send_keys("asked to stop, ticket 7")
    _el(browser, "suppress-go").click()
    assert "suppress 2 address(es)" in _text(browser, "summary")
    _el(browser, "confirm").click()
    assert "1 of 2 address(es) suppressed" in _text(browser, "result")

    browser.get(console.url + "/suppressions?address=ANN%40example.com&reveal=1")
    assert "ann@example.com" in _text(browser, "suppressions")
    assert "asked to stop, ticket 7" in _text(browser, "suppressions")
    browser.get(console.url + "/suppressions?address=not-an-address")
    assert "not an address" in _text(browser, "error")

    browser.get(console.url + "/suppressions")
    form = browser.find_element(By.ID, "unsuppress")
    form.find_element(By.NAME, "addresses").send_keys("bounced@example.com")
    form.find_element(By.NAME, "note").send_keys("mailbox fixed, confirmed by phone")
    _el(browser, "unsuppress-go").click()
    _el(browser, "confirm").click()
    assert "1 of 1 address(es) removed" in _text(browser, "result")
    audit = conn.execute(
        "SELECT action, operator, via, reason, selection->'addresses' FROM mailroom.audit "
        "ORDER BY at"
    ).fetchall()
    assert audit == [
        ("suppress", "oncall", "web", "asked to stop, ticket 7", ["ann@example.com"]),
        ("unsuppress", "oncall", "web", "mailbox fixed, confirmed by phone",
         ["bounced@example.com"]),
    ]  # fmt: skip
    left = conn.execute("SELECT address FROM mailroom.suppressions").fetchall()
    assert left == [("ann@example.com",)]

    # bad input is refused in the operator's words, and nothing changes
    for addresses, note, problem in (("a@b.example, not-an-address", "n", "not an address"),
                                     ("ok@example.com", "", "say why"),
                                     ("", "n", "give at least one address")):  # fmt: skip
        browser.get(console.url + "/suppressions")
        form = browser.find_element(By.ID, "suppress")
        browser.execute_script("arguments[0].removeAttribute('required')",
                               form.find_element(By.NAME, "note"))  # fmt: skip
        form.find_element(By.NAME, "addresses").send_keys(addresses)
        form.find_element(By.NAME, "note").send_keys(note)
        _el(browser, "suppress-go").click()
        assert problem in _text(browser, "error"), problem
    assert conn.execute("SELECT count(*) FROM mailroom.audit").fetchone() == (2,)


class _Tracker:
    """A remote host an email's HTML would load from (a read-receipt pixel): counts hits."""

    def __init__(self) -> None:
        import http.server  # noqa: PLC0415
        import threading  # noqa: PLC0415

        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_the_message_page_previews_content_safely(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    tracker = _Tracker()
    try:
        html = (
            f'<h1 style="color: #2456a6">Your receipt</h1><p>Hello alice@example.com</p>'
            f'<img src="{tracker.url}/pixel.gif"><link rel="stylesheet" href="{tracker.url}/x.css">'
            "<script>window.top.document.title = 'pwned'; parent.pwned = 1;</script>"
            f'<form action="{tracker.url}/steal"><button id="steal">go</button></form>'
        )
        simple = _enqueue(conn, "alice@example.com", template=None, data=None,
                          subject="Receipt for alice@example.com",
                          text="Thanks, alice@example.com", html=html)  # fmt: skip
        templated = _enqueue(conn, "bob@example.com", template="welcome", data={
            "name": "Bob", "reset_link": "https://app.example/r?t=abc", "code": "12345",
            "note": "see https://app.example/x/" + "Q" * 40, "count": 3})  # fmt: skip
        _set(conn, templated, "next_attempt_at = now() + interval '2 hours'")
        token = _enqueue(conn, "t@example.com", idempotency_key="mailroom-token:9")
        _set(conn, token, "status = 'dead', last_error = 'TEMPLATE_NOT_FOUND: x'")

        browser.get(f"{console.url}/messages/{simple}")
        assert _text(browser, "subject") == "Receipt for a***@example.com"
        assert "alice@" not in browser.page_source  # the subject is masked everywhere
        assert _text(browser, "text") == "Thanks, a***@example.com"
        frame = _el(browser, "html")
        assert frame.get_attribute("sandbox") == ""  # no allow-scripts, no allow-same-origin
        browser.switch_to.frame(frame)
        assert "Your receipt" in browser.find_element(By.TAG_NAME, "h1").text
        assert "a***@example.com" in browser.find_element(By.TAG_NAME, "p").text
        browser.switch_to.default_content()
        time.sleep(1)  # give a script, the pixel and the stylesheet every chance
        assert browser.title.startswith("Message")
        assert browser.execute_script("return window.pwned === undefined")
        assert tracker.hits == []
        status, page = _request(f"{console.url}/messages/{simple}/preview",
                                headers={"Authorization": AUTH})  # fmt: skip
        assert status == 200
        assert "alice@example.com" not in page
        _shot(browser, "console-message.png")

        browser.get(f"{console.url}/messages/{templated}")
        assert "scheduled" in _text(browser, "status")
        data = {row.find_elements(By.TAG_NAME, "td")[0].text:
                row.find_elements(By.TAG_NAME, "td")[1].text
                for row in browser.find_elements(By.CSS_SELECTOR, "#data tbody tr")}  # fmt: skip
        assert data["name"] == "Bob"
        assert data["count"] == "3"
        for secret in ("reset_link", "code", "note"):
            assert data[secret].startswith("(hidden"), secret
        assert "abc" not in browser.page_source
        assert "12345" not in browser.page_source

        browser.get(f"{console.url}/messages/{token}")
        assert "No retry" in _text(browser, "no-retry")
        assert not browser.find_elements(By.ID, "retry")
        assert browser.find_elements(By.ID, "purge")

        # delivery events: one without detail shows nothing (never "None"), a bounce its
        # subtype, and the message its delivery state and why
        bounced = _enqueue(conn, "carol@example.com", cc=["dan@example.com"])
        _set(conn, bounced, "status = 'sent', sent_at = now(), attempts = 1, "
             "provider_message_id = 'ses-page-1'")  # fmt: skip
        conn.execute(
            "INSERT INTO mailroom.events (event_key, provider_message_id, recipient, event_type,"
            " subtype, detail, occurred_at) VALUES "
            "('k1', 'ses-page-1', 'dan@example.com', 'Delivery', '', NULL, now()),"
            "('k2', 'ses-page-1', 'carol@example.com', 'Bounce', 'Permanent/General',"
            " '550 5.1.1 user unknown', now())"
        )
        browser.get(f"{console.url}/messages/{bounced}")
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#events tbody tr")]
        assert len(rows) == 2, rows
        assert "None" not in " ".join(rows)
        assert "Bounce (Permanent/General)" in rows[1]
        assert "550 5.1.1 user unknown" in rows[1]
        assert "bounced" in _text(browser, "delivery")
    finally:
        tracker.close()


def test_the_dead_letter_page_is_paged(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    conn.execute(
        "INSERT INTO mailroom.outbox (queue, to_addresses, subject, body_text, status, "
        "last_error, updated_at) SELECT 'user_action_queue', ARRAY['d' || i || '@example.com'], "
        "'s', 'b', 'dead', 'MESSAGE_REJECTED: x', now() - (i / 3) * interval '1 second' "
        "FROM generate_series(1, 120) AS i"
    )  # several share a death time: the cursor must still not skip or repeat one
    seen: list[str] = []
    browser.get(console.url + "/dead?reason=MESSAGE_REJECTED")
    for expected in (50, 50, 20):
        assert "120 dead letter(s) match" in _text(browser, "total")
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#dead tbody td.n a")]
        assert len(ids) == expected
        seen += ids
        nexts = browser.find_elements(By.ID, "next")
        if expected == 20:
            assert nexts == []
            break
        nexts[0].click()
        wait_for(lambda: "cursor=" in browser.current_url)
        wait_for(lambda: browser.find_elements(By.ID, "newest"))
    assert len(seen) == len(set(seen)) == 120
    assert _request(console.url + "/dead?cursor=x_1", headers={"Authorization": AUTH})[0] == 400


def test_the_suppression_page_is_paged_without_an_address_in_its_links(
    browser: Any,
    console: Console,
    conn: psycopg.Connection[Any],
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    # one statement: all 120 share one created_at, the worst case for a time-only cursor
    conn.execute(
        "INSERT INTO mailroom.suppressions (address, reason) "
        "SELECT 'page' || i || '@example.com', 'bounce' FROM generate_series(1, 120) AS i"
    )
    seen: list[str] = []
    browser.get(console.url + "/suppressions?reveal=1&reason=bounce")
    for expected in (50, 50, 20):
        assert "120 suppressed address(es) match" in _text(browser, "total")
        cells = browser.find_elements(By.CSS_SELECTOR, "#suppressions tbody tr td:first-child")
        assert len(cells) == expected
        seen += [c.text for c in cells]
        nexts = browser.find_elements(By.ID, "next")
        if expected == 20:
            assert nexts == []
            break
        link = nexts[0].get_attribute("href")
        cursor = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["cursor"][0]
        assert "@" not in cursor, cursor  # no address, not even part of one, in the URL
        assert "page" not in cursor, cursor
        nexts[0].click()
        wait_for(lambda: "cursor=" in browser.current_url)
        wait_for(lambda: browser.find_elements(By.ID, "newest"))
    assert len(seen) == len(set(seen)) == 120
    assert all(s.endswith("@example.com") and "***" not in s for s in seen)  # still revealed
    status, page = _request(console.url + "/suppressions?cursor=ann@example.com_1",
                            headers={"Authorization": AUTH})  # fmt: skip
    assert status == 400
    assert "cursor: not a page" in page


# -- pure pieces ---------------------------------------------------------------------------


def test_the_chart_has_round_count_and_time_axes() -> None:
    from mailroom.web.watch import CHART_MINUTES, chart  # noqa: PLC0415

    start = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    series = [{"minute": start + timedelta(minutes=i), "sent": i % 7, "retried": 0,
               "dead": 13 if i == 40 else 0} for i in range(CHART_MINUTES)]  # fmt: skip
    drawn = chart(series)
    assert drawn["peak"] == 13
    assert [c["label"] for c in drawn["counts"]] == [0, 10, 20]  # 13 rounds up to 20
    assert [t["label"] for t in drawn["times"]] == ["09:00", "09:30", "10:00", "10:30", "11:00",
                                                    "11:30"]  # fmt: skip
    assert drawn["counts"][0]["y"] == drawn["bottom"]
    assert drawn["counts"][-1]["y"] == drawn["top"]
    empty = chart([{**p, "sent": 0, "dead": 0} for p in series])
    assert [c["label"] for c in empty["counts"]] == [0, 1]


def test_alarms_judge_queues_daemons_pauses_and_leases() -> None:
    from mailroom.operator.alarms import STUCK_AFTER, alarms  # noqa: PLC0415

    def queue(name: str, due: int, waited: float) -> dict[str, Any]:
        return {"queue": name, "due": due, "oldest_due_age_seconds": waited}

    queues = [queue("served", 5, 30), queue("orphan", 2, 30), queue("slow", 9, STUCK_AFTER + 1),
              queue("held", 4, 9999), queue("idle", 0, 0)]  # fmt: skip
    daemons = [{"worker": "a:1", "queue": "served", "stale": False},
               {"worker": "b:1", "queue": "slow", "stale": False},
               {"worker": "dead:1", "queue": "orphan", "stale": True}]  # fmt: skip
    leases = [{"queue": "served", "worker": "a:1", "messages": 3, "expires_in_seconds": 5},
              {"queue": "orphan", "worker": "dead:1", "messages": 7, "expires_in_seconds": -9},
              {"queue": "served", "worker": "never:1", "messages": 1,
               "expires_in_seconds": 1}]  # fmt: skip
    found = alarms(queues, daemons, [{"queue": "held"}], leases)
    assert [(s["queue"], s["why"]) for s in found["stuck"]] == [
        ("orphan", "no live daemon serves it"),
        ("slow", "the oldest due message has waited 10m 1s"),
    ]
    assert [p["queue"] for p in found["paused"]] == ["held"]
    orphaned = [(o["worker"], o["messages"]) for o in found["orphaned"]]
    assert orphaned == [("dead:1", 7), ("never:1", 1)]


def test_sessions_and_the_login_redirect() -> None:
    from mailroom.web.security import Sessions, login_who, safe_next  # noqa: PLC0415
    from mailroom.web.settings import WebSettings  # noqa: PLC0415

    sessions = Sessions(key=b"k" * 32, seconds=60)
    cookie = sessions.issue("oncall|x", now=1000.0)
    assert sessions.operator(cookie, now=1059.0) == "oncall|x"
    assert sessions.operator(cookie, now=1061.0) is None  # expired
    assert Sessions(key=b"j" * 32).operator(cookie, now=1000.0) is None  # another key
    name, expiry, nonce, mac = cookie.split("|")
    later = f"{name}|{int(expiry) + 9999}|{nonce}|{mac}"
    assert sessions.operator(later, now=1000.0) is None  # the expiry is signed
    other = base64.urlsafe_b64encode(b"admin").decode()
    assert sessions.operator(f"{other}|{expiry}|{nonce}|{mac}", now=1000.0) is None
    assert sessions.issue("a", 0) != sessions.issue("a", 0)  # a fresh nonce each login

    both = WebSettings(token="t" * 16, user="oncall", password="p" * 12)
    assert login_who(both, token="t" * 16, user="", password="") == "token"
    assert login_who(both, token="", user="oncall", password="p" * 12) == "oncall"
    assert login_who(both, token="", user="oncall", password="p" * 11) is None
    assert login_who(WebSettings(), token="t", user="u", password="p") is None

    for bad in ("//evil.example/", "/\\evil.example", "https://evil.example", "evil", "",
                "/ok\r\nSet-Cookie: x=1", "/\tx"):  # fmt: skip
        assert safe_next(bad) == "/", bad
    assert safe_next("/queues/bulk?x=1") == "/queues/bulk?x=1"
