"""The console's settings (MAILROOM_WEB_*), checked as the daemon's are: every problem on a
line of its own, no secret in the message."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from mailroom.config.settings import ConfigError

DEFAULT_PORT = 8026


@dataclasses.dataclass(frozen=True, slots=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = dataclasses.field(default=None, repr=False)
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def authenticated(self) -> bool:
        return self.token is not None or self.user is not None


def _read(env: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """``name`` or the content of the file ``name_FILE`` names (one trailing newline off)."""
    path = env.get(name + "_FILE")
    if path and env.get(name):
        problems.append(f"{name}: set either {name} or {name}_FILE, not both")
        return None
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").removesuffix("\n")
        except OSError as exc:
            problems.append(f"{name}_FILE: cannot read {path}: {exc.strerror}")
            return None
    return env.get(name) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(environ: Mapping[str, str] | None = None) -> WebSettings:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    host = env.get("MAILROOM_WEB_HOST", "127.0.0.1").strip() or "127.0.0.1"
    port_text = env.get("MAILROOM_WEB_PORT", str(DEFAULT_PORT)).strip()
    port = int(port_text) if port_text.isdigit() else -1
    if not 0 <= port <= 65535:
        problems.append(f"MAILROOM_WEB_PORT: must be a port number 0-65535 (got {port_text!r})")
    token = _read(env, "MAILROOM_WEB_TOKEN", problems)
    user = env.get("MAILROOM_WEB_USER") or None
    password = _read(env, "MAILROOM_WEB_PASSWORD", problems)
    if token is not None and len(token) < 16:
        problems.append("MAILROOM_WEB_TOKEN: must be at least 16 characters")
    if (user is None) != (password is None):
        problems.append("MAILROOM_WEB_USER and MAILROOM_WEB_PASSWORD: set both or neither")
    elif password is not None and len(password) < 12:
        problems.append("MAILROOM_WEB_PASSWORD: must be at least 12 characters")
    if user is not None and ":" in user:
        problems.append("MAILROOM_WEB_USER: must not contain ':'")
    settings = WebSettings(host, max(port, 0), token, user, password)
    if not problems and not settings.authenticated and not is_loopback(host):
        problems.append(
            f"MAILROOM_WEB_HOST: {host} is not a loopback address; the console refuses to "
            "serve it without authentication (set MAILROOM_WEB_TOKEN, or MAILROOM_WEB_USER "
            "and MAILROOM_WEB_PASSWORD, or their _FILE variants)"
        )
    if problems:
        raise ConfigError(problems)
    return settings
