"""What the daemon sets up to start: the transport it sends through, and the SES preflight
(mailroom.daemon.preflight) run once in a child process.

The preflight's boto3 client loads the SES service model and botocore's endpoint tables:
~15 MiB that the daemon's memory would keep for good (freed objects do not give their
pages back). A child process (``python -m mailroom.daemon.startup``) holds them instead
and exits; the daemon only reads its findings (JSON on stdout).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import structlog

from mailroom import metrics
from mailroom.config.settings import Config, load
from mailroom.transports import Defaults, SetupError, Transport, awsconfig, credentials

if TYPE_CHECKING:
    from mailroom.daemon.ratecontrol import RateControl
    from mailroom.daemon.sender import Sender
    from mailroom.outbox import Outbox

log = structlog.get_logger("mailroom.daemon")

PREFLIGHT_TIMEOUT = 120.0  # seconds: the SES reads have their own timeouts, far below


def make_transport(config: Config) -> Transport:
    defaults = Defaults(source=config.ses_source, config_set=config.ses_config_set or None)
    if config.debug:
        from mailroom.transports.file import FileTransport  # noqa: PLC0415

        return FileTransport(defaults, config.ses_output_path, config.templates_dir)
    if config.transport == "smtp":
        from mailroom.transports.smtp import SmtpTransport  # noqa: PLC0415

        return SmtpTransport(
            defaults,
            config.smtp_url,
            config.templates_dir,
            concurrency=config.ses_concurrency,
            timeout=config.ses_connect_timeout + config.ses_read_timeout,
        )
    from mailroom.transports.ses import SesTransport  # noqa: PLC0415 -- not in debug mode

    resolved, found = resolve_in_child()
    return SesTransport(
        defaults,
        concurrency=config.ses_concurrency,
        connect_timeout=config.ses_connect_timeout,
        read_timeout=config.ses_read_timeout,
        resolved=resolved,
        credentials=credentials.FromChild(found),
    )


def resolve_in_child() -> tuple[awsconfig.Resolved, credentials.Found]:
    """botocore's endpoint, proxy and CA bundle decisions (transports.awsconfig.resolve)
    and the credentials its chain finds, from a child process: resolving builds an SES
    client, whose service model and endpoint rules (~11 MiB) the daemon would otherwise
    keep for good, and botocore's session alone is ~8 MiB more (docs/BENCHMARKS.md)."""
    command = [sys.executable, "-m", "mailroom.daemon.startup", "resolve"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise SetupError(why[0])
    answer = json.loads(done.stdout)
    return awsconfig.Resolved(**answer["resolved"]), credentials.Found.of_json(answer["found"])


def rate_control(config: Config, outbox: Outbox, sender: Sender) -> RateControl | None:
    """The shared send rate (fixed or auto) with its throttling back-off, wired into the
    sender; None without a rate (or with the debug transport: there is no SES account)."""
    if not config.send_rate or (not config.sends_to_ses and config.send_rate_auto):
        return None
    from mailroom.daemon.ratecontrol import RateControl  # noqa: PLC0415 -- only with a rate

    control = RateControl(config, outbox)
    sender.reserve = control.reserve
    sender.on_throttle = control.throttled
    return control


def announce(c: Config, transport: Transport) -> None:
    """One line saying what this daemon is and does; in debug mode a warning too (the
    gauges' loop repeats it every DEBUG_REMINDER seconds), and the mode in the
    mailroom_info metric."""
    mode = "ses" if c.sends_to_ses else "debug"
    if c.debug:
        sends = f"debug: writes to {c.ses_output_path}, SENDS NOTHING"
    elif c.transport == "smtp":
        sends = f"smtp: {c.smtp_url}, templates from {c.templates_dir}, NOTHING TO SES"
    else:
        sends = f"ses: {getattr(transport, 'url', 'SES v2')}"
    metrics.INFO.labels(mode, metrics.version()).set(1)
    log.info(
        "started", version=metrics.version(), queue=c.queue_name, worker=c.worker_name,
        transport=sends, batch_limit=c.batch_limit, batch_timeout=c.batch_timeout,
        concurrency=c.ses_concurrency, send_rate=c.send_rate or "unlimited",
        lease=c.lease, retention=c.retention_enabled,
    )  # fmt: skip
    if c.debug:
        log.warning("debug_mode", detail="MAILROOM_DEBUG is on: no email is sent to SES")


async def log_preflight(templates: Sequence[tuple[str, int]]) -> None:
    """The preflight's findings as log lines: info when a check passes, else warnings."""
    for finding in await preflight(templates):
        level = log.info if finding["status"] == "pass" else log.warning
        level("preflight", **finding)


async def preflight(templates: Sequence[tuple[str, int]]) -> list[dict[str, str]]:
    """The findings of `mailroom check --ses` from a child process with the daemon's
    environment (its configuration); a child that fails is one ``fail`` finding."""
    command = [sys.executable, "-m", "mailroom.daemon.startup"]
    stdin = json.dumps([list(t) for t in templates]).encode()
    with anyio.move_on_after(PREFLIGHT_TIMEOUT):
        done = await anyio.run_process(command, input=stdin, check=False)
        if done.returncode == 0:
            return list(json.loads(done.stdout))
        error = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return [_failed(f"exit {done.returncode}: {error[0][:300]}")]
    return [_failed(f"no answer within {PREFLIGHT_TIMEOUT:.0f} s")]


def _failed(why: str) -> dict[str, str]:
    return {"check": "preflight", "status": "fail", "detail": f"the preflight failed: {why}",
            "action": "run `mailroom check --ses` to see why"}  # fmt: skip


def main() -> None:
    """The child. ``resolve``: botocore's decisions and credentials (JSON) on stdout, or
    the SetupError's message on stderr (exit 2). Otherwise the preflight: templates (JSON
    pairs) on stdin, findings (JSON) on stdout."""
    if sys.argv[1:] == ["resolve"]:
        import botocore.session  # noqa: PLC0415 -- the child's work
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415

        session = botocore.session.get_session()
        try:
            resolved = awsconfig.resolve(session)
        except SetupError as exc:
            sys.stderr.write(f"{exc}\n")
            sys.exit(2)
        try:
            found = credentials.of_botocore(session.get_credentials())
        except BotoCoreError as exc:
            # not a start-up failure: the transport asks again at its first call, and a
            # call without credentials pauses sending, saying why
            found = credentials.Found(None)
            sys.stderr.write(f"credentials: {credentials.reason(exc)}\n")
        answer = {"resolved": dataclasses.asdict(resolved), "found": found.as_json()}
        sys.stdout.write(json.dumps(answer))
        return
    from mailroom.daemon import preflight as checks  # noqa: PLC0415 -- the child's work

    templates = [(str(name), int(n)) for name, n in json.loads(sys.stdin.read() or "[]")]
    config = load(require_database=False)
    findings = checks.run(config, templates)
    sys.stdout.write(json.dumps([f.as_dict() for f in findings]))


if __name__ == "__main__":
    main()
