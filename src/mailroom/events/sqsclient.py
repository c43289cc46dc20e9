"""The events reader's SQS client: ReceiveMessage and DeleteMessageBatch on the project's
own HTTP exchange (transports/exchange.py), signed with SigV4 for "sqs".

botocore decides, as it would for an ``sqs`` client, in a child process (``python -m
mailroom.events.sqsclient resolve QUEUE_URL``): the region (mailroom's, else the queue
URL's), the endpoint (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL, the config file, the
endpoint rules), the proxy, the CA bundle, and the credentials of its chain (refreshed by
further children, transports/credentials.py). botocore's session and sqs client stay out of
the daemon's memory (~17 MiB, docs/BENCHMARKS.md). The requests and answers are built and
read in transports/sqs.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio

from mailroom.transports import SetupError, awsconfig, sqs
from mailroom.transports.credentials import CredentialError, Found, FromChild, Source
from mailroom.transports.exchange import ExchangeError
from mailroom.transports.ses import authority_of, exchange_for, user_agent
from mailroom.transports.sigv4 import Signer

SIGNING_NAME = "sqs"
RESOLVE_TIMEOUT = 60.0  # seconds for the child that asks botocore


class SqsClient:
    """SQS calls for one queue URL; ``resolved`` and ``credentials`` as botocore found them."""

    def __init__(
        self,
        resolved: awsconfig.Resolved,
        credentials: Source,
        *,
        connections: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.settings = resolved
        self.url = resolved.endpoint
        parts = urlsplit(self.url)
        self.authority = authority_of(parts.scheme, parts.hostname or "", parts.port)
        self._path = resolved.signed_paths.get("/") or "/"
        self._signer = Signer(resolved.region, SIGNING_NAME)
        self._credentials = credentials
        self._user_agent = user_agent()
        self._http = exchange_for(
            resolved, concurrency=connections, connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )  # fmt: skip

    async def receive(self, queue_url: str, max_messages: int, wait_seconds: int) -> sqs.Received:
        answer = await self._call(sqs.receive_request(queue_url, max_messages, wait_seconds))
        return sqs.messages_of(answer)

    async def delete_batch(self, queue_url: str, entries: Sequence[Mapping[str, str]]) -> list[Any]:
        """The entries SQS did not delete (as its ``Failed`` list)."""
        answer = await self._call(sqs.delete_request(queue_url, entries))
        return sqs.failed_of(answer, len(entries))

    async def _call(self, request: sqs.Request) -> dict[str, Any]:
        attempt = 1
        while True:
            try:
                return await self._once(request)
            except sqs.SqsError as exc:
                if attempt >= sqs.MAX_ATTEMPTS or not sqs.retryable(exc):
                    raise
            await anyio.sleep(sqs.backoff(attempt))
            attempt += 1

    async def _once(self, request: sqs.Request) -> dict[str, Any]:
        budget = self._http.connect_timeout + self._http.read_timeout
        try:
            with anyio.fail_after(budget):
                credentials = await self._credentials.get(budget)
        except (CredentialError, TimeoutError) as exc:
            raise sqs.SqsError("NoCredentials", str(exc), request.operation) from exc
        if credentials is None:
            raise sqs.SqsError("NoCredentials", "no AWS credentials found", request.operation)
        headers = self._signer.headers(
            credentials, self.authority, self._path, request.body, content_type=sqs.CONTENT_TYPE
        )
        headers.update(request.headers)
        headers["Host"] = self.authority  # the signed value
        headers["User-Agent"] = self._user_agent
        try:
            response = await self._http.post(self.url, headers, request.body)
        except ExchangeError as exc:
            raise sqs.SqsError(exc.code, exc.detail, request.operation) from exc
        return sqs.answer_of(request.operation, response.status, response.headers, response.body)

    async def aclose(self) -> None:
        await self._http.aclose()


async def from_child(
    queue_url: str, *, connections: int, connect_timeout: float, read_timeout: float
) -> SqsClient:
    """A client with botocore's decisions and credentials, asked of a child process."""
    command = [sys.executable, "-m", __name__, "resolve", queue_url]
    # botocore's chain may ask a metadata endpoint; a child that hangs is killed, and the
    # reader says so and tries again later (sending goes on meanwhile)
    try:
        with anyio.fail_after(RESOLVE_TIMEOUT):
            done = await anyio.run_process(command, check=False)
    except TimeoutError as exc:
        raise SetupError(
            f"the SQS set-up child gave no answer within {RESOLVE_TIMEOUT:g} s"
        ) from exc
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise SetupError(lines[-1][:300] if lines else f"exit {done.returncode}")
    answer = json.loads(done.stdout)
    resolved = awsconfig.Resolved(**answer["resolved"])
    found = Found.of_json(answer["found"])
    return SqsClient(
        resolved,
        FromChild(found),
        connections=connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )


def main() -> None:
    """The child: ``resolve QUEUE_URL``: botocore's decisions and credentials for an sqs
    client as JSON on stdout, or why not on stderr (exit 2)."""
    if len(sys.argv) != 3 or sys.argv[1] != "resolve":
        sys.stderr.write("usage: python -m mailroom.events.sqsclient resolve QUEUE_URL\n")
        sys.exit(2)
    import botocore.session  # noqa: PLC0415 -- the child's work
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    from mailroom.transports import credentials  # noqa: PLC0415

    session = botocore.session.get_session()
    try:
        resolved = awsconfig.resolve_sqs(session, sys.argv[2])
    except SetupError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(2)
    try:
        found = credentials.of_botocore(session.get_credentials())
    except BotoCoreError as exc:  # asked again at the first call, which then says why
        found = Found(None)
        sys.stderr.write(f"credentials: {credentials.reason(exc)}\n")
    answer = {"resolved": dataclasses.asdict(resolved), "found": found.as_json()}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
