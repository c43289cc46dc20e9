"""CPU per SES call of each way to carry one: the daemon's transport and its alternatives.

Each variant runs in its own process (``python -m bench.transport VARIANT OP N``) against
the stand-in at 0 ms, ``CONCURRENCY`` calls in flight, and reports the process CPU time
(``time.process_time()``: every thread, user + system) of N calls after a warm-up, so that
imports, set-up and connection opening are not counted. The stand-in runs in its own
process: its CPU is not in the figure.

Variants:
- ``ours``: ``mailroom.transports.ses.SesTransport`` of the code under test: its exchange
  (aiohttp until issue 21, the standard library's asyncio since) carrying requests built
  and signed by the project's own SigV4 signer.
- ``ours_old``: the same class at the commit before the move to aiohttp (its hand-written
  HTTP/1.1 client), from another checkout's venv (``--old``).
- ``aiohttp_botocore`` (the name is historical): the same JSON and the same exchange as
  ``ours``, signed by botocore's ``SigV4Auth`` on an ``AWSRequest`` instead.
- ``boto3_threads``: one boto3 ``sesv2`` client (one attempt, a pool as wide as the
  threads) called from ``CONCURRENCY`` threads.

Only the standard library is imported at the top: the old checkout's venv runs this file.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CONCURRENCY = 16
WARMUP = 200
BULK_ENTRIES = 50
VARIANTS = ("ours", "ours_old", "aiohttp_botocore", "boto3_threads")
OPS = ("SendEmail", "SendBulkEmail")


def _messages(count: int) -> list[Any]:
    from mailroom.outbox import Message  # noqa: PLC0415 -- the checkout under test

    fields = dict.fromkeys(Message._fields)
    fields.update(attempts=1, max_attempts=10, cc=[], bcc=[], reply_to=[], created_at=0.0)
    return [
        Message(
            **{
                **fields,
                "id": i,
                "to": [f"user{i}@example.com"],
                "template": "activationv1",
                "template_data": json.dumps({"login": f"user{i}", "n": i}),
            }
        )
        for i in range(count)
    ]


def _simple(message: Any) -> Any:
    return message._replace(template=None, template_data=None, subject="Hello",
                            body_text="Hello, this is a message.")  # fmt: skip


async def _pool(calls: int, one: Callable[[], Awaitable[object]]) -> float:
    """``calls`` calls, CONCURRENCY at a time; process CPU seconds they took."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    async def run(total: int) -> None:
        share, extra = divmod(total, CONCURRENCY)
        counts = [share + (1 if i < extra else 0) for i in range(CONCURRENCY)]
        await asyncio.gather(*(worker(c) for c in counts if c))

    await run(WARMUP)
    started = time.process_time()
    await run(calls)
    return time.process_time() - started


async def _ours(op: str, calls: int) -> float:
    from mailroom.transports import Defaults  # noqa: PLC0415
    from mailroom.transports.ses import SesTransport  # noqa: PLC0415

    transport = SesTransport(Defaults(source="noreply@example.com", config_set=None),
                             concurrency=CONCURRENCY, connect_timeout=3.0,
                             read_timeout=10.0)  # fmt: skip
    bulk = _messages(BULK_ENTRIES)
    single = _simple(bulk[0])

    async def one() -> None:
        if op == "SendBulkEmail":
            results = await transport.send_bulk(bulk)
        else:
            results = [await transport.send_one(single)]
        assert results[0].provider_id, results[0]

    try:
        return await _pool(calls, one)
    finally:
        await transport.aclose()


async def _aiohttp_botocore(op: str, calls: int) -> float:
    import botocore.session  # noqa: PLC0415
    from botocore.auth import SigV4Auth  # noqa: PLC0415
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from yarl import URL  # noqa: PLC0415

    from mailroom.transports import Defaults, awsconfig  # noqa: PLC0415
    from mailroom.transports.exchange import Exchange  # noqa: PLC0415
    from mailroom.transports.ses import (  # noqa: PLC0415
        SEND_BULK_EMAIL,
        SEND_EMAIL,
        bulk_request,
        encode,
        single_request,
    )

    session = botocore.session.get_session()
    resolved = awsconfig.resolve(session)
    credentials = session.get_credentials()
    defaults = Defaults(source="noreply@example.com", config_set=None)
    bulk = _messages(BULK_ENTRIES)
    path = SEND_BULK_EMAIL if op == "SendBulkEmail" else SEND_EMAIL
    url = resolved.endpoint + path
    target = URL(url, encoded=True)
    http = Exchange(concurrency=CONCURRENCY, connect_timeout=3.0, read_timeout=10.0)

    async def one() -> None:
        request = (bulk_request(bulk, defaults) if op == "SendBulkEmail"
                   else single_request(_simple(bulk[0]), defaults))  # fmt: skip
        body = encode(request)
        signed = AWSRequest(method="POST", url=url, data=body,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        SigV4Auth(credentials, "ses", resolved.region).add_auth(signed)
        response = await http.post(target, dict(signed.headers.items()), body)
        assert response.status == 200, response
        json.loads(response.body)

    try:
        return await _pool(calls, one)
    finally:
        await http.aclose()


def _boto3_threads(op: str, calls: int) -> float:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    client = boto3.session.Session().client("sesv2", config=Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=CONCURRENCY))  # fmt: skip
    entries = [
        {"Destination": {"ToAddresses": [f"user{i}@example.com"]},
         "ReplacementEmailContent": {"ReplacementTemplate": {
             "ReplacementTemplateData": json.dumps({"login": f"user{i}", "n": i})}}}
        for i in range(BULK_ENTRIES)
    ]  # fmt: skip

    def one() -> None:
        if op == "SendBulkEmail":
            client.send_bulk_email(
                FromEmailAddress="noreply@example.com",
                DefaultContent={"Template": {"TemplateName": "activationv1", "TemplateData": "{}"}},
                BulkEmailEntries=entries,
            )
        else:
            client.send_email(
                FromEmailAddress="noreply@example.com",
                Destination={"ToAddresses": ["user0@example.com"]},
                Content={"Simple": {"Subject": {"Data": "Hello"},
                                    "Body": {"Text": {"Data": "Hello, this is a message."}}}},
            )  # fmt: skip

    def run(total: int) -> None:
        share, extra = divmod(total, CONCURRENCY)
        counts = [share + (1 if i < extra else 0) for i in range(CONCURRENCY)]
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for future in [pool.submit(lambda c=c: [one() for _ in range(c)]) for c in counts]:
                future.result()

    run(WARMUP)
    started = time.process_time()
    run(calls)
    return time.process_time() - started


def child(variant: str, op: str, calls: int) -> dict[str, Any]:
    began = time.perf_counter()
    if variant in ("ours", "ours_old"):
        cpu = asyncio.run(_ours(op, calls))
    elif variant == "aiohttp_botocore":
        cpu = asyncio.run(_aiohttp_botocore(op, calls))
    elif variant == "boto3_threads":
        cpu = _boto3_threads(op, calls)
    else:
        raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
    rss = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    return {"variant": variant, "op": op, "calls": calls, "cpu_seconds": cpu,
            "us_per_call": cpu / calls * 1e6, "hwm_mib": rss,
            "wall_seconds": time.perf_counter() - began}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
