"""The web console (``mailroom web``) as a real process, driven by a real browser (the
system's headless Chromium through Selenium and chromedriver) against a seeded database,
connected as a member of mailroom_operator; plus raw HTTP attacks on its access checks.

Without chromium/chromedriver the browser tests skip (fail under CI=true), saying how to
install them: ``bash .ci/tools.sh``.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import wait_for
from console_harness import (
    AUTH,
    PASSWORD,
    Console,
    _el,
    _env,
    _free_port,
    _request,
    _shot,
    _text,
)
from sesv2_standin import SesStandin
from test_admin import _enqueue, _row, _set, seed

SECRET_HEX = "5ec2e7" * 10 + "abcd"  # a token's raw secret (message_tokens): never shown


def _seed_console(conn: psycopg.Connection[Any]) -> dict[str, int]:
    ids = seed(conn)
    ids["token_pending"] = _enqueue(
        conn, "reset.me@example.com", template="passwordrecoveryv1",
        idempotency_key="mailroom-token:42",
        data={"login": "reset"},
    )  # fmt: skip
    # its token, as the lifecycle stores it (0019): only the daemon may read it
    conn.execute(
        "INSERT INTO mailroom.message_tokens"
        " (message_id, recipient, template, action, secret, code) VALUES"
        " (%s, 'reset.me@example.com', 'passwordrecoveryv1', 'password_recovery', %s, '01234')",
        (ids["token_pending"], bytes.fromhex(SECRET_HEX)),
    )
    _set(conn, ids["token_pending"], "status = 'retrying', attempts = 1, next_attempt_at = "
         "now() + interval '3 minutes', last_error = 'Throttling: slow'")  # fmt: skip
    conn.execute(
        "INSERT INTO mailroom.attempts (message_id, attempt, outcome, error, worker, at) "
        "SELECT %s, 1, CASE WHEN (i * 7919) %% 100 < 88 THEN 'sent' "
        "WHEN (i * 7919) %% 100 < 97 THEN 'retry' ELSE 'dead' END, "
        "'Throttling: x', 'alpha:1', now() - i * interval '4 seconds' "
        "- (i / 900) * interval '20 minutes' FROM generate_series(1, 2400) AS i",
        (ids["sent_old"],),
    )
    return ids


def test_pages_search_and_message_in_a_browser(
    browser: Any, console: Console, conn: psycopg.Connection[Any]
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    ids = _seed_console(conn)
    browser.get(console.url + "/")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    queues = _text(browser, "queues")
    assert "user_action_queue" in queues
    assert "bulk" in queues
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) == 3
    assert "beta:202" in _text(browser, "leases")  # the expired lease
    assert "lease expired" in _text(browser, "leases")
    _shot(browser, "console-overview.png")

    browser.get(console.url + "/messages")
    browser.find_element(By.NAME, "to").send_keys("ALICE@example.com")
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    wait_for(lambda: "to=ALICE" in browser.current_url)
    results = _text(browser, "results")
    assert str(ids["sent"]) in results
    assert "a***@example.com" in results
    assert "alice@" not in results.lower()  # masked in the results
    _shot(browser, "console-search.png")

    browser.get(f"{console.url}/messages/{ids['token_pending']}")
    page = browser.page_source
    assert "r***@example.com" in page
    assert "password_recovery" in _text(browser, "content")  # the token's kind, named
    assert SECRET_HEX not in page  # never its value
    assert "01234" not in page
    _el(browser, "reveal").click()
    wait_for(lambda: "reset.me@example.com" in browser.page_source)
    assert SECRET_HEX not in browser.page_source
    _shot(browser, "console-message.png")

    browser.get(console.url + "/messages?status=nonsense")
    assert "unknown status nonsense" in browser.find_element(By.CLASS_NAME, "error").text


def test_the_overview_shows_debug_mode_pauses_and_stale_daemons(  # noqa: PLR0917 -- fixtures
    browser: Any, console: Console, conn: psycopg.Connection[Any],
    spawn: Callable[..., Any], standin: SesStandin, tmp_path: Path,
) -> None:  # fmt: skip
    """From mailroom.daemons (sql/0013), as real daemons write it: one in debug mode on
    the bulk queue, one paused by SES (the reason shown, its address masked), one dead."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.get(console.url + "/")
    assert "nothing is being sent" in _text(browser, "no-daemons")
    assert not browser.find_elements(By.ID, "paused")

    standin.inject("sending_paused", 1)
    debug = spawn(MAILROOM_DEBUG="true", MAILROOM_QUEUE_NAME="bulk", MAILROOM_WORKER_NAME="dbg:7",
                  MAILROOM_SES_OUTPUT_PATH=str(tmp_path / "out"))  # fmt: skip
    paused = spawn(MAILROOM_PAUSE_DURATION="120000", MAILROOM_WORKER_NAME="ses:8")
    debug.wait_listening()
    paused.wait_listening()
    _enqueue(conn, "carol@example.com", subject="S", text="t", template=None, data=None)
    paused_rows = "SELECT count(*) FROM mailroom.daemons WHERE paused_until > now()"
    wait_for(lambda: conn.execute(paused_rows).fetchone() == (1,))
    conn.execute(
        "INSERT INTO mailroom.daemons (worker, queue, version, mode, transport, started_at,"
        " seen_at, send_rate) VALUES ('old:9', 'user_action_queue', '0.1', 'ses', 'x',"
        " now() - interval '2 days', now() - interval '10 minutes', 'unlimited')"
    )

    browser.get(console.url + "/")
    banner = browser.find_element(By.CLASS_NAME, "debug-mode").text
    assert "DEBUG MODE: daemon dbg:7 (queue bulk) sends nothing" in banner
    assert str(tmp_path / "out") in banner
    pause = _text(browser, "paused")
    assert "Sending paused" in pause
    assert "ses:8" in pause
    assert "SendingPausedException" in pause
    assert not browser.find_elements(By.ID, "no-daemons")
    table = {
        row.find_element(By.TAG_NAME, "code").text: row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "#daemons tbody tr")
    }
    assert set(table) == {"dbg:7", "ses:8", "old:9"}
    assert "DEBUG MODE: sends nothing" in table["dbg:7"]
    assert "paused" in table["ses:8"]
    assert "stale" in table["old:9"]
    assert "carol@" not in browser.page_source


