"""AWS credentials for the SES transport: botocore's provider chain, in-process or asked of
a short-lived child process.

The chain (environment, shared files and profiles, SSO, web identity, assume-role, the
container and instance roles, ``credential_process``) is botocore's in both cases: never
re-implemented here. ``InProcess`` keeps a botocore session (the CLI, the tests).
``FromChild`` is the daemon's: botocore's session and its modules (~8 MiB, docs/
BENCHMARKS.md) stay out of the daemon's memory; a child (``python -m
mailroom.transports.credentials``) runs the chain and prints the frozen credentials with
their expiry, and is asked again as botocore itself would refresh them: from 15 minutes
before they expire (the old ones meanwhile), and with every call waiting from 10 minutes
before. Static credentials are asked for once.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from mailroom.transports.sigv4 import Credentials

# botocore's windows (botocore.credentials.RefreshableCredentials): advisory, mandatory
ADVISORY = 15 * 60.0
MANDATORY = 10 * 60.0
RETRY_AFTER = 30.0  # seconds between two children after one failed
# A call waits for new credentials within its own budget (the caller's ``within``): all of
# it when it has none that work, a quarter of it at most when the old ones still do.
ADVISORY_SHARE = 0.25
MANDATORY_SHARE = 0.9
# a refreshable set whose expiry botocore did not say: asked again after a minute
UNKNOWN_EXPIRY = ADVISORY + 60.0


class CredentialError(Exception):
    """The provider chain failed (a role or token endpoint refused or did not answer)."""


class Source(Protocol):
    async def get(self, within: float) -> Credentials | None:
        """Credentials to sign with now, found within ``within`` seconds (the caller
        stops waiting then); None when the chain found none. May raise CredentialError."""
        ...


@dataclass(frozen=True, slots=True)
class Found:
    credentials: Credentials | None
    expires: float | None = None  # epoch seconds; None: static, never asked again

    def as_json(self) -> dict[str, Any]:
        c = self.credentials
        if c is None:
            return {"credentials": None}
        keys = {"access_key": c.access_key, "secret_key": c.secret_key, "token": c.token}
        return {"credentials": keys, "expires": self.expires}

    @classmethod
    def of_json(cls, data: Any) -> Found:
        if not isinstance(data, dict):
            raise CredentialError("the credentials child answered something else than JSON")
        keys = data.get("credentials")
        if keys is None:
            return cls(None)
        expires = data.get("expires")
        return cls(
            Credentials(str(keys["access_key"]), str(keys["secret_key"]), keys.get("token")),
            float(expires) if expires is not None else None,
        )


def due(found: Found, now: float) -> str:
    """Whether credentials must be asked for again: "" (not yet), "advisory" (soon: one
    caller asks, the others sign with these) or "mandatory" (none, or about to expire:
    every caller waits for new ones). Pure."""
    if found.credentials is None:
        return "mandatory"
    if found.expires is None:
        return ""
    left = found.expires - now
    if left <= MANDATORY:
        return "mandatory"
    return "advisory" if left <= ADVISORY else ""


def reason(exc: BaseException) -> str:
    """A provider's failure, for a log line and the pause's reason: botocore quotes an
    endpoint's answer in some messages (a refusal may echo keys), so nothing from the first
    ``{`` on is kept, and at most 200 characters."""
    text = str(exc).split("{", 1)[0].strip().rstrip(":").strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def of_botocore(credentials: Any) -> Found:
    """botocore's credentials (None, static or refreshable) as frozen values and expiry;
    reading them refreshes them when botocore says they need it."""
    if credentials is None:
        return Found(None)
    frozen = credentials.get_frozen_credentials()
    keys = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    if getattr(credentials, "refresh_needed", None) is None:
        return Found(keys)  # static: botocore never refreshes them either
    # RefreshableCredentials keeps its expiry private; botocore has kept the name since 2014
    expiry = getattr(credentials, "_expiry_time", None)
    if expiry is None:
        return Found(keys, time.time() + UNKNOWN_EXPIRY)
    return Found(keys, expiry.timestamp())


class InProcess:
    """botocore's session in this process; refreshed in a thread (it may block on a
    metadata or STS endpoint)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        # resolved now, before the event loop runs, as the chain may ask an endpoint
        self._credentials: Any = session.get_credentials()

    def _resolve(self) -> Credentials | None:
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415 -- with the session

        try:
            if self._credentials is None:
                self._credentials = self._session.get_credentials()
            return of_botocore(self._credentials).credentials
        except BotoCoreError as exc:
            raise CredentialError(reason(exc)) from exc

    async def get(self, within: float) -> Credentials | None:
        credentials = self._credentials
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if credentials is None or (refresh_needed is not None and refresh_needed()):
            return await anyio.to_thread.run_sync(self._resolve)
        return self._resolve()


class FromChild:
    """Credentials a child process found; asked of a new child when they are due."""

    def __init__(self, found: Found, command: list[str] | None = None) -> None:
        self.found = found
        self.command = command or [sys.executable, "-m", __name__]
        self.children = 0  # how many were asked, for the tests
        self._lock = anyio.Lock()
        self._not_before = 0.0  # monotonic: no new child before (after a failure)
        self._error = ""

    async def get(self, within: float) -> Credentials | None:
        found = self.found
        when = due(found, time.time())
        if not when or (when == "advisory" and self._lock.locked()):
            return found.credentials  # still good (another call may be asking meanwhile)
        async with self._lock:
            if self.found is found and time.monotonic() >= self._not_before:
                # advisory: this call waits a little, never long (the old ones still work)
                # mandatory: nearly all of the call's budget (the failure is noted before
                # the caller's own deadline)
                wait = within * (MANDATORY_SHARE if when == "mandatory" else ADVISORY_SHARE)
                with anyio.move_on_after(wait) as scope:
                    await self._ask()
                if scope.cancelled_caught:
                    self._failed(f"no answer within {wait:g} s")
        found = self.found
        if due(found, time.time()) != "mandatory":
            return found.credentials
        if self._error:
            raise CredentialError(self._error)
        return None

    async def _ask(self) -> None:
        self.children += 1
        try:
            done = await anyio.run_process(self.command, check=False)
            if done.returncode != 0:
                lines = done.stderr.decode(errors="replace").strip().splitlines()
                raise CredentialError(lines[-1][:300] if lines else f"exit {done.returncode}")
            self.found = Found.of_json(json.loads(done.stdout))
        except (CredentialError, OSError, ValueError, KeyError, TypeError) as exc:
            self._failed(str(exc) if isinstance(exc, CredentialError) else repr(exc))
            return
        self._error = ""
        if due(self.found, time.time()) == "mandatory":  # none found: not again at once
            self._not_before = time.monotonic() + RETRY_AFTER

    def _failed(self, why: str) -> None:
        self._error = f"the credentials child failed: {why}"
        self._not_before = time.monotonic() + RETRY_AFTER


def main() -> None:
    """The child: botocore's credentials as JSON on stdout, or why not on stderr (exit 2)."""
    import botocore.session  # noqa: PLC0415 -- the child's work
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    try:
        found = of_botocore(botocore.session.get_session().get_credentials())
    except BotoCoreError as exc:
        sys.stderr.write(reason(exc) + "\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(found.as_json()))


if __name__ == "__main__":
    main()
