"""`mailroom check --ses`: is the SES account ready for go-live? Each check passes, warns
or fails, with what to do. The daemon logs the same findings at start.

Blocking boto3 calls (a real ``sesv2`` client with the daemon's AWS settings): the CLI
runs them directly, the daemon in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailroom.config.settings import Config

if TYPE_CHECKING:
    from mailroom.outbox import Outbox

PASS, WARN, FAIL = "pass", "warn", "fail"
SANDBOX_ACTION = (
    "request production access (SES console > Account dashboard, or aws sesv2 "
    "put-account-details --production-access-enabled ...)"
)


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: str  # pass | warn | fail
    detail: str
    action: str = ""  # what to do; empty when it passes

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def client(config: Config) -> Any:
    """A boto3 ``sesv2`` client as the daemon's transport sees SES: region, credentials and
    AWS_ENDPOINT_URL_SESV2 from the standard AWS variables."""
    import boto3  # noqa: PLC0415 -- heavy; only when SES is asked
    from botocore.config import Config as BotoConfig  # noqa: PLC0415

    boto = BotoConfig(
        connect_timeout=config.ses_connect_timeout,
        read_timeout=config.ses_read_timeout,
        retries={"mode": "standard", "max_attempts": 2},
    )
    from mailroom.transports.awsconfig import configured_region  # noqa: PLC0415

    return boto3.session.Session().client("sesv2", region_name=configured_region(), config=boto)


def _error(exc: Exception) -> tuple[str, str]:
    """(code, message) of a botocore error; the exception's type for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error") or {}
        return str(err.get("Code") or ""), str(err.get("Message") or "")
    return type(exc).__name__, str(exc)


_CREDENTIAL_CODES = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "MissingAuthenticationTokenException",
    "NoCredentialsError",
}


_UNREACHABLE_CODES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                      "ConnectionClosedError", "NoRegionError"}  # fmt: skip


def _account(ses: Any, config: Config) -> tuple[list[Finding], bool]:
    """Credentials, region, sending enabled, sandbox, quota. False: SES unreachable, so
    the other checks would only repeat the failure."""
    region = ses.meta.region_name
    try:
        answer = ses.get_account()
    except Exception as exc:  # any boto3 failure is a finding, never a crash
        code, message = _error(exc)
        if code in _CREDENTIAL_CODES:
            action = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the role or profile"
        elif code in {"AccessDeniedException", "AccessDenied"}:
            action = "allow ses:GetAccount (and the other read calls) in the IAM policy"
        else:
            action = "check AWS_REGION and network access to the SES endpoint"
        detail = f"GetAccount in {region} failed: {code}: {message[:200]}"
        # Without credentials or a reachable endpoint every other check fails the same way;
        # any other failure (a permission, an endpoint that lacks GetAccount) is this
        # check's alone.
        reachable = code not in _CREDENTIAL_CODES and code not in _UNREACHABLE_CODES
        check = "credentials" if code in _CREDENTIAL_CODES else "account"
        return [Finding(check, FAIL, detail, action)], reachable
    findings = [Finding("credentials", PASS, f"GetAccount answered in {region}")]
    if answer.get("SendingEnabled") is False:
        findings.append(
            Finding(
                "sending_enabled",
                FAIL,
                "SES sending is disabled for the account",
                "find out why in the SES console (account "
                "dashboard, reputation) and re-enable sending",
            )
        )
    else:
        findings.append(Finding("sending_enabled", PASS, "sending is enabled"))
    quota = answer.get("SendQuota") or {}
    numbers = (
        f"{quota.get('MaxSendRate', '?')}/s, {quota.get('Max24HourSend', '?')} per 24 h, "
        f"{quota.get('SentLast24Hours', '?')} sent in the last 24 h"
    )
    if answer.get("ProductionAccessEnabled"):
        findings.append(Finding("production_access", PASS, f"production account: {numbers}"))
    else:
        findings.append(
            Finding(
                "production_access",
                WARN,
                f"sandbox account: only verified recipients, {numbers}",
                SANDBOX_ACTION,
            )
        )
    enforcement = answer.get("EnforcementStatus")
    if enforcement and enforcement != "HEALTHY":
        status = FAIL if enforcement == "SHUTDOWN" else WARN
        findings.append(
            Finding(
                "enforcement",
                status,
                f"enforcement status {enforcement}",
                "see the SES reputation dashboard",
            )
        )
    max_rate = quota.get("MaxSendRate")
    if config.send_rate > 0 and max_rate and config.send_rate > float(max_rate):
        findings.append(
            Finding(
                "send_rate",
                WARN,
                f"MAILROOM_SEND_RATE={config.send_rate:g} "
                f"exceeds the account's MaxSendRate {max_rate}",
                "lower it, or set MAILROOM_SEND_RATE=auto",
            )
        )
    return findings, True