def test_cancel_and_send_now_from_the_message_page(
    browser: Any, console: Console, conn: psycopg.Connection[Any]
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    ids = seed(conn)
    browser.get(f"{console.url}/messages/{ids['scheduled']}")
    browser.find_element(By.NAME, "note").send_keys("customer asked")
    _el(browser, "cancel").click()
    assert "cancel 1 message(s)" in _text(browser, "summary")
    assert _row(conn, ids["scheduled"], "status") == ("pending",)  # not before confirming
    _el(browser, "confirm").click()
    assert "1 of 1 message(s) done" in _text(browser, "result")
    assert _row(conn, ids["scheduled"], "status") == ("cancelled",)
    browser.get(f"{console.url}/messages/{ids['scheduled']}")
    audit = _text(browser, "audit")
    assert "cancel" in audit
    assert "(oncall) via web" in audit
    assert "customer asked" in audit

    browser.get(f"{console.url}/messages/{ids['retrying']}")
    _el(browser, "send-now").click()
    _el(browser, "confirm").click()
    assert "1 of 1 message(s) done" in _text(browser, "result")
    row = conn.execute(
        "SELECT next_attempt_at <= now() FROM mailroom.outbox WHERE id = %s", (ids["retrying"],)
    ).fetchone()
    assert row == (True,)


def test_retry_a_dead_letter_in_the_browser_and_a_daemon_sends_it(
    browser: Any, console: Console, conn: psycopg.Connection[Any],
    spawn: Callable[..., Any], standin: SesStandin,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    dead = _enqueue(conn, "bob@example.com", subject="Receipt", text="thanks", template=None,
                    data=None, not_before=None)  # fmt: skip
    _set(conn, dead, "status = 'dead', attempts = 10, last_error = "
         "'gave up after 10 attempts: TooManyRequestsException: slow'")  # fmt: skip
    daemon = spawn()
    daemon.wait_listening()
    browser.get(console.url + "/dead")
    assert "1 dead letter(s) match" in _text(browser, "total")
    browser.find_element(By.CSS_SELECTOR, f"input[name=id][value='{dead}']").click()
    browser.find_element(By.NAME, "note").send_keys("throttling is over")
    _shot(browser, "console-dead-letters.png")
    _el(browser, "retry-selected").click()
    assert "1 dead letter(s)" in _text(browser, "summary")
    _shot(browser, "console-confirm.png")
    assert _row(conn, dead, "status") == ("dead",)
    _el(browser, "confirm").click()
    assert "1 dead letter(s) done" in _text(browser, "result")
    wait_for(lambda: _row(conn, dead, "status") == ("sent",))
    assert [m["to"] for m in standin.sent()] == [["bob@example.com"]]
    audit = conn.execute("SELECT operator, via, action, message_ids, reason FROM mailroom.audit")
    assert audit.fetchall() == [("oncall", "web", "dead_retry", [dead], "throttling is over")]


def test_unauthenticated_and_forged_requests_are_refused(
    console: Console, conn: psycopg.Connection[Any]
) -> None:
    ids = seed(conn)
    guess = "Basic " + base64.b64encode(b"oncall:guess").decode()
    for headers in ({}, {"Authorization": guess}, {"Authorization": "Bearer " + PASSWORD},
                    {"Authorization": "Basic !!"}):  # fmt: skip
        status, body = _request(console.url + "/", headers=headers)
        assert status == 401, headers
        assert "user_action_queue" not in body
    ok, page = _request(console.url + "/messages", headers={"Authorization": AUTH})
    assert ok == 200
    assert "Messages" in page

    form = f"id={ids['pending']}&note=x&confirm=yes".encode()
    post = {"Authorization": AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    refused = [
        _request(console.url + "/actions/cancel", method="POST", data=form, headers=post),
        _request(
            console.url + "/actions/cancel",
            method="POST",
            data=form + b"&csrf=abc",
            headers={**post, "Cookie": "mailroom_csrf=xyz"},
        ),
        _request(
            console.url + "/actions/cancel",
            method="POST",
            data=form + b"&csrf=same",
            headers={**post, "Cookie": "mailroom_csrf=same", "Origin": "https://evil.example"},
        ),
    ]
    assert [status for status, _ in refused] == [403, 403, 403]
    unauthenticated = _request(console.url + "/actions/cancel", method="POST",
                               data=form + b"&csrf=same",
                               headers={"Cookie": "mailroom_csrf=same"})  # fmt: skip
    assert unauthenticated[0] == 401
    assert _row(conn, ids["pending"], "status") == ("pending",)
    assert conn.execute("SELECT count(*) FROM mailroom.audit").fetchone() == (0,)
    # the matching pair (what the page's form carries), from the console's own page
    same = {**post, "Cookie": "mailroom_csrf=same", "Origin": console.url}
    accepted = _request(console.url + "/actions/cancel", method="POST", data=form + b"&csrf=same",
                        headers=same)  # fmt: skip
    assert accepted[0] == 200
    assert _row(conn, ids["pending"], "status") == ("cancelled",)


def test_a_rebinding_host_is_refused_and_reveals_nothing(
    operator: str, tmp_path: Path, conn: psycopg.Connection[Any]
) -> None:
    """DNS rebinding: a page on rebind.attacker.example whose name now resolves to
    127.0.0.1 reaches the loopback console with its own Host (and, posting, its own
    Origin). Without authentication (loopback) the Host and Origin are all that stop it."""
    ids = seed(conn)
    server = Console(operator, tmp_path)
    try:
        evil = "rebind.attacker.example"
        for host in (evil, f"{evil}:{server.port}", "127.0.0.1.attacker.example",
                     f"127.0.0.1:{server.port + 1}", "localhost:x", ""):  # fmt: skip
            status, body = _request(server.url + "/messages", headers={"Host": host})
            assert status == 421, host
            assert body == "refused: this console does not serve that host name\n"
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "127.0.0.2",
                     f"[::1]:{server.port}", "LOCALHOST."):  # fmt: skip
            assert _request(server.url + "/messages", headers={"Host": host})[0] == 200, host

        page = _request(server.url + "/messages")
        assert page[0] == 200
        form = f"id={ids['pending']}&note=x&confirm=yes&csrf=same".encode()
        post = {"Content-Type": "application/x-www-form-urlencoded",
                "Cookie": "mailroom_csrf=same"}  # fmt: skip
        attempts = [
            {"Host": evil, "Origin": f"http://{evil}"},  # the rebinding page itself
            {"Origin": f"http://{evil}"},  # a spoofed loopback Host, the page's Origin
            {"Origin": f"http://{evil}:{server.port}"},
            {"Referer": f"http://{evil}/messages"},  # no Origin: the Referer decides
            {},  # neither: refused, not assumed
            {"Origin": "null"},
            {"Origin": f"https://127.0.0.1:{server.port}"},  # another scheme
            {"Origin": f"http://127.0.0.1:{server.port + 1}"},  # another port
            {"Origin": f"http://user@127.0.0.1:{server.port}"},
        ]
        for extra in attempts:
            status, body = _request(server.url + "/actions/cancel", method="POST", data=form,
                                    headers={**post, **extra})  # fmt: skip
            assert status in (403, 421), extra
            assert "example.com" not in body, extra
        assert _row(conn, ids["pending"], "status") == ("pending",)
        assert conn.execute("SELECT count(*) FROM mailroom.audit").fetchone() == (0,)
        # the console's own page, by Referer alone, is accepted
        ok = _request(server.url + "/actions/cancel", method="POST", data=form,
                      headers={**post, "Referer": server.url + "/messages"})  # fmt: skip
        assert ok[0] == 200
        assert _row(conn, ids["pending"], "status") == ("cancelled",)
    finally:
        server.stop()


def test_odd_message_ids_are_not_found_never_an_error(operator: str, tmp_path: Path) -> None:
    server = Console(operator, tmp_path)
    try:
        for odd in ("%C2%B2", "%D9%A3", "99999999999999999999", "9223372036854775808", "-1",
                    "0", "1_0", "%201", "1" * 5000):  # fmt: skip
            status, body = _request(f"{server.url}/messages/{odd}")
            assert status == 404, odd
            assert "Traceback" not in body
        assert _request(f"{server.url}/messages?cursor=%C2%B2")[0] == 400
        assert _request(f"{server.url}/messages?cursor=99999999999999999999")[0] == 400
    finally:
        server.stop()


def test_host_and_origin_rules() -> None:
    from aiohttp.test_utils import make_mocked_request  # noqa: PLC0415

    from mailroom.web import security  # noqa: PLC0415
    from mailroom.web.settings import WebSettings  # noqa: PLC0415

    loopback = WebSettings(port=8026)
    named = WebSettings(host="console.internal", port=8026, token="t" * 16)
    assert security.host_allowed("127.0.0.1:8026", loopback)
    assert security.host_allowed("127.9.9.9", loopback)
    assert security.host_allowed("[::1]:8026", loopback)
    assert not security.host_allowed("console.internal:8026", loopback)
    assert not security.host_allowed("127.0.0.1:8027", loopback)
    assert not security.host_allowed("[::1", loopback)
    assert not security.host_allowed("127.0.0.1:\u00b2", loopback)  # a non-ASCII digit
    assert security.host_allowed("Console.Internal:8026", named)
    assert not security.host_allowed("127.0.0.1:8026", named)  # that name only
    assert not security.host_allowed("console.internal.evil:8026", named)

    def post(**headers: str) -> bool:
        request = make_mocked_request("POST", "/actions/cancel",
                                      headers={"Host": "127.0.0.1:8026", **headers})  # fmt: skip
        return security.origin_allowed(request, loopback)

    assert post(Origin="http://127.0.0.1:8026")
    assert post(Referer="http://127.0.0.1:8026/dead?x=1")
    assert not post(Origin="http://localhost:8026")  # not the Host it was sent to
    assert not post(Origin="http://rebind.attacker.example:8026")
    assert not post()


def test_the_console_refuses_an_open_address_without_authentication(
    operator: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailroom", "web", "--host", "0.0.0.0"],  # noqa: S104 -- the test
        env=_env(operator), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "0.0.0.0 is not a loopback address" in result.stderr
    short = subprocess.run(
        [sys.executable, "-m", "mailroom", "web"], env=_env(operator, MAILROOM_WEB_TOKEN="abc"),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert short.returncode == 2
    assert "MAILROOM_WEB_TOKEN: must be at least 16 characters" in short.stderr
    assert "abc" not in short.stderr.replace("MAILROOM", "")


@pytest.mark.parametrize("role", ["mailroom_app", "mailroom_daemon"])
def test_the_console_refuses_to_start_as_another_role(
    role: str, login_as: Callable[..., str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailroom", "web", "--port", str(_free_port())],
        env=_env(login_as(role)), capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "mailroom_operator" in result.stderr


def test_the_daemon_does_not_import_the_console() -> None:
    code = (
        "import sys, mailroom.cli.commands, mailroom.daemon.run, mailroom.operator.admin; "
        "mailroom.cli.commands.parser(); "
        "print(sorted(m for m in ('aiohttp', 'jinja2', 'selenium', 'mailroom.web') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_web_settings() -> None:
    from mailroom.config.settings import ConfigError  # noqa: PLC0415
    from mailroom.web import security, settings  # noqa: PLC0415

    assert settings.load({}).host == "127.0.0.1"
    assert settings.load({"MAILROOM_WEB_HOST": "::1"}).authenticated is False
    with pytest.raises(ConfigError) as problems:
        settings.load({"MAILROOM_WEB_PORT": "http", "MAILROOM_WEB_USER": "a:b"})
    assert len(problems.value.problems) == 3  # port; user without password; ':' in user
    with_token = settings.load({"MAILROOM_WEB_HOST": "0.0.0.0", "MAILROOM_WEB_TOKEN": "t" * 20})  # noqa: S104
    assert security.who("Bearer " + "t" * 20, with_token) == "token"
    assert security.who("Bearer " + "t" * 19, with_token) is None
    assert security.who(AUTH, with_token) is None  # basic auth is not configured
    assert "t" * 20 not in repr(with_token)
