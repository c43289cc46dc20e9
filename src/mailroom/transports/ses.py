"""AWS SES API v2: SendEmail and SendBulkEmail, built, signed and read here.

botocore makes every configuration decision a boto3 ``sesv2`` client makes (awsconfig.py:
endpoint, proxy, CA bundle) and resolves the credentials (credentials.py: environment,
profile, web identity, instance or container role, refreshed before they expire; for the
daemon in child processes, so that botocore is not in its memory); exchange.py carries
the requests over asyncio. The JSON and the SigV4 signature (sigv4.py) are built here:
botocore's generic per-call pipeline cost more CPU than the rest of the daemon's send path.

One attempt per call: every retry is the daemon's, with backoff and jitter, an attempt row
and a lease that bounds how long a call may run. Two retry layers would multiply and hide
tries from the attempt log.
"""

from __future__ import annotations

import base64
import html
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio

from mailroom.outbox import Message
from mailroom.transports import Defaults, Result, SetupError, awsconfig
from mailroom.transports.classify import ENTRY_STATUS, Verdict, classify_entry, classify_error
from mailroom.transports.credentials import CredentialError, InProcess, Source
from mailroom.transports.exchange import Exchange, ExchangeError
from mailroom.transports.sigv4 import Credentials, Signer

SEND_EMAIL = awsconfig.SEND_EMAIL
SEND_BULK_EMAIL = awsconfig.SEND_BULK_EMAIL
SIGNING_NAME = "ses"  # SES v2 signs as "ses", not "sesv2"


def _destination(message: Message) -> dict[str, list[str]]:
    destination = {"ToAddresses": message.to}
    if message.cc:
        destination["CcAddresses"] = message.cc
    if message.bcc:
        destination["BccAddresses"] = message.bcc
    return destination


def _common(message: Message, defaults: Defaults) -> dict[str, Any]:
    request: dict[str, Any] = {"FromEmailAddress": message.from_address or defaults.source}
    config_set = message.config_set or defaults.config_set
    if config_set:
        request["ConfigurationSetName"] = config_set
    if message.reply_to:
        request["ReplyToAddresses"] = message.reply_to
    return request


def bulk_request(messages: Sequence[Message], defaults: Defaults) -> dict[str, Any]:
    """SendBulkEmail parameters for messages that share a bulk key."""
    first = messages[0]
    request = _common(first, defaults)
    request["DefaultContent"] = {"Template": {"TemplateName": first.template, "TemplateData": "{}"}}
    request["BulkEmailEntries"] = [
        {
            "Destination": _destination(m),
            "ReplacementEmailContent": {
                "ReplacementTemplate": {"ReplacementTemplateData": m.template_data or "{}"}
            },
        }
        for m in messages
    ]
    return request


def single_request(message: Message, defaults: Defaults) -> dict[str, Any]:
    """SendEmail parameters for a simple or raw message (raw data as bytes)."""
    request = _common(message, defaults)
    request["Destination"] = _destination(message)
    if message.raw_mime is not None:
        request["Content"] = {"Raw": {"Data": message.raw_mime}}
        return request
    body: dict[str, Any] = {}
    if message.body_text is not None:
        body["Text"] = {"Data": message.body_text, "Charset": "UTF-8"}
    if message.body_html is not None:
        body["Html"] = {"Data": message.body_html, "Charset": "UTF-8"}
    request["Content"] = {
        "Simple": {"Subject": {"Data": message.subject, "Charset": "UTF-8"}, "Body": body}
    }
    return request


def encode(request: dict[str, Any]) -> bytes:
    """A request as the rest-json wire body: blobs (raw MIME) travel base64-encoded."""
    raw = request.get("Content", {}).get("Raw")
    if raw is not None:
        data = base64.b64encode(raw["Data"]).decode("ascii")
        request = {**request, "Content": {"Raw": {"Data": data}}}
    return json.dumps(request, separators=(",", ":")).encode("utf-8")


def error_of(status: int, headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """(code, message) of a rest-json error answer (header names in lower case), read as
    botocore reads it: the code from ``x-amzn-ErrorType``, else the body's ``__type`` or
    ``code``; else the status."""
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    if not isinstance(parsed, dict):
        parsed = {}
    code = headers.get("x-amzn-errortype", "").split(":")[0]
    if not code:
        code = str(parsed.get("__type") or parsed.get("code") or parsed.get("Code") or "")
        code = code.rsplit("#", 1)[-1]
    message = str(parsed.get("message") or parsed.get("Message") or "")
    if not parsed and body.lstrip().startswith(b"<"):
        # AWS's front end answers some refusals (a bad signature, an unknown key) in the
        # query protocol's XML: <ErrorResponse><Error><Code>…</Code><Message>…</Message>.
        # Two fields are read by pattern: no XML parser is pointed at a peer's body.
        text = body[:4096].decode("utf-8", "replace")
        xml_code, xml_message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
        code = code or (xml_code.group(1).strip() if xml_code else "")
        message = html.unescape(xml_message.group(1)).strip() if xml_message else ""
        if xml_code or xml_message:
            return code or str(status), message
    if not message and not parsed and body:
        message = body[:200].decode("utf-8", "replace")  # a proxy's HTML page, say
    return code or str(status), message


_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,1000})</Message>")


