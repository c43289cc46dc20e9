"""What an SES answer means for a message: sent, retry, dead, pause or defer. No I/O.

Sources: SES v2 SendEmail / SendBulkEmail API references and the "sending quota errors"
page (see docs/architecture.md). Unknown failures retry: with max_attempts bounding the
retries, a wrong guess costs a few attempts, never a lost message.

It lives with the transports, which classify every answer they return; the daemon
(sender, retry, capstep) reads the verdicts and the labels from here.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # transient: back off and try again, burning an attempt
    DEAD = "dead"  # permanent for this message: dead-letter with the reason
    PAUSE = "pause"  # the account cannot send: stop sending for a while, burn nothing
    DEFER = "defer"  # not this message's fault, nor the account's: later, burn nothing


ENTRY_STATUS: dict[str, Verdict] = {
    "SUCCESS": Verdict.SENT,
    "MESSAGE_REJECTED": Verdict.DEAD,
    "MAIL_FROM_DOMAIN_NOT_VERIFIED": Verdict.DEAD,
    # the API reference spells these *_DOES_NOT_EXIST, botocore's model *_NOT_FOUND
    "CONFIGURATION_SET_DOES_NOT_EXIST": Verdict.DEAD,
    "CONFIGURATION_SET_NOT_FOUND": Verdict.DEAD,
    "TEMPLATE_DOES_NOT_EXIST": Verdict.DEAD,
    "TEMPLATE_NOT_FOUND": Verdict.DEAD,
    "INVALID_SENDING_POOL_NAME": Verdict.DEAD,
    "INVALID_PARAMETER": Verdict.DEAD,
    "ACCOUNT_THROTTLED": Verdict.RETRY,
    "TRANSIENT_FAILURE": Verdict.RETRY,
    "FAILED": Verdict.RETRY,
    "ACCOUNT_SUSPENDED": Verdict.PAUSE,
    "ACCOUNT_SENDING_PAUSED": Verdict.PAUSE,
    "ACCOUNT_DAILY_QUOTA_EXCEEDED": Verdict.PAUSE,
    "CONFIGURATION_SET_SENDING_PAUSED": Verdict.DEFER,
}

# Refusals of the daemon itself, not of a message: the JSON (x-amzn-ErrorType) and XML
# (<Code>) answers of SES's front end, AWS's common errors, and what the transport reports
# before any answer. A bare 401/403 comes from a front end or gateway: SES answers them only
# when it refuses the caller; 407 is a proxy refusing the daemon's proxy credentials.
CAUSES: dict[str, frozenset[str]] = {
    "credentials": frozenset(
        [
            "NoCredentials",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidSignatureException",
            "IncompleteSignature",
            "IncompleteSignatureException",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
            "AuthFailure",
            "InvalidToken",
            "ExpiredToken",
            "ExpiredTokenException",
            "TokenRefreshRequired",
            "RequestExpired",
            "401",
        ]
    ),
    "permissions": frozenset(["AccessDeniedException", "AccessDenied", "NotAuthorized", "403"]),
    "proxy": frozenset({"ProxyAuthenticationRequired", "407"}),
    "tls": frozenset({"TLSVerificationFailed"}),  # the CA bundle does not trust the peer
}

ERROR_CODE: dict[str, Verdict] = {
    # throttling and transient service trouble
    "TooManyRequestsException": Verdict.RETRY,
    "Throttling": Verdict.RETRY,
    "ThrottlingException": Verdict.RETRY,
    "LimitExceededException": Verdict.RETRY,
    "InternalFailure": Verdict.RETRY,
    "InternalServerError": Verdict.RETRY,
    "ServiceUnavailable": Verdict.RETRY,
    "ServiceUnavailableException": Verdict.RETRY,
    "RequestTimeout": Verdict.RETRY,
    "RequestTimeoutException": Verdict.RETRY,
    "NetworkError": Verdict.RETRY,
    "InternalError": Verdict.RETRY,  # a transport bug: retried, bounded by max_attempts
    # signing a token at send time
    "NoSecretKey": Verdict.DEFER,  # MAILROOM_SECRET_KEY unset: the operator must set it
    "InvalidSignBlock": Verdict.DEAD,  # a "$sign" block found unsignable at upgrade (0019)
    "TokenNotIssued": Verdict.DEAD,  # a token bound to other recipients: never signed
    "capped": Verdict.DEAD,  # a recipient reached its per-recipient cap (mailroom.daemon.caps)
    # the account cannot send at all
    "SendingPausedException": Verdict.PAUSE,
    "AccountSendingPausedException": Verdict.PAUSE,
    "AccountSuspendedException": Verdict.PAUSE,
    "DailyQuotaMargin": Verdict.PAUSE,  # the daemon stops short of Max24HourSend itself
    # the daemon's credentials, permissions, proxy or CA bundle: an operator must act;
    # the messages are fine
    **{code: Verdict.PAUSE for codes in CAUSES.values() for code in codes},
    # this message cannot be sent as it is
    "MessageRejected": Verdict.DEAD,
    "MailFromDomainNotVerifiedException": Verdict.DEAD,
    "MailFromDomainNotVerified": Verdict.DEAD,
    "BadRequestException": Verdict.DEAD,
    "NotFoundException": Verdict.DEAD,
    "InvalidParameterValue": Verdict.DEAD,
    "TemplateDoesNotExist": Verdict.DEAD,
    "ConfigurationSetDoesNotExist": Verdict.DEAD,
    "RenderingFailure": Verdict.DEAD,  # the data does not fit the template (SES's event)
    # the smtp transport (development): a 5xx reply is final for the message, a 4xx one
    # (greylisting, a full queue) and a connection that failed are worth another try
    "SMTPPermanentError": Verdict.DEAD,
    "SMTPTransientError": Verdict.RETRY,
    # every recipient is on mailroom's suppression list (sender.py; never sent to SES)
    "suppressed": Verdict.DEAD,
    "ConfigurationSetSendingPausedException": Verdict.DEFER,
    "ConfigurationSetSendingPaused": Verdict.DEFER,
}


def classify_entry(status: str) -> Verdict:
    """Verdict for one BulkEmailEntryResult status."""
    return ENTRY_STATUS.get(status, Verdict.RETRY)


def classify_error(code: str, message: str = "") -> Verdict:
    """Verdict for a failed call, from its error code and message."""
    lowered = message.lower()
    if "daily" in lowered and "quota" in lowered:
        # v1 "Daily message quota exceeded" arrives as Throttling; retrying within
        # minutes only burns attempts, so treat it as the account stop it is.
        return Verdict.PAUSE
    if code.startswith("AccessDenied"):  # AccessDeniedForDependencyException and kin
        return Verdict.PAUSE
    # Unknown codes, 5xx and 429 included, retry: bounded by max_attempts.
    return ERROR_CODE.get(code, Verdict.RETRY)


def smtp_reply(code: int) -> tuple[Verdict, str]:
    """Verdict and label for an SMTP server's refusal (RFC 5321: 5yz permanent, 4yz
    transient); anything else is not a refusal SMTP defines: retried."""
    if 500 <= code <= 599:
        return Verdict.DEAD, "SMTPPermanentError"
    return Verdict.RETRY, "SMTPTransientError"


def reason_class(code: str) -> str:
    """A short, PII-free label for metrics and logs."""
    if code in ERROR_CODE or code in ENTRY_STATUS:
        return code
    return "AccessDenied" if code.startswith("AccessDenied") else "other"


def pause_cause(code: str) -> str:
    """Who must act on a pause: credentials, permissions, proxy, tls, or the SES account."""
    if code.startswith("AccessDenied"):
        return "permissions"
    return next((cause for cause, codes in CAUSES.items() if code in codes), "account")
