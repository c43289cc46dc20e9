"""SES account health, the pure part: which failures are the account's set-up rather than
the message's, and the shared rate controller's constants. No I/O.

A configuration set or sender identity that does not exist fails every message that uses
it. Dead-lettering them all would turn one set-up mistake into thousands of dead letters
(and token emails whose secret is then gone): instead sending pauses, messages keep their
attempts, and an alert says what to fix. Precision matters both ways: a message that
names its own configuration set or From address, or whose recipient is the unverified
identity (the SES sandbox), is that message's problem and is still dead-lettered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailroom.outbox import Message
from mailroom.transports import Defaults, Result

CONFIG_SET_MISSING = "configuration_set_missing"
SENDER_NOT_VERIFIED = "sender_not_verified"
PROBLEMS = (CONFIG_SET_MISSING, SENDER_NOT_VERIFIED)

_CONFIG_SET_CODES = frozenset({
    "ConfigurationSetDoesNotExist", "ConfigurationSetDoesNotExistException",
    "CONFIGURATION_SET_DOES_NOT_EXIST", "CONFIGURATION_SET_NOT_FOUND",
})  # fmt: skip
_MAIL_FROM_CODES = frozenset({
    "MailFromDomainNotVerifiedException", "MailFromDomainNotVerified",
    "MAIL_FROM_DOMAIN_NOT_VERIFIED",
})  # fmt: skip
_REJECTED_CODES = frozenset({"MessageRejected", "MESSAGE_REJECTED"})
_GENERIC_CODES = frozenset({"NotFoundException", "BadRequestException"})
# "Configuration set <name> does not exist." (SES's wording, v1 and v2)
_CONFIG_SET_TEXT = re.compile(r"configuration set\b.*\b(does not exist|doesn't exist|not found)")
# "Email address is not verified. The following identities failed the check in region
# US-EAST-1: a@example.com, example.com"
_NOT_VERIFIED = re.compile(r"not verified", re.IGNORECASE)
_IDENTITIES = re.compile(r"failed the check in region [^:]*:\s*(.+)$", re.IGNORECASE)

# AIMD of the shared rate: on throttling the rate is halved (one cut per COOLDOWN across
# replicas, never below FLOOR of the quota) and grows back by RECOVERY of the quota per
# second: from half to full in 50 s.
DECREASE = 0.5
FLOOR = 0.05
RECOVERY = 0.01
COOLDOWN = 2.0
THROTTLE_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "ACCOUNT_THROTTLED",
})  # fmt: skip


def failed_identities(detail: str) -> list[str]:
    """The identities an SES "not verified" message names, lower-cased."""
    match = _IDENTITIES.search(detail.strip())
    if not match:
        return []
    return [i.strip().rstrip(".").lower() for i in match[1].split(",") if i.strip()]


def _uses_default_sender(message: Message, defaults: Defaults | None) -> bool:
    if message.from_address is None:
        return True
    return defaults is not None and message.from_address.lower() == defaults.source.lower()


def _uses_default_config_set(message: Message, defaults: Defaults | None) -> bool:
    if message.config_set is None:
        return True
    return defaults is not None and message.config_set == defaults.config_set


def problem(result: Result, message: Message, defaults: Defaults | None) -> str | None:
    """The account problem behind a failed result for ``message``, or None when the
    failure is the message's own (or no set-up problem at all)."""
    code, detail = result.code, result.detail
    if code in _CONFIG_SET_CODES or (
        code in _GENERIC_CODES and _CONFIG_SET_TEXT.search(detail.lower())
    ):
        return CONFIG_SET_MISSING if _uses_default_config_set(message, defaults) else None
    if code in _MAIL_FROM_CODES:
        return SENDER_NOT_VERIFIED if _uses_default_sender(message, defaults) else None
    if code in _REJECTED_CODES and _NOT_VERIFIED.search(detail):
        identities = failed_identities(detail)
        recipients = {a.lower() for a in (*message.to, *message.cc, *message.bcc)}
        # No identity named: nothing says it is the sender, so it stays the message's.
        if identities and any(i not in recipients for i in identities):
            return SENDER_NOT_VERIFIED if _uses_default_sender(message, defaults) else None
    return None


def throttled(results: Sequence[Result]) -> bool:
    """Whether SES refused (part of) a call for the account's sending rate."""
    return any(r.code in THROTTLE_CODES and "daily" not in r.detail.lower() for r in results)


def effective_rate(quota_rate: float | None, configured: float, factor: float) -> float:
    """The shared rate in force, as mailroom.reserve_send computes it (for the gauge)."""
    base = quota_rate if quota_rate is not None else configured
    return max(base, 0.0) * factor
