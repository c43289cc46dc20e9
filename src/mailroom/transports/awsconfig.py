"""Where and how to reach SES, as botocore decides it for a boto3 ``sesv2`` client: asked
of botocore once at start-up, never re-implemented here.

The endpoint is what a real botocore ``sesv2`` client would call: botocore reads
``AWS_ENDPOINT_URL_SESV2`` / ``AWS_ENDPOINT_URL`` and the config file's ``endpoint_url``
(services sections included), honours ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, keeps an
endpoint's path, and runs the service's endpoint rules (partitions such as ``aws-cn``,
FIPS, dual-stack). The client is asked to send one unsigned ``SendEmail`` and the request
is caught before it leaves (botocore's ``before-send`` event): its URL is the answer. The
proxy comes from botocore's own helpers (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``
entries with or without a port, credentials in the proxy URL), the CA bundle as botocore
picks it. Loading the ``sesv2`` service model for that costs about 11 MiB of memory once
(docs/architecture.md); nothing of the client is used afterwards.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from mailroom.transports import SetupError

SEND_EMAIL = "/v2/email/outbound-emails"
SEND_BULK_EMAIL = "/v2/email/outbound-bulk-emails"


@dataclass(frozen=True, slots=True)
class Resolved:
    region: str
    endpoint: str  # scheme://host[:port][/prefix]: the operation's path is appended to it
    proxy: str | None = None  # the proxy's URL without its credentials
    proxy_headers: dict[str, str] = field(default_factory=dict)  # Proxy-Authorization
    ca_bundle: str | None = None  # the file https peers are verified against
    # each operation's path as botocore's SigV4 signer canonicalises it (prefix included)
    signed_paths: dict[str, str] = field(default_factory=dict)


class _Caught(Exception):  # not an error: carries the request out of botocore
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


def _catch(request: Any, **_: Any) -> None:
    raise _Caught(str(request.url))


def configured_region(session: Any = None) -> str | None:
    """The region every AWS client of mailroom uses (SES, SQS, the preflight, the
    suppression import): botocore's (AWS_DEFAULT_REGION, the profile), else AWS_REGION,
    which other AWS SDKs and Lambda set and botocore does not read. ``session``: a
    botocore session (a new one if None)."""
    if session is None:
        from botocore.session import get_session  # noqa: PLC0415 -- with the AWS clients

        session = get_session()
    return str(session.get_config_variable("region") or os.environ.get("AWS_REGION") or "") or None


def region_of(session: Any) -> str:
    region = configured_region(session)
    if not region:
        raise SetupError(
            "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION (or a profile's region)"
        )
    return str(region)


def resolve(session: Any) -> Resolved:
    """botocore's decisions for ``session`` (a botocore session); may read config files."""
    from botocore import UNSIGNED  # noqa: PLC0415 -- botocore loads with the transport
    from botocore.config import Config  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415
    from botocore.utils import normalize_url_path  # noqa: PLC0415

    region = region_of(session)
    config = Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1})
    try:
        client = session.create_client("sesv2", region_name=region, config=config)
        client.meta.events.register("before-send.sesv2.SendEmail", _catch)
        client.send_email(
            FromEmailAddress="probe@example.com",
            Destination={},
            Content={"Simple": {"Subject": {"Data": ""}, "Body": {}}},
        )
    except _Caught as caught:
        url = caught.url
    except (BotoCoreError, ValueError) as exc:  # ValueError: botocore's "Invalid endpoint"
        raise SetupError(f"cannot resolve the SES endpoint: {exc}") from exc
    else:  # pragma: no cover -- the hook always raises
        raise SetupError("botocore sent the probe request instead of handing it over")
    if not url.endswith(SEND_EMAIL):
        raise SetupError(f"unexpected SendEmail URL from botocore: {url!r}")
    endpoint = url[: -len(SEND_EMAIL)]

    prefix = urlsplit(endpoint).path
    return Resolved(
        region=region,
        endpoint=endpoint,
        **_network(session, client, url),
        signed_paths={
            path: quote(normalize_url_path(prefix + path), safe="/~")
            for path in (SEND_EMAIL, SEND_BULK_EMAIL)
        },
    )


def queue_region(queue_url: str) -> str | None:
    """The region in a standard SQS queue URL (sqs.REGION.amazonaws.com[.cn], or the
    legacy REGION.queue.amazonaws.com); None for any other host. Pure."""
    match = _QUEUE_HOST.match(queue_url)
    return (match[1] or match[2]) if match else None


_QUEUE_HOST = re.compile(
    r"https://(?:sqs[.-]([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?(?:/|$)"
)


def resolve_sqs(session: Any, queue_url: str) -> Resolved:
    """botocore's decisions for an ``sqs`` client reading ``queue_url`` (the events
    reader's): the region as every mailroom client reads it, else the queue URL's; the
    endpoint a ReceiveMessage would be POSTed to (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL,
    the config file, the endpoint rules); the proxy and CA bundle as for SES.
    ``signed_paths["/"]``: the endpoint's path as the signer canonicalises it."""
    from botocore import UNSIGNED  # noqa: PLC0415 -- botocore loads in the child only
    from botocore.config import Config  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415
    from botocore.utils import normalize_url_path  # noqa: PLC0415

    region = configured_region(session) or queue_region(queue_url)
    if not region:
        raise SetupError(
            "no AWS region for the events queue: set AWS_REGION or AWS_DEFAULT_REGION"
            " (or use the queue's standard https://sqs.REGION.amazonaws.com URL)"
        )
    config = Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1})
    try:
        client = session.create_client("sqs", region_name=region, config=config)
        client.meta.events.register("before-send.sqs.ReceiveMessage", _catch)
        client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)
    except _Caught as caught:
        url = caught.url
    except (BotoCoreError, ValueError) as exc:  # ValueError: botocore's "Invalid endpoint"
        raise SetupError(f"cannot resolve the SQS endpoint: {exc}") from exc
    else:  # pragma: no cover -- the hook always raises
        raise SetupError("botocore sent the probe request instead of handing it over")
    path = urlsplit(url).path or "/"
    return Resolved(
        region=region,
        endpoint=url,
        **_network(session, client, url),
        signed_paths={"/": quote(normalize_url_path(path), safe="/~")},
    )


def _network(session: Any, client: Any, url: str) -> dict[str, Any]:
    """Proxy, its headers and the CA bundle for requests to ``url`` as botocore picks them."""
    from botocore.httpsession import ProxyConfiguration, get_cert_path  # noqa: PLC0415
    from botocore.utils import get_environ_proxies  # noqa: PLC0415

    # As botocore's EndpointCreator and URLLib3Session do: the proxies for the client's
    # endpoint, then the one for the request's scheme; its credentials become a header.
    proxies = ProxyConfiguration(proxies=get_environ_proxies(client.meta.endpoint_url))
    proxy = proxies.proxy_url_for(url)
    proxy_headers = proxies.proxy_headers_for(proxy) if proxy else {}
    ca_bundle = None
    if urlsplit(url).scheme == "https":
        # botocore's order: the ca_bundle setting (AWS_CA_BUNDLE, the config file), then
        # REQUESTS_CA_BUNDLE, then its default bundle (certifi when installed).
        verify = session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE")
        ca_bundle = verify or get_cert_path(True)
    return {
        "proxy": _without_credentials(proxy) if proxy else None,
        "proxy_headers": dict(proxy_headers),
        "ca_bundle": ca_bundle,
    }


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
