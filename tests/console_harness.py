"""What the console's browser tests share (tests/test_console.py, test_console_watch.py,
and the raw-HTTP tests of other modules): the console as a real ``mailroom web`` process,
headless Chromium through Selenium, the operator's fixtures and small page helpers.

Without chromium/chromedriver the browser fixtures skip (fail under CI=true), saying how
to install them: ``bash .ci/tools.sh``.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for

USER, PASSWORD = "oncall", "correct horse battery"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "img"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(dsn: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAILROOM_", "AWS_"))}
    return {**base, "MAILROOM_DATABASE_URL": dsn, **extra}


class Console:
    def __init__(self, dsn: str, tmp: Path, **settings: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = _env(dsn, MAILROOM_WEB_PORT=str(self.port), **settings)
        self.log = tmp / f"web-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailroom", "web"], env=env, stdout=out, stderr=out
            )
        wait_for(self._up, timeout=20)

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def operator(login_as: Callable[..., str]) -> str:
    return login_as("mailroom_operator")


@pytest.fixture
def console(operator: str, tmp_path: Path) -> Iterator[Console]:
    server = Console(operator, tmp_path, MAILROOM_WEB_USER=USER, MAILROOM_WEB_PASSWORD=PASSWORD)
    yield server
    server.stop()


def _tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if found:
        return found
    message = f"{name} is not installed (bash .ci/tools.sh installs chromium and chromedriver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the browser tests must run)")
    pytest.skip(message)


def chromium_driver() -> Any:
    """A headless Chromium driven through chromedriver (skips, or fails under CI=true,
    when either is missing)."""
    chromium, chromedriver = _tool("chromium"), _tool("chromedriver")
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium_driver()
    # the operator's credentials on every request, as a browser sends them once asked
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": AUTH}})
    yield driver
    driver.quit()


@pytest.fixture
def bare_browser() -> Iterator[Any]:
    """A browser that sends no credentials of its own: only what the login form gives."""
    driver = chromium_driver()
    yield driver
    driver.quit()


def _shot(driver: Any, name: str) -> None:
    """Screenshots for docs/img/ when MAILROOM_SCREENSHOTS=1 (a normal run leaves the
    committed ones alone)."""
    if os.environ.get("MAILROOM_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOTS / name))


def _el(driver: Any, element_id: str) -> Any:
    """The element with this id, waiting for it (a form's POST navigates after click()
    returns); failing, the page shown instead."""
    from selenium.common.exceptions import TimeoutException  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions  # noqa: PLC0415
    from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

    try:
        return WebDriverWait(driver, 15).until(
            expected_conditions.presence_of_element_located((By.ID, element_id))
        )
    except TimeoutException:
        pytest.fail(f"no #{element_id} on {driver.current_url}: {driver.page_source[:1500]}")


def _text(driver: Any, element_id: str) -> str:
    return str(_el(driver, element_id).text)


def _request(url: str, *, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:  # fmt: skip
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- http URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