def _verified(answer: dict[str, Any]) -> bool:
    return bool(answer.get("VerifiedForSendingStatus")) or (
        answer.get("VerificationStatus") == "SUCCESS"
    )


def _identity(ses: Any, source: str) -> Finding:
    domain = source.rpartition("@")[2]
    checked = []
    for identity in dict.fromkeys((source, domain)):
        try:
            answer = ses.get_email_identity(EmailIdentity=identity)
        except Exception as exc:  # NotFound: try the domain; anything else: say so
            code, message = _error(exc)
            if code != "NotFoundException":
                return Finding(
                    "sender_identity",
                    WARN,
                    f"could not read identity {identity}: {code}: {message[:200]}",
                    "allow ses:GetEmailIdentity to check it",
                )
            checked.append(f"{identity}: not an identity")
            continue
        if _verified(answer):
            return Finding("sender_identity", PASS, f"{source} is verified (identity {identity})")
        checked.append(f"{identity}: {answer.get('VerificationStatus', 'not verified')}")
    return Finding(
        "sender_identity",
        FAIL,
        f"MAILROOM_SES_SOURCE {source} cannot send: " + "; ".join(checked),
        f"verify {domain} (DNS records) or {source}: aws sesv2 "
        f"create-email-identity --email-identity {domain}",
    )


def _config_set(ses: Any, name: str) -> list[Finding]:
    if not name:
        return [
            Finding(
                "configuration_set",
                WARN,
                "MAILROOM_SES_CONFIG_SET is empty: no "
                "delivery, bounce or complaint events will be published",
                "create a configuration set with an event destination and set "
                "MAILROOM_SES_CONFIG_SET",
            )
        ]
    try:
        answer = ses.get_configuration_set(ConfigurationSetName=name)
    except Exception as exc:  # NotFound is the finding; anything else too
        code, message = _error(exc)
        if code == "NotFoundException":
            return [
                Finding(
                    "configuration_set",
                    FAIL,
                    f"configuration set {name} does not exist: every send would fail",
                    f"aws sesv2 create-configuration-set "
                    f"--configuration-set-name {name}, or fix MAILROOM_SES_CONFIG_SET",
                )
            ]
        return [
            Finding(
                "configuration_set",
                WARN,
                f"could not read configuration set {name}: {code}: {message[:200]}",
                "allow ses:GetConfigurationSet",
            )
        ]
    findings = [Finding("configuration_set", PASS, f"configuration set {name} exists")]
    sending = (answer.get("SendingOptions") or {}).get("SendingEnabled")
    if sending is False:
        findings.append(
            Finding(
                "configuration_set_sending",
                WARN,
                f"sending is paused for configuration set {name}",
                "aws sesv2 put-configuration-set-sending-options --sending-enabled",
            )
        )
    try:
        destinations = ses.get_configuration_set_event_destinations(ConfigurationSetName=name)
    except Exception as exc:  # the check cannot be made: say so, do not guess
        code, message = _error(exc)
        findings.append(
            Finding(
                "event_destination",
                WARN,
                f"could not list the event destinations of {name}: {code}: {message[:120]}",
                "allow ses:GetConfigurationSetEventDestinations",
            )
        )
        return findings
    enabled = [d for d in destinations.get("EventDestinations") or [] if d.get("Enabled")]
    if not enabled:
        findings.append(
            Finding(
                "event_destination",
                FAIL,
                f"configuration set {name} has no "
                "enabled event destination: bounces and complaints go unheard",
                "add an SNS or EventBridge destination for at least BOUNCE and "
                "COMPLAINT (docs/account-health.md)",
            )
        )
    else:
        types = sorted({t for d in enabled for t in d.get("MatchingEventTypes") or []})
        findings.append(
            Finding(
                "event_destination",
                PASS,
                f"{len(enabled)} enabled event destination(s): {', '.join(types)}",
            )
        )
    return findings


