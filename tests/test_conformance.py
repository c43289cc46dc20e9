"""Conformance against boto3 itself: for each row of AWS settings, mailroom calls the URL a
boto3 ``sesv2`` client configured the same way calls, makes the same proxy decision on
the wire, trusts the same CA bundle and signs for the same scope. A new AWS setting needs
one row here, not an implementation in mailroom (botocore decides: awsconfig.py)."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.httpsession import get_cert_path

from mailroom.transports import Defaults, SetupError
from mailroom.transports.ses import SEND_EMAIL, SesTransport
from test_ses_transport import message

DEFAULTS = Defaults(source="noreply@example.com", config_set=None)
SIMPLE = {
    "FromEmailAddress": "a@example.com",
    "Destination": {"ToAddresses": ["b@example.com"]},
    "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "t"}}}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[dict[str, str], str], None]:
    """Sets a row's environment (nothing else of AWS's) and its config file."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in (
            "https_proxy", "http_proxy", "no_proxy", "all_proxy", "requests_ca_bundle",
        ):  # fmt: skip
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))

    def apply(env: dict[str, str], config_file: str) -> None:
        path = tmp_path / "config"
        path.write_text(config_file)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCONFORMANCE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply


def boto3_send(**config: Any) -> tuple[str | None, dict[str, str], Exception | None]:
    """A boto3 sesv2 client's SendEmail, stopped before the wire: (URL, headers, error)."""
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def stop(request: Any, **_: Any) -> None:
        seen["url"], seen["headers"] = request.url, dict(request.headers)
        raise Stop

    try:
        client = boto3.session.Session().client("sesv2", config=Config(**config))
        client.meta.events.register("before-send.sesv2.SendEmail", stop)
        client.send_email(**SIMPLE)
    except Stop:
        return seen["url"], seen["headers"], None
    except Exception as exc:  # the row may expect boto3 to refuse
        return None, {}, exc
    raise AssertionError("unreachable: the hook stops every send")


def ours() -> SesTransport:
    return SesTransport(DEFAULTS, concurrency=1, connect_timeout=2, read_timeout=2)