class SesTransport:
    def __init__(
        self,
        defaults: Defaults,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
        resolved: awsconfig.Resolved | None = None,
        credentials: Source | None = None,
    ) -> None:
        """``resolved`` and ``credentials``: botocore's decisions and credentials found
        elsewhere (the daemon asks child processes: botocore stays out of its memory);
        None: a botocore session in this process finds them."""
        if resolved is None or credentials is None:
            # botocore's session costs ~60 ms and ~8 MiB: not in a daemon (its start-up
            # children answer), nor in the debug transport or the CLI
            import botocore.session  # noqa: PLC0415

            session = botocore.session.get_session()
            resolved = resolved or awsconfig.resolve(session)
            # botocore's chain, resolved now, before the event loop runs (it may ask a
            # metadata or STS endpoint)
            credentials = credentials or InProcess(session)
        self.defaults = defaults
        self._user_agent = user_agent()
        self.settings = resolved
        self.url = resolved.endpoint
        parts = urlsplit(self.url)
        self.authority = authority_of(parts.scheme, parts.hostname or "", parts.port)
        self._signer = Signer(resolved.region, SIGNING_NAME)
        self._credentials = credentials
        # Each operation's URL as botocore built it (an endpoint's path prefix kept), and
        # the path as botocore's SigV4 signer canonicalises it.
        self._targets = {
            path: (self.url + path, resolved.signed_paths[path])
            for path in (SEND_EMAIL, SEND_BULK_EMAIL)
        }
        self._http = exchange_for(
            resolved, concurrency=concurrency, connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )  # fmt: skip

    async def _credentials_within(self, budget: float) -> Credentials | Result:
        with anyio.move_on_after(budget):
            try:
                credentials = await self._credentials.get(budget)
            except CredentialError as exc:  # a role or token endpoint that failed
                return _failed("NoCredentials", str(exc))
            if credentials is None:
                return _failed("NoCredentials", "no AWS credentials found")
            return credentials
        return _failed("NoCredentials", f"no AWS credentials within {budget:g} s")

    async def _post(self, path: str, request: dict[str, Any]) -> Result | dict[str, Any]:
        """One signed POST: the parsed answer, or the failure as a Result."""
        body = encode(request)
        # The call's budget (connect + read: what the lease is sized for) covers waiting
        # for credentials too: a slow role endpoint shortens the exchange, never the lease.
        budget = self._http.connect_timeout + self._http.read_timeout
        started = time.monotonic()
        credentials = await self._credentials_within(budget)
        if isinstance(credentials, Result):
            return credentials
        left = budget - (time.monotonic() - started)
        url, canonical_path = self._targets[path]
        headers = self._signer.headers(credentials, self.authority, canonical_path, body)
        headers["Host"] = self.authority  # the signed value, whatever the client would send
        headers["User-Agent"] = self._user_agent
        try:
            response = await self._http.post(url, headers, body, budget=left)
        except ExchangeError as exc:
            return _failed(exc.code, exc.detail)
        if response.status >= 300:
            code, message = error_of(response.status, response.headers, response.body)
            return _failed(code, message)
        try:
            parsed = json.loads(response.body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return _failed("InvalidResponse", f"HTTP {response.status}: not a JSON object")
        return parsed

    async def send_bulk(self, messages: Sequence[Message]) -> list[Result]:
        answer = await self._post(SEND_BULK_EMAIL, bulk_request(messages, self.defaults))
        if isinstance(answer, Result):
            return [answer] * len(messages)
        entries = answer.get("BulkEmailEntryResults")
        if not isinstance(entries, list):
            entries = []
        results = []
        for position in range(len(messages)):
            entry = entries[position] if position < len(entries) else None
            if not isinstance(entry, dict):
                results.append(Result(Verdict.RETRY, code="MissingEntryResult"))
                continue
            status = str(entry.get("Status", "FAILED"))
            verdict = classify_entry(status)
            code = status if status in ENTRY_STATUS else "FAILED"
            if verdict is Verdict.SENT:
                results.append(Result(verdict, provider_id=_text(entry.get("MessageId"))))
            else:
                results.append(Result(verdict, code=code, detail=str(entry.get("Error") or "")))
        return results

    async def send_one(self, message: Message) -> Result:
        answer = await self._post(SEND_EMAIL, single_request(message, self.defaults))
        if isinstance(answer, Result):
            return answer
        return Result(Verdict.SENT, provider_id=_text(answer.get("MessageId")))

    async def aclose(self) -> None:
        await self._http.aclose()


def _failed(code: str, detail: str) -> Result:
    return Result(classify_error(code, detail), code=code, detail=detail, whole_call=True)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def exchange_for(
    resolved: awsconfig.Resolved, *, concurrency: int, connect_timeout: float,
    read_timeout: float,
) -> Exchange:  # fmt: skip
    """The HTTP exchange to an AWS endpoint with the proxy and CA bundle botocore picked
    (SES's and the events reader's SQS calls alike)."""
    context = None
    if resolved.ca_bundle is not None:
        try:
            context = ssl.create_default_context(cafile=resolved.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise SetupError(f"cannot load the CA bundle {resolved.ca_bundle}: {exc}") from exc
    return Exchange(
        concurrency=concurrency,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        ssl_context=context,
        proxy=resolved.proxy,
        proxy_headers=resolved.proxy_headers,
    )


def user_agent() -> str:
    """What mailroom sends as User-Agent to AWS (SES and SQS alike)."""
    import platform  # noqa: PLC0415
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        mine = version("mailroom")
    except PackageNotFoundError:  # a source tree on PYTHONPATH
        mine = "unknown"
    return f"mailroom/{mine} python/{platform.python_version()}"


def authority_of(scheme: str, host: str, port: int | None) -> str:
    """host[:port] as the Host header and the signature carry it: no default port, IPv6 in
    brackets (as botocore's signer and HTTP clients write it)."""
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port is None or port == default else f"{shown}:{port}"