def _templates(ses: Any, templates: Sequence[tuple[str, int]] | None) -> list[Finding]:
    if templates is None:
        return [
            Finding(
                "templates",
                WARN,
                "pending messages' templates not checked: no database",
                "set MAILROOM_DATABASE_URL to check them",
            )
        ]
    findings = []
    for name, count in templates:
        try:
            ses.get_email_template(TemplateName=name)
        except Exception as exc:  # NotFound is the finding; anything else: cannot tell
            code, message = _error(exc)
            if code == "NotFoundException":
                findings.append(
                    Finding(
                        f"template:{name}",
                        FAIL,
                        f"template {name} does not exist; {count} pending message(s) use it",
                        f"aws sesv2 create-email-template --template-name {name} ...",
                    )
                )
            else:
                findings.append(
                    Finding(
                        f"template:{name}",
                        WARN,
                        f"could not read template {name}: {code}: {message[:120]}",
                        "allow ses:GetEmailTemplate",
                    )
                )
            continue
        findings.append(
            Finding(f"template:{name}", PASS, f"template {name} exists ({count} pending)")
        )
    if not templates:
        findings.append(Finding("templates", PASS, "no pending message uses a template"))
    return findings


def _template_files(ses: Any, directory: Path | None) -> list[Finding]:
    """MAILROOM_TEMPLATES_DIR against SES: each template folder that SES lacks (a message
    using it would be dead-lettered) or holds differently (the files were not pushed)."""
    if directory is None:
        return []
    from mailroom.templates import compare, files, remote  # noqa: PLC0415 -- only when set

    push = "run `mailroom templates diff`, then `mailroom templates push`"
    try:
        local = files.load_all(directory)
        changes = compare.plan(local, {name: remote.get(ses, name) for name in local})
    except files.TemplateFileError as exc:
        return [Finding("template_files", FAIL, f"MAILROOM_TEMPLATES_DIR: {exc}", "fix the file")]
    except remote.RemoteError as exc:
        return [
            Finding(
                "template_files",
                WARN,
                f"could not compare: {exc}"[:200],
                "allow ses:GetEmailTemplate",
            )
        ]
    findings = []
    for c in changes:
        if c.action == compare.CREATE:
            findings.append(
                Finding(
                    f"template_files:{c.name}",
                    FAIL,
                    f"template {c.name} is in {directory} but not in SES",
                    push,
                )
            )
        elif c.action == compare.UPDATE:
            findings.append(
                Finding(
                    f"template_files:{c.name}",
                    WARN,
                    f"template {c.name} in SES differs from the files ({', '.join(c.parts)})",
                    push,
                )
            )
    if not findings:
        findings.append(
            Finding(
                "template_files",
                PASS,
                f"SES holds the {len(changes)} template(s) of {directory} as they are",
            )
        )
    return findings


def run(
    config: Config,
    templates: Sequence[tuple[str, int]] | None,
    make_client: Callable[[Config], Any] = client,
) -> list[Finding]:
    """Every check, in order. Never raises for an SES answer: each is a finding."""
    try:
        ses = make_client(config)
    except Exception as exc:  # e.g. no region: botocore raises on client creation
        code, message = _error(exc)
        return [
            Finding(
                "credentials",
                FAIL,
                f"cannot create an SES client: {code}: {message}",
                "set AWS_REGION (and credentials)",
            )
        ]
    findings, reachable = _account(ses, config)
    if not reachable:
        return findings  # every other check would repeat the same failure
    findings.append(_identity(ses, config.ses_source))
    findings.extend(_config_set(ses, config.ses_config_set))
    findings.extend(_templates(ses, templates))
    findings.extend(_template_files(ses, config.templates_dir))
    return findings


async def pending_templates(outbox: Outbox) -> list[tuple[str, int]]:
    """Templates that messages still to be sent use, with how many use each."""
    from mailroom.outbox import query  # noqa: PLC0415 -- keeps this module's import light

    async with outbox.connection() as conn:
        cur = await conn.execute(query("preflight_templates"), {"queue": outbox.queue})
        return [(str(name), int(n)) for name, n in await cur.fetchall()]


def pending_templates_sync(conn: Any, queue: str) -> list[tuple[str, int]]:
    from mailroom.outbox import query  # noqa: PLC0415

    rows = conn.execute(query("preflight_templates"), {"queue": queue}).fetchall()
    return [(str(name), int(n)) for name, n in rows]


def report(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.status.upper():<4}  {f.check}: {f.detail}")
        if f.action:
            lines.append(f"      -> {f.action}")
    failed = sum(f.status == FAIL for f in findings)
    warned = sum(f.status == WARN for f in findings)
    lines.append(f"{failed} failed, {warned} warning(s), {len(findings) - failed - warned} passed")
    return "\n".join(lines)
