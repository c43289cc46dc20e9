"""The events reader's own SQS client (mailroom.events.sqsclient, transports/sqs.py): the
JSON protocol against moto's server over real HTTP, botocore's endpoint decision from the
child, and hostile answers from a fake SQS over a socket, each the answer's problem alone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import anyio
import pytest

from mailroom import metrics
from mailroom.config.settings import load
from mailroom.events.reader import EventsReader
from mailroom.events.sqsclient import SqsClient, from_child
from mailroom.outbox import Outbox
from mailroom.transports import SetupError, awsconfig, sqs
from mailroom.transports.sigv4 import Credentials
from test_deliverability_e2e import publish, queue_empty, sqs_client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Static:
    async def get(self, within: float) -> Credentials | None:
        return Credentials("testing", "testing", "token")


def client_for(url: str, read_timeout: float = 15) -> SqsClient:
    resolved = awsconfig.Resolved("us-east-1", url + "/", signed_paths={"/": "/"})
    return SqsClient(
        resolved, Static(), connections=2, connect_timeout=2, read_timeout=read_timeout
    )


# --- moto, over real HTTP ----------------------------------------------------------


async def test_receive_and_delete_against_moto(moto_url: str) -> None:
    boto = sqs_client(moto_url)
    url = boto.create_queue(QueueName=f"q21-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    publish(boto, url, [f"body {i}" for i in range(3)] + ['{"ü": "\\u2028"}'])
    client = client_for(moto_url)
    try:
        got: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            while len(got) < 4:
                received = await client.receive(url, 10, 1)
                assert received.unusable == 0
                got += received.messages
        assert sorted(m["Body"] for m in got) == [
            *(f"body {i}" for i in range(3)),
            '{"ü": "\\u2028"}',
        ]
        assert all(isinstance(m["MessageId"], str) for m in got)
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        assert await client.delete_batch(url, entries) == []
        assert queue_empty(boto, url)
        # a missing queue: the code a botocore ClientError carried (the query-compatible one)
        with pytest.raises(sqs.SqsError) as missing:
            await client.receive(url + "-gone", 10, 0)
        assert "NonExistentQueue" in missing.value.code or "QueueDoesNotExist" in missing.value.code
        assert "ReceiveMessage" in str(missing.value)
    finally:
        await client.aclose()


async def test_the_child_resolves_the_sqs_endpoint_as_botocore(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_url)
    boto = sqs_client(moto_url)
    url = boto.create_queue(QueueName=f"q21-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    publish(boto, url, ["hello"])
    # no region configured: the queue URL's (a standard one) is used
    standard = "https://sqs.eu-west-2.amazonaws.com/123456789012/q"
    client = await from_child(standard, connections=1, connect_timeout=2, read_timeout=5)
    assert (client.settings.region, client.url) == ("eu-west-2", moto_url + "/")
    assert client.settings.ca_bundle is None  # http: nothing to verify
    await client.aclose()
    # no region and a queue URL that names none: said in the user's words
    with pytest.raises(SetupError, match="no AWS region"):
        await from_child(url, connections=1, connect_timeout=2, read_timeout=5)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = await from_child(url, connections=1, connect_timeout=2, read_timeout=5)
    try:
        received = await client.receive(url, 10, 1)  # credentials from the child's chain
        assert [m["Body"] for m in received.messages] == ["hello"]
    finally:
        await client.aclose()
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS")
    monkeypatch.setenv("HTTPS_PROXY", "http://ann:s3cret@proxy.example:3128")
    monkeypatch.setenv("AWS_CA_BUNDLE", os.devnull)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(SetupError, match="CA bundle"):  # not a certificate: said at set-up
        await from_child(standard, connections=1, connect_timeout=2, read_timeout=5)
    monkeypatch.delenv("AWS_CA_BUNDLE")
    client = await from_child(standard, connections=1, connect_timeout=2, read_timeout=5)
    assert client.url == "https://sqs.us-east-1.amazonaws.com/"  # AWS_REGION wins, as for SES
    assert client.settings.ca_bundle  # https: botocore's bundle
    # the proxy as botocore uses it; its credentials only in the header, never in the URL
    assert client.settings.proxy == "http://proxy.example:3128"
    assert set(client.settings.proxy_headers) == {"Proxy-Authorization"}
    await client.aclose()
    monkeypatch.setenv("NO_PROXY", "amazonaws.com")
    client = await from_child(standard, connections=1, connect_timeout=2, read_timeout=5)
    assert client.settings.proxy is None
    await client.aclose()


def test_queue_region_reads_only_standard_hosts() -> None:
    assert awsconfig.queue_region("https://sqs.eu-west-1.amazonaws.com/1/q") == "eu-west-1"
    assert awsconfig.queue_region("https://sqs.cn-north-1.amazonaws.com.cn/1/q") == "cn-north-1"
    assert awsconfig.queue_region("https://us-west-2.queue.amazonaws.com/1/q") == "us-west-2"
    assert awsconfig.queue_region("https://sqs.eu-west-1.amazonaws.com.evil.example/1/q") is None
    assert awsconfig.queue_region("http://localhost:4566/000000000000/q") is None


# --- pure reading of answers ---------------------------------------------------------


def test_messages_of_keeps_each_usable_message_and_counts_the_rest() -> None:
    answer = {"Messages": [
        {"MessageId": "a", "ReceiptHandle": "h1", "Body": "x"},
        {"MessageId": "b", "Body": "no handle"},
        {"MessageId": 7, "ReceiptHandle": "h3", "Body": {"not": "a string"}},
        "not an object",
        {"ReceiptHandle": ""},
        {"ReceiptHandle": ["h"]},
        {"MessageId": "x" * 100_000, "ReceiptHandle": "h7", "Body": "y"},
    ]}  # fmt: skip
    got = sqs.messages_of(answer)
    assert got.messages == [
        {"MessageId": "a", "ReceiptHandle": "h1", "Body": "x"},
        {"MessageId": None, "ReceiptHandle": "h3", "Body": ""},
        {"MessageId": "x" * 100, "ReceiptHandle": "h7", "Body": "y"},  # logged: capped
    ]
    assert got.unusable == 4
    assert sqs.messages_of({}) == sqs.Received([], 0)
    assert sqs.messages_of({"Messages": "x"}) == sqs.Received([], 1)
    assert len(sqs.failed_of({"Successful": [{"Id": "0"}]}, 3)) == 2
    assert sqs.failed_of({"Failed": "x", "Successful": [{}, {}]}, 2) == []


def test_errors_read_as_botocore_reads_them() -> None:
    body = b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}'
    headers = {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}
    assert sqs.error_of(400, headers, body) == ("AWS.SimpleQueueService.NonExistentQueue", "gone")
    assert sqs.error_of(400, {}, body) == ("QueueDoesNotExist", "gone")
    assert sqs.error_of(403, {}, b"<html>denied</html>")[0] == "403"
    throttled = sqs.SqsError("ThrottlingException", "", "ReceiveMessage", 400)
    denied = sqs.SqsError("AccessDenied", "", "ReceiveMessage", 403)
    assert sqs.retryable(throttled)
    assert not sqs.retryable(denied)
    assert sqs.retryable(sqs.SqsError("InternalError", "", "ReceiveMessage", 500))
    assert sqs.backoff(1, 1.0) == 2.0
    assert sqs.backoff(10, 1.0) == sqs.BACKOFF_CAP


# --- a hostile SQS over a socket ------------------------------------------------------

Answer = Callable[[bytes], bytes]
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


def botocore_agrees(fields: dict[str, str], body: bytes) -> bool:
    """The request's SigV4 signature for service "sqs", recomputed by botocore."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415 -- the test's reference signer
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials as BotoCredentials  # noqa: PLC0415

    match = AUTHORIZATION.fullmatch(fields.get("authorization", ""))
    if match is None:
        return False
    key, _, region, service, names, signature = match.groups()
    if (key, region, service) != ("testing", "us-east-1", "sqs"):
        return False
    if fields.get("content-type") != sqs.CONTENT_TYPE:
        return False
    signed = {name: fields.get(name, "") for name in names.split(";")}
    request = AWSRequest(method="POST", url=f"http://{signed.get('host', '')}/", data=body,
                         headers=signed)  # fmt: skip
    request.context["timestamp"] = fields.get("x-amz-date", "")
    token = fields.get("x-amz-security-token")
    auth = SigV4Auth(BotoCredentials(key, "testing", token), service, region)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                              request)  # fmt: skip
    return bool(expected == signature) and token == "token"


