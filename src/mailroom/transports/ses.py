"""AWS SES API v2 over HTTPS: SendEmail and SendBulkEmail, built and signed here.

botocore resolves the credentials (environment, profile, web identity, instance or
container role, refreshed before they expire) and its CA bundle; the request itself is
built, signed and parsed here. botocore's generic pipeline cost more CPU per call than the
rest of the daemon's send path, and its service model about 20 MiB of memory.

One attempt per call: every retry is the daemon's, with backoff and jitter, an attempt row
and a lease that bounds how long a call may run. Two retry layers would multiply and hide
tries from the attempt log.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio

from mailroom.classify import ENTRY_STATUS, Verdict, classify_entry, classify_error
from mailroom.outbox import Message
from mailroom.transports import Defaults, Result, SetupError
from mailroom.transports.httpclient import Client, HTTPError
from mailroom.transports.sigv4 import Credentials, Signer

SEND_EMAIL = "/v2/email/outbound-emails"
SEND_BULK_EMAIL = "/v2/email/outbound-bulk-emails"
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


def endpoint(region: str, environ: Mapping[str, str] = os.environ) -> str:
    """The SES v2 endpoint: AWS_ENDPOINT_URL_SESV2 or AWS_ENDPOINT_URL as the AWS SDKs
    read them, else the regional (or, with AWS_USE_FIPS_ENDPOINT, FIPS) endpoint."""
    for name in ("AWS_ENDPOINT_URL_SESV2", "AWS_ENDPOINT_URL"):
        url = environ.get(name, "").strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SetupError(f"{name} is not an http(s) URL: {url!r}")
            return url.rstrip("/")
    fips = environ.get("AWS_USE_FIPS_ENDPOINT", "").lower() == "true"
    return f"https://email{'-fips' if fips else ''}.{region}.amazonaws.com"


class SesTransport:
    def __init__(
        self,
        defaults: Defaults,
        *,
        concurrency: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        # botocore's session costs ~60 ms to import; only a daemon that sends pays it
        import botocore.session  # noqa: PLC0415
        from botocore.httpsession import get_cert_path  # noqa: PLC0415

        self.defaults = defaults
        self._user_agent = _user_agent()
        self._session = botocore.session.get_session()
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what other AWS SDKs and
        # Lambda set, so honour it when the former is absent.
        region = self._session.get_config_variable("region") or os.environ.get("AWS_REGION")
        if not region:
            raise SetupError(
                "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION (or a profile's region)"
            )
        self.url = endpoint(region)
        parts = urlsplit(self.url)
        self._signer = Signer(region, SIGNING_NAME)
        # botocore's; resolved now, before the event loop runs, as the provider chain may
        # ask a metadata or STS endpoint. None: none found yet, asked again at each call.
        self._credentials: Any = self._session.get_credentials()
        context = None
        if parts.scheme == "https":
            ca_bundle = self._session.get_config_variable("ca_bundle") or get_cert_path(True)
            context = ssl.create_default_context(cafile=ca_bundle)
        self._http = Client(
            self.url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_idle=concurrency,
            ssl_context=context,
            proxy=_proxy(parts.scheme, parts.hostname or ""),
        )

    def _resolve_credentials(self) -> Credentials | None:
        """botocore's provider chain and refresh; may block on a metadata or STS endpoint."""
        if self._credentials is None:
            self._credentials = self._session.get_credentials()
            if self._credentials is None:
                return None
        frozen = self._credentials.get_frozen_credentials()  # refreshes when near expiry
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    async def _credentials_now(self) -> Credentials | None:
        credentials = self._credentials
        # Temporary credentials are refreshed (in a thread) from 15 minutes before they
        # expire; static ones and fresh temporary ones are read without blocking.
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if credentials is None or (refresh_needed is not None and refresh_needed()):
            return await anyio.to_thread.run_sync(self._resolve_credentials)
        return self._resolve_credentials()

    async def _post(self, path: str, request: dict[str, Any]) -> Result | dict[str, Any]:
        """One signed POST: the parsed answer, or the failure as a Result."""
        from botocore import exceptions as bx  # noqa: PLC0415 -- loaded with the session

        body = encode(request)
        try:
            credentials = await self._credentials_now()
        except bx.BotoCoreError as exc:  # a role or token endpoint that failed
            return _failed("NoCredentials", f"{type(exc).__name__}: {exc}")
        if credentials is None:
            return _failed("NoCredentials", "no AWS credentials found")
        headers = self._signer.headers(credentials, self._http.authority, path, body)
        headers["User-Agent"] = self._user_agent
        try:
            response = await self._http.post(path, headers, body)
        except HTTPError as exc:
            return _failed("NetworkError", str(exc))
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


def _user_agent() -> str:
    import platform  # noqa: PLC0415
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        mine = version("mailroom")
    except PackageNotFoundError:  # a source tree on PYTHONPATH
        mine = "unknown"
    return f"mailroom/{mine} python/{platform.python_version()}"


def _proxy(scheme: str, host: str) -> str | None:
    """HTTPS_PROXY, unless NO_PROXY covers the host, as botocore honours them. Only an
    https endpoint goes through a proxy (a CONNECT tunnel)."""
    from urllib.request import getproxies, proxy_bypass  # noqa: PLC0415

    if not host or proxy_bypass(host):
        return None
    return getproxies().get(scheme) if scheme == "https" else None
