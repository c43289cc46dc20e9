"""An in-process (or stand-alone) HTTP stand-in for the SES v2 API, for tests and benchmarks.

It speaks the rest-json wire format of the botocore ``sesv2`` model (2019-09-27), so a real
boto3 client pointed at ``url`` parses its answers, and its errors, as it parses real SES.
Errors carry the code in the ``x-amzn-ErrorType`` header (what botocore's RestJSONParser reads
first) and ``{"message": ...}`` in the body; the body must be non-empty JSON even for 5xx,
otherwise botocore reports the bare status ("500") as the error code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import signal
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

Json = dict[str, Any]

# fault kind -> (HTTP status, error code, message); statuses follow the botocore model.
FAULTS: dict[str, tuple[int, str, str]] = {
    "throttle": (429, "TooManyRequestsException", "Maximum sending rate exceeded."),
    "limit": (400, "LimitExceededException", "Daily message quota exceeded."),
    "server_error": (500, "InternalFailure", "The request processing has failed."),
    "unavailable": (503, "ServiceUnavailable", "Service is unavailable. Try again later."),
    "sending_paused": (400, "SendingPausedException", "Sending is paused for this account."),
    "account_suspended": (400, "AccountSuspendedException", "The account is suspended."),
    "message_rejected": (400, "MessageRejected", "Email address is not verified."),
    "mail_from_not_verified": (400, "MailFromDomainNotVerifiedException", "Not verified."),
    "not_found": (404, "NotFoundException", "The resource could not be found."),
    "bad_request": (400, "BadRequestException", "The request is invalid."),
}
TIMEOUT = "timeout"
FAULT_KINDS = frozenset(FAULTS) | {TIMEOUT}

# The BulkEmailStatus enum of the model; anything else would be a status real SES never sends.
_STATUS_NAMES = (
    "SUCCESS MESSAGE_REJECTED MAIL_FROM_DOMAIN_NOT_VERIFIED CONFIGURATION_SET_NOT_FOUND "
    "TEMPLATE_NOT_FOUND ACCOUNT_SUSPENDED ACCOUNT_THROTTLED ACCOUNT_DAILY_QUOTA_EXCEEDED "
    "INVALID_SENDING_POOL_NAME ACCOUNT_SENDING_PAUSED CONFIGURATION_SET_SENDING_PAUSED "
    "INVALID_PARAMETER TRANSIENT_FAILURE FAILED"
)
BULK_STATUSES = frozenset(_STATUS_NAMES.split())
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)
MAX_RECIPIENTS = 50
MAX_BULK_ENTRIES = 50


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequestException", message)


class _Aborted(Exception):
    """The stand-in is stopping while a request sleeps: drop the connection unanswered."""


def _json_object(text: object, what: str) -> Json:
    if not text:
        return {}
    try:
        value = json.loads(str(text))
    except ValueError:
        raise _bad(f"{what} is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _bad(f"{what} must be a JSON object.")
    return value


def _tags(tags: object) -> dict[str, str]:
    return {t["Name"]: t["Value"] for t in tags} if isinstance(tags, list) else {}


def _recipients(dest: Json) -> tuple[list[str], list[str], list[str]]:
    to, cc, bcc = (list(dest.get(k) or ()) for k in ("ToAddresses", "CcAddresses", "BccAddresses"))
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise _bad(f"Recipient count exceeds {MAX_RECIPIENTS}.")
    return to, cc, bcc


# When the request being handled on this thread arrived (its request line was read): what
# "received_at" means, so that the stand-in's own parsing and checks are not counted.
_arrival = threading.local()


def _record(op: str, sender: str | None, to: list[str], cc: list[str], bcc: list[str]) -> Json:
    # Every record has every key so tests can index without .get().
    rec: Json = dict.fromkeys(
        ("template", "template_data", "subject", "text", "html", "raw", "configuration_set")
    )
    arrived = getattr(_arrival, "at", None) or time.time()
    rec.update(message_id=str(uuid.uuid4()), operation=op, tags={}, received_at=arrived)
    rec.update({"from": sender, "to": to, "cc": cc, "bcc": bcc})
    return rec


class SesStandin:
    """Fake SES v2 endpoint. All knobs may be changed from any thread while it serves."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        timeout_sleep: float = 30.0,
        max_send_rate: float = 14.0,
        max_24h_send: float = 50000.0,
        credentials: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self._port = host, port
        self.tls = tls  # a server-side context: serve HTTPS
        # access key -> secret: when given, every API request must carry a valid SigV4
        # signature for one of them, checked with botocore's own signer
        self.credentials = credentials
        # Plain float attributes: a rebinding is atomic, so no lock is needed to change them.
        self.latency = latency
        self.timeout_sleep = timeout_sleep
        self.max_send_rate, self.max_24h_send = max_send_rate, max_24h_send
        # The account's set-up, for the preflight reads and the errors SES gives when it is
        # wrong. None: not modelled (anything goes, as before). Set from the test thread.
        self.identities: dict[str, bool] | None = None  # identity -> verified for sending
        self.config_sets: dict[str, list[Json]] | None = None  # name -> event destinations
        self.templates: set[str] | None = None
        self.production = True  # False: the sandbox, recipients must be verified identities
        self.sending_enabled = True
        self.sent_offset = 0.0  # added to SentLast24Hours (mail sent by others)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # deliverability tests (tests/ses_simulator.py): called with each accepted message's
        # record; and further operations, (method, path, query, body) -> answer or None
        self.on_sent: Callable[[Json], None] | None = None
        self.extra_api: Callable[[str, str, str, bytes], Json | None] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> SesStandin:
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping for latency or a "timeout" fault
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def __enter__(self) -> SesStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- knobs ------------------------------------------------------------------------------

    def inject(self, kind: str, count: int = 1) -> None:
        """Queue ``count`` faults; each send call (SendEmail/SendBulkEmail) consumes one."""
        self._check_kind(kind)
        with self._lock:
            self._faults.extend([kind] * count)

    def fail_address(self, substring: str, kind: str) -> None:
        """Every send call with a recipient containing ``substring`` fails with ``kind``."""
        self._check_kind(kind)
        with self._lock:
            self._address_faults.append((substring, kind))

    def entry_status_for(self, address_substring: str, status: str) -> None:
        """Bulk entries whose first To address contains the substring get ``status``."""
        self._check_status(status)
        with self._lock:
            self._address_statuses.append((address_substring, status))

    def entry_status_next(self, status: str, count: int = 1) -> None:
        """The next ``count`` bulk entries, in arrival order, get ``status``."""
        self._check_status(status)
        with self._lock:
            self._next_statuses.extend([status] * count)

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in BULK_STATUSES:
            raise ValueError(f"{status!r} is not a BulkEmailStatus: {sorted(BULK_STATUSES)}")

    def reset(self) -> None:
        """Forget records, counters and every fault rule (latency and timeout_sleep stay)."""
        with self._lock:
            self._sent: list[Json] = []
            self._calls: dict[str, int] = {}
            self._times: list[float] = []
            self._faults: deque[str] = deque()
            self._address_faults: list[tuple[str, str]] = []
            self._address_statuses: list[tuple[str, str]] = []
            self._next_statuses: deque[str] = deque()
            self._connections = 0

    # -- observations -----------------------------------------------------------------------

    def sent(self) -> list[Json]:
        with self._lock:
            return list(self._sent)

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    def request_times(self) -> list[float]:
        with self._lock:
            return list(self._times)

    def connections(self) -> int:
        """TCP connections accepted since reset(): shows whether clients keep them alive."""
        with self._lock:
            return self._connections

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- request handling -------------------------------------------------------------------

    def handle(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str | None, bytes]:
        """Answer one request: (HTTP status, error code or None, JSON body)."""
        path, _, query = path.partition("?")
        try:
            if path.startswith("/_standin/"):
                result: Json | list[Json] = self._control(method, path, body)
            else:
                if self.credentials is not None:
                    signed = f"{path}?{query}" if query else path
                    self._verify_signature(method, signed, body, headers or {})
                extra = self.extra_api and self.extra_api(method, path, query, body)
                result = extra if extra is not None else self._api(method, path, body)
        except ApiError as e:
            return e.status, e.code, json.dumps({"message": e.message}).encode()
        return 200, None, json.dumps(result).encode()

    def _verify_signature(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Recompute the request's SigV4 signature with botocore and compare."""
        assert self.credentials is not None
        match = _AUTHORIZATION.fullmatch(headers.get("Authorization", ""))
        if match is None:
            raise ApiError(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        key, date, region, service, names, signature = match.groups()
        if key not in self.credentials:
            raise ApiError(403, "UnrecognizedClientException", "The security token is invalid.")
        stamp = headers.get("X-Amz-Date", "")
        if not stamp.startswith(date) or service != "ses":
            raise ApiError(403, "SignatureDoesNotMatch", "Bad credential scope.")
        signed = {name: headers.get(name, "") for name in names.split(";")}
        request = AWSRequest(method=method, url=f"http://{signed.get('host', '')}{path}",
                             data=body, headers=signed)  # fmt: skip
        request.context["timestamp"] = stamp
        token = headers.get("X-Amz-Security-Token")
        auth = SigV4Auth(Credentials(key, self.credentials[key], token), service, region)
        expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                                  request)  # fmt: skip
        if expected != signature:
            raise ApiError(403, "SignatureDoesNotMatch", "The request signature we calculated "
                           "does not match the signature you provided.")  # fmt: skip

    def _api(self, method: str, path: str, body: bytes) -> Json:
        op = {
            ("POST", "/v2/email/outbound-emails"): "SendEmail",
            ("POST", "/v2/email/outbound-bulk-emails"): "SendBulkEmail",
            ("GET", "/v2/email/account"): "GetAccount",
        }.get((method, path), "Unknown")
        fault = None
        with self._lock:
            self._calls[op] = self._calls.get(op, 0) + 1
            self._times.append(time.time())
            if op in {"SendEmail", "SendBulkEmail"} and self._faults:
                fault = self._faults.popleft()
        if op == "Unknown" and method == "GET":
            return self._read_setup(urllib.parse.unquote(path))
        if op == "Unknown":
            raise ApiError(404, "NotFoundException", f"No operation for {method} {path}.")
        if op == "GetAccount":
            return self._get_account()
        if self.latency > 0:
            self._sleep(self.latency)
        self._raise_fault(fault)
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            raise _bad("The request body is not valid JSON.") from None
        if not isinstance(request, dict):
            raise _bad("The request body must be a JSON object.")
        if op == "SendEmail":
            return self._send_email(request)
        return self._send_bulk(request)

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Aborted

    def _raise_fault(self, kind: str | None) -> None:
        if kind == TIMEOUT:
            # Answer late rather than never: the call then proceeds (and is recorded), which
            # is what makes a client-side timeout ambiguous against real SES.
            self._sleep(self.timeout_sleep)
        elif kind is not None:
            raise ApiError(*FAULTS[kind])

    def _address_fault(self, addresses: list[str]) -> None:
        if not self._address_faults:  # unlocked peek: the common case stays cheap
            return
        with self._lock:
            rules = list(self._address_faults)
        for substring, kind in rules:
            if any(substring in a for a in addresses):
                self._raise_fault(kind)
                return

    def _get_account(self) -> Json:
        with self._lock:
            sent = len(self._sent) + self.sent_offset
        quota = {"Max24HourSend": self.max_24h_send, "MaxSendRate": self.max_send_rate}
        return {
            "SendQuota": {**quota, "SentLast24Hours": float(sent)},
            "SendingEnabled": self.sending_enabled,
            "ProductionAccessEnabled": self.production,
            "EnforcementStatus": "HEALTHY",
        }

    def _read_setup(self, path: str) -> Json:
        """GetEmailIdentity, GetConfigurationSet(EventDestinations), GetEmailTemplate."""
        parts = path.strip("/").split("/")  # v2 email <collection> <name> [event-destinations]
        kind, name = (parts[2], parts[3]) if len(parts) >= 4 else ("", "")
        if kind == "identities" and self.identities is not None and name in self.identities:
            verified = self.identities[name]
            return {
                "IdentityType": "EMAIL_ADDRESS" if "@" in name else "DOMAIN",
                "VerifiedForSendingStatus": verified,
                "VerificationStatus": "SUCCESS" if verified else "PENDING",
            }
        if kind == "configuration-sets" and self.config_sets is not None:
            if name not in self.config_sets:
                raise ApiError(
                    404, "NotFoundException", f"Configuration set <{name}> does not exist."
                )
            if parts[4:] == ["event-destinations"]:
                return {"EventDestinations": self.config_sets[name]}
            return {"ConfigurationSetName": name, "SendingOptions": {"SendingEnabled": True}}
        if kind == "templates" and self.templates is not None and name in self.templates:
            return {"TemplateName": name, "TemplateContent": {"Subject": "s", "Text": "t"}}
        if kind == "templates":
            raise ApiError(404, "NotFoundException", f"Template {name} does not exist.")
        raise ApiError(404, "NotFoundException", f"{name} does not exist.")

    def _check_setup(self, sender: str, config_set: object, recipients: list[str]) -> None:
        """The errors SES gives for a missing configuration set or unverified identities."""
        if self.config_sets is not None and config_set and config_set not in self.config_sets:
            raise ApiError(
                404, "NotFoundException", f"Configuration set <{config_set}> does not exist."
            )
        if self.identities is None:
            return
        address = sender.rpartition("<")[2].rstrip(">").strip()

        def verified(identity: str) -> bool:
            ids = self.identities or {}
            return ids.get(identity, False) or ids.get(identity.rpartition("@")[2], False)

        failed = [] if verified(address) else [address]
        if not self.production:
            failed += [r for r in recipients if not verified(r)]
        if failed:
            raise ApiError(
                400,
                "MessageRejected",
                "Email address is not verified. The following "
                "identities failed the check in region US-EAST-1: " + ", ".join(failed),
            )

    def _send_email(self, req: Json) -> Json:
        content = req.get("Content") or {}
        kinds = [k for k in ("Simple", "Raw", "Template") if content.get(k)]
        if len(kinds) != 1:
            raise _bad("Content must have exactly one of Simple, Raw or Template.")
        sender = req.get("FromEmailAddress")
        to, cc, bcc = _recipients(req.get("Destination") or {})
        raw = None
        if kinds[0] == "Raw":
            raw = base64.b64decode(content["Raw"].get("Data") or "")
            if not sender or not (to or cc or bcc):
                # SES falls back to the message's own headers for a raw message.
                headers = BytesHeaderParser().parsebytes(raw)
                sender = sender or headers.get("From")
                if not (to or cc or bcc):
                    to, cc, bcc = (
                        [a for _, a in getaddresses(headers.get_all(h, []))]
                        for h in ("To", "Cc", "Bcc")
                    )
        if not sender:
            raise _bad("Missing required parameter FromEmailAddress.")
        if not (to or cc or bcc):
            raise _bad("The message must have at least one recipient.")
        self._address_fault(to + cc + bcc)
        self._check_setup(sender, req.get("ConfigurationSetName"), to + cc + bcc)
        rec = _record("SendEmail", sender, to, cc, bcc)
        rec["raw"] = raw
        if kinds[0] == "Simple":
            simple = content["Simple"]
            body = simple.get("Body") or {}
            rec["subject"] = (simple.get("Subject") or {}).get("Data")
            rec["text"] = (body.get("Text") or {}).get("Data")
            rec["html"] = (body.get("Html") or {}).get("Data")
        elif kinds[0] == "Template":
            template = content["Template"]
            rec["template"] = template.get("TemplateName") or template.get("TemplateArn")
            rec["template_data"] = _json_object(template.get("TemplateData"), "TemplateData")
        rec["configuration_set"] = req.get("ConfigurationSetName")
        rec["tags"] = _tags(req.get("EmailTags"))
        with self._lock:
            self._sent.append(rec)
        if self.on_sent is not None:
            self.on_sent(rec)
        return {"MessageId": rec["message_id"]}

    def _send_bulk(self, req: Json) -> Json:
        entries = req.get("BulkEmailEntries") or []
        if not entries:
            raise _bad("BulkEmailEntries must contain at least one entry.")
        if len(entries) > MAX_BULK_ENTRIES:
            raise _bad(f"BulkEmailEntries cannot contain more than {MAX_BULK_ENTRIES} entries.")
        template = (req.get("DefaultContent") or {}).get("Template")
        if not template:
            raise _bad("Missing required parameter DefaultContent.Template.")
        sender = req.get("FromEmailAddress")
        if not sender:
            raise _bad("Missing required parameter FromEmailAddress.")
        name = template.get("TemplateName") or template.get("TemplateArn")
        default_data = _json_object(template.get("TemplateData"), "TemplateData")
        default_tags = _tags(req.get("DefaultEmailTags"))
        prepared = []
        for entry in entries:
            rec = _record("SendBulkEmail", sender, *_recipients(entry.get("Destination") or {}))
            replacement = (entry.get("ReplacementEmailContent") or {}).get("ReplacementTemplate")
            data = _json_object((replacement or {}).get("ReplacementTemplateData"), "Replacement")
            rec.update(
                template=name,
                template_data={**default_data, **data},
                configuration_set=req.get("ConfigurationSetName"),
                tags={**default_tags, **_tags(entry.get("ReplacementTags"))},
            )
            prepared.append(rec)
        everyone = [a for r in prepared for a in r["to"] + r["cc"] + r["bcc"]]
        self._address_fault(everyone)
        self._check_setup(sender, req.get("ConfigurationSetName"), everyone)
        results: list[Json] = []
        with self._lock:  # one acquisition per call keeps status order equal to arrival order
            for rec in prepared:
                status = self._next_statuses.popleft() if self._next_statuses else "SUCCESS"
                first_to = rec["to"][0] if rec["to"] else ""
                if status == "SUCCESS":
                    rules = self._address_statuses
                    status = next((st for sub, st in rules if sub in first_to), status)
                if status == "SUCCESS":
                    self._sent.append(rec)
                    results.append({"Status": status, "MessageId": rec["message_id"]})
                else:
                    results.append({"Status": status, "Error": f"Stand-in entry status {status}."})
        if self.on_sent is not None:
            accepted = {r.get("MessageId") for r in results}
            for rec in prepared:
                if rec["message_id"] in accepted:
                    self.on_sent(rec)
        return {"BulkEmailEntryResults": results}

    # -- control endpoints, for a test process driving a stand-alone stand-in ----------------

    def _control(self, method: str, path: str, body: bytes) -> Json | list[Json]:
        if (method, path) == ("GET", "/_standin/sent"):
            return [
                {**r, "raw": base64.b64encode(r["raw"]).decode() if r["raw"] else None}
                for r in self.sent()
            ]
        if (method, path) == ("GET", "/_standin/stats"):
            counts = {"sent": len(self.sent()), "connections": self.connections()}
            return {"calls": self.calls(), "faults": self.pending_faults(), **counts}
        if (method, path) == ("POST", "/_standin/reset"):
            self.reset()
            return {}
        if (method, path) == ("POST", "/_standin/config"):
            try:
                self._configure(_json_object(body.decode(), "config"))
            except (ValueError, KeyError, TypeError) as e:
                raise _bad(f"Bad config: {e}") from None
            return {}
        raise ApiError(404, "NotFoundException", f"No control endpoint {method} {path}.")

    def _configure(self, config: Json) -> None:
        if "latency_ms" in config:
            self.latency = float(config["latency_ms"]) / 1000
        if "timeout_sleep" in config:
            self.timeout_sleep = float(config["timeout_sleep"])
        appliers: dict[str, Callable[[Json], None]] = {
            "inject": lambda c: self.inject(c["kind"], int(c.get("count", 1))),
            "fail_address": lambda c: self.fail_address(c["substring"], c["kind"]),
            "entry_status_for": lambda c: self.entry_status_for(c["substring"], c["status"]),
            "entry_status_next": lambda c: self.entry_status_next(c["status"], int(c["count"])),
        }
        for key, apply in appliers.items():
            items = config.get(key) or []
            for item in [items] if isinstance(items, dict) else items:
                apply(item)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default of 5 drops SYNs under benchmark connection bursts

    def __init__(self, address: tuple[str, int], standin: SesStandin) -> None:
        self.standin = standin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        # Idle keep-alive handler threads block in recv; shutting the sockets releases them.
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients vanishing mid-response (read timeouts) are expected, not noteworthy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "sesv2-standin"
    sys_version = ""
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered: headers and body leave in one segment, flushed per request
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)
        self.server.standin._connection_opened()

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):  # flushing to a client that already left
            super().finish()

    def parse_request(self) -> bool:
        # The request line has been read: the request has reached the server. Parsing it
        # is the stand-in's work, not the client's latency.
        _arrival.at = time.time()
        return super().parse_request()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, code, payload = self.server.standin.handle(
                self.command, self.path, body, self.headers
            )
        except _Aborted:
            self.close_connection = True
            return
        except Exception as e:  # a stand-in bug must surface as a 500, not a dead socket
            status, code = 500, "InternalFailure"
            payload = json.dumps({"message": f"stand-in error: {e!r}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if code is not None:
            self.send_header("x-amzn-ErrorType", code)
        self.end_headers()
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an SES v2 stand-in until SIGTERM.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-send-rate", type=float, default=14.0)
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    latency = args.latency_ms / 1000
    with SesStandin(
        args.host, args.port, latency=latency, max_send_rate=args.max_send_rate
    ) as standin:
        print(f"sesv2-standin listening on {standin.url}", flush=True)
        while not done.wait(0.5):
            pass


if __name__ == "__main__":
    main()