def http(status: int, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


class FakeSqs:
    """Answers each request with the next of ``answers`` (the last one repeats); notes
    every request's X-Amz-Target and body."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.signed: list[bool] = []  # each request's signature, as botocore computes it
        self.url = ""
        self.deleted = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                body = await reader.readexactly(int(fields.get("content-length", "0")))
                self.seen.append((fields.get("x-amz-target", ""), json.loads(body)))
                self.signed.append(botocore_agrees(fields, body))
                if self.seen[-1][0] == "AmazonSQS.DeleteMessageBatch":
                    self.deleted.set()
                answer = self.answers[min(len(self.seen) - 1, len(self.answers) - 1)]
                writer.write(answer)
                await writer.drain()
                if b"\r\n\r\n" not in answer:  # a cut head: the peer hangs up
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[list[bytes]], FakeSqs]]:
    servers: list[asyncio.Server] = []

    async def make(answers: list[bytes]) -> FakeSqs:
        server = FakeSqs(answers)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(listening)
        server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
        return server

    yield make  # type: ignore[misc]
    for listening in servers:
        listening.close()


GOOD = json.dumps({"Messages": [
    {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "not json at all"},
    {"MessageId": "m2", "Body": "no receipt handle"},
]}).encode()  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        http(200, b'{"Messages": [{"MessageId": "m1", "Rece'),  # truncated JSON
        http(200, b'["Messages"]'),  # wrong type
        http(200, b'{"Messages": 5}'),  # wrong type inside
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n" + b"x" * 1000,  # huge body
        http(400, b'{"__type": "AccessDenied", "message": "no"}'),
        b"HTTP/1.1 200 OK\r\nContent-Len",  # a cut head, then the connection closes
    ],
)
async def test_a_hostile_answer_is_that_answers_problem(
    bad: bytes, fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller meets a hostile answer, backs off, and reads on: the next answer's
    malformed message is counted and deleted, the one without a receipt handle counted."""
    monkeypatch.setattr(sqs, "BACKOFF_BASE", 0.01)
    server = await fake([bad, http(200, GOOD), http(200, b'{"Successful": [{"Id": "0"}]}')])
    queue_url = f"{server.url}/123456789012/q"
    config = load({"MAILROOM_DATABASE_URL": "postgresql:///unused",
                   "MAILROOM_EVENTS_QUEUE_URL": queue_url})  # fmt: skip
    client = client_for(server.url, read_timeout=2)
    reader = EventsReader(config, cast(Outbox, None), client)
    errors = metrics.EVENTS_READER_ERRORS.labels("receive")
    before = errors._value.get()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader._poll_loop)
            await server.deleted.wait()
            tg.cancel_scope.cancel()
    await client.aclose()
    deletes = [body for target, body in server.seen if target == "AmazonSQS.DeleteMessageBatch"]
    assert deletes[0]["Entries"] == [{"Id": "0", "ReceiptHandle": "r1"}]
    assert deletes[0]["QueueUrl"] == queue_url
    assert all(server.signed)
    # the unusable message, and the bad answer: a network-level one (no complete HTTP
    # answer) is tried again at once, as botocore's standard mode did, and the retry reads
    # the good answer; any other is the poll's failure, after which the poller reads on
    network = b"999999999" in bad or b"\r\n\r\n" not in bad
    assert errors._value.get() - before == (1 if network else 2)
    receives = [t for t, _ in server.seen if t == "AmazonSQS.ReceiveMessage"]
    assert len(receives) == 2


async def test_throttling_is_retried_as_botocore_did(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs, "BACKOFF_BASE", 0.01)
    throttled = http(400, b'{"__type": "com.amazonaws.sqs#ThrottlingException"}')
    server = await fake([throttled, throttled, http(200, b"{}"), throttled])
    client = client_for(server.url, read_timeout=2)
    try:
        assert (await client.receive("u", 10, 0)).messages == []
        assert len(server.seen) == 3
        assert server.seen[0] == (
            "AmazonSQS.ReceiveMessage",
            {"QueueUrl": "u", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0},
        )
        with pytest.raises(sqs.SqsError, match="ThrottlingException"):
            await client.receive("u", 10, 0)  # three more throttled: given up, as botocore
        assert len(server.seen) == 6
        assert server.signed == [True] * 6
    finally:
        await client.aclose()