SERVICES = "[profile p]\nservices = s\n[services s]\nsesv2 =\n  endpoint_url = http://svc:1234/x\n"
ENDPOINT_ROWS: list[tuple[str, dict[str, str], str, str | None]] = [
    # (row, environment, config file, the URL boto3 must also reach; None: both refuse)
    ("regional", {"AWS_DEFAULT_REGION": "eu-west-1"}, "",
     "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"),
    ("service variable with a path and a port",
     {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SESV2": "http://gateway:8080/ses-prefix"},
     "", "http://gateway:8080/ses-prefix/v2/email/outbound-emails"),
    ("global variable with a trailing slash",
     {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "https://gw.example/p/"}, "",
     "https://gw.example/p/v2/email/outbound-emails"),
    ("service variable wins over the global one",
     {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://a:1",
      "AWS_ENDPOINT_URL_SESV2": "http://b:2"}, "", "http://b:2/v2/email/outbound-emails"),
    ("config file endpoint_url", {"AWS_PROFILE": "p"},
     "[profile p]\nregion = eu-central-1\nendpoint_url = http://cfg:9000/base\n",
     "http://cfg:9000/base/v2/email/outbound-emails"),
    ("config file services section", {"AWS_PROFILE": "p", "AWS_DEFAULT_REGION": "us-west-2"},
     SERVICES, "http://svc:1234/x/v2/email/outbound-emails"),
    ("ignore switch in the environment",
     {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SESV2": "http://b:2",
      "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, "",
     "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"),
    ("ignore switch in the config file", {"AWS_PROFILE": "p"},
     "[profile p]\nregion = us-east-1\nendpoint_url = http://cfg:9000\n"
     "ignore_configured_endpoint_urls = true\n",
     "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails"),
    ("China partition", {"AWS_DEFAULT_REGION": "cn-north-1"}, "",
     "https://email.cn-north-1.amazonaws.com.cn/v2/email/outbound-emails"),
    ("GovCloud", {"AWS_DEFAULT_REGION": "us-gov-west-1"}, "",
     "https://email.us-gov-west-1.amazonaws.com/v2/email/outbound-emails"),
    ("ISO partition", {"AWS_DEFAULT_REGION": "us-iso-east-1"}, "",
     "https://email.us-iso-east-1.c2s.ic.gov/v2/email/outbound-emails"),
    ("FIPS", {"AWS_DEFAULT_REGION": "us-east-1", "AWS_USE_FIPS_ENDPOINT": "true"}, "",
     "https://email-fips.us-east-1.amazonaws.com/v2/email/outbound-emails"),
    ("FIPS from the config file", {"AWS_PROFILE": "p"},
     "[profile p]\nregion = us-west-2\nuse_fips_endpoint = true\n",
     "https://email-fips.us-west-2.amazonaws.com/v2/email/outbound-emails"),
    ("dual-stack", {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_USE_DUALSTACK_ENDPOINT": "true"}, "",
     "https://email.eu-west-1.api.aws/v2/email/outbound-emails"),
    ("a custom endpoint wins over FIPS",
     {"AWS_DEFAULT_REGION": "us-east-1", "AWS_USE_FIPS_ENDPOINT": "true",
      "AWS_ENDPOINT_URL_SESV2": "http://b:2"}, "", "http://b:2/v2/email/outbound-emails"),
    ("a region botocore refuses", {"AWS_DEFAULT_REGION": "not a region!"}, "", None),
    ("IPv6 endpoint", {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://[::1]:4566"},
     "", "http://[::1]:4566/v2/email/outbound-emails"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("env", "config_file", "expected"),
    [pytest.param(env, config, url, id=row) for row, env, config, url in ENDPOINT_ROWS],
)
def test_the_endpoint_is_boto3s(
    aws: Callable[[dict[str, str], str], None],
    env: dict[str, str],
    config_file: str,
    expected: str | None,
) -> None:
    aws(env, config_file)
    url, headers, error = boto3_send()
    assert url == expected, error
    if expected is None:
        with pytest.raises(SetupError):
            ours()
        return
    transport = ours()
    assert transport.url + SEND_EMAIL == url
    # signed for the same scope: access key, region, service
    authorization = headers["Authorization"]  # botocore may hold it as bytes
    if isinstance(authorization, bytes):
        authorization = authorization.decode()
    scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    assert [scope[0], *scope[2:]] == ["AKIDCONFORMANCE", transport.settings.region, "ses",
                                      "aws4_request"]  # fmt: skip


# -- proxies, on the wire ----------------------------------------------------------------


class Recorder:
    """A TCP server that records the head of the first request on each connection and
    answers with ``answer`` (a proxy refusing, or an origin failing): the decision of
    where a client sent its request is what is compared, not the outcome."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.heads: list[tuple[str, dict[str, str]]] = []
        self.answer = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data and data[:1] != b"\x16" and len(data) < 65536:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                if data[:1] == b"\x16":  # a TLS ClientHello: a direct https connection
                    self.heads.append(("TLS", {}))
                    continue
                line, *fields = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                headers = {}
                for field in fields:
                    name, _, value = field.partition(":")
                    headers[name.strip().lower()] = value.strip()
                # The decision is the target and the credentials: a CONNECT's HTTP version
                # and Host header (urllib3 sends 1.0 without one, aiohttp 1.1 with) are not.
                if line.startswith("CONNECT "):
                    line, keep = line.rsplit(" ", 1)[0], ("proxy-authorization",)
                else:
                    keep = ("host", "proxy-authorization")
                self.heads.append((line, {k: v for k, v in headers.items() if k in keep}))
                with contextlib.suppress(OSError):
                    conn.sendall(self.answer)

    def take(self) -> list[tuple[str, dict[str, str]]]:
        heads, self.heads = self.heads, []
        return heads

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    proxy, origin = Recorder(), Recorder()
    yield proxy, origin
    proxy.close()
    origin.close()


PROXY_ROWS: list[tuple[str, str, dict[str, str]]] = [
    # (row, endpoint, environment); {proxy} and {origin} are the two recorders' ports
    ("https through a CONNECT proxy", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}"}),
    ("proxy credentials, percent-encoded", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://ann:s%40cret@127.0.0.1:{proxy}"}),
    ("proxy without a scheme", "https://localhost:{origin}", {"https_proxy": "127.0.0.1:{proxy}"}),
    ("http through a forwarding proxy", "http://localhost:{origin}/pre",
     {"HTTP_PROXY": "http://u:p@127.0.0.1:{proxy}"}),
    ("http endpoint ignores HTTPS_PROXY", "http://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}"}),
    ("NO_PROXY host", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}", "NO_PROXY": "localhost"}),
    ("NO_PROXY host:port", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}", "NO_PROXY": "example.com,localhost:{origin}"}),
    ("NO_PROXY host with another port", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}", "NO_PROXY": "localhost:1"}),
    ("no_proxy domain suffix", "http://localhost:{origin}",
     {"HTTP_PROXY": "http://127.0.0.1:{proxy}", "no_proxy": ".example.com,.localhost,localhost"}),
    ("NO_PROXY wildcard", "https://localhost:{origin}",
     {"HTTPS_PROXY": "http://127.0.0.1:{proxy}", "NO_PROXY": "*"}),
]  # fmt: skip


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("endpoint", "env"), [pytest.param(e, env, id=row) for row, e, env in PROXY_ROWS]
)
async def test_the_proxy_decision_is_boto3s(
    aws: Callable[[dict[str, str], str], None],
    recorders: tuple[Recorder, Recorder],
    endpoint: str,
    env: dict[str, str],
) -> None:
    proxy, origin = recorders
    ports = {"proxy": proxy.port, "origin": origin.port}
    filled = {k: v.format(**ports) for k, v in env.items()}
    aws({"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_SESV2": endpoint.format(**ports),
         **filled}, "")  # fmt: skip
    client = boto3.session.Session().client(
        "sesv2", config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=2)
    )
    with contextlib.suppress(Exception):  # both fail: the recorders answer no SES
        client.send_email(**SIMPLE)
    theirs = proxy.take(), origin.take()
    transport = ours()
    try:
        result = await transport.send_one(message())
    finally:
        await transport.aclose()
    mine = proxy.take(), origin.take()
    assert not result.provider_id
    assert sum(map(len, theirs)) == 1  # one attempt each, somewhere
    assert mine == theirs


@pytest.mark.anyio
async def test_a_proxy_refusing_credentials_pauses(
    aws: Callable[[dict[str, str], str], None], recorders: tuple[Recorder, Recorder]
) -> None:
    proxy, origin = recorders
    proxy.answer = (
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    aws({"AWS_DEFAULT_REGION": "us-east-1",
         "AWS_ENDPOINT_URL_SESV2": f"https://localhost:{origin.port}",
         "HTTPS_PROXY": f"http://ann:wrong@127.0.0.1:{proxy.port}"}, "")  # fmt: skip
    transport = ours()
    try:
        result = await transport.send_one(message())
    finally:
        await transport.aclose()
    assert (result.code, result.verdict.value) == ("ProxyAuthenticationRequired", "pause")
    [(line, headers)] = proxy.take()
    assert line == f"CONNECT localhost:{origin.port}"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"ann:wrong").decode()
    assert origin.take() == []


@pytest.mark.parametrize(
    ("env", "config_file"),
    [
        pytest.param({}, "", id="botocore's default bundle"),
        pytest.param({"AWS_CA_BUNDLE": "{ca}"}, "", id="AWS_CA_BUNDLE"),
        pytest.param({"REQUESTS_CA_BUNDLE": "{ca}"}, "", id="REQUESTS_CA_BUNDLE"),
        pytest.param({"AWS_PROFILE": "p"}, "[profile p]\nca_bundle = {ca}\n", id="config file"),
        pytest.param({"AWS_CA_BUNDLE": "{ca}", "REQUESTS_CA_BUNDLE": "/other.pem"}, "",
                     id="AWS_CA_BUNDLE first"),
    ],
)  # fmt: skip
def test_the_ca_bundle_is_boto3s(
    aws: Callable[[dict[str, str], str], None],
    tmp_path: Path,
    env: dict[str, str],
    config_file: str,
) -> None:
    ca = str(tmp_path / "ca.pem")
    Path(ca).write_bytes(Path(get_cert_path(True)).read_bytes())
    aws({"AWS_DEFAULT_REGION": "us-east-1", **{k: v.format(ca=ca) for k, v in env.items()}},
        config_file.format(ca=ca))  # fmt: skip
    client = boto3.session.Session().client("sesv2")
    # botocore keeps its choice in its HTTP session: a test may look, the daemon does not
    verify = client._endpoint.http_session._verify  # True: its default bundle
    assert ours().settings.ca_bundle == (get_cert_path(True) if verify is True else verify)
