"""Debug transport (MAILROOM_DEBUG=true): send nothing, write each request that would
have gone to SES as a JSON file in MAILROOM_SES_OUTPUT_PATH, as the seed's debug mode did.
Nothing reaches SES, so nothing has an SES message id: the messages are recorded sent with
none (NULL), never an id that looks like SES's (`mailroom show` says "none (debug)")."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from mailroom.outbox import Message
from mailroom.transports import Defaults, Result, SetupError
from mailroom.transports.classify import Verdict
from mailroom.transports.ses import bulk_request, single_request


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class FileTransport:
    def __init__(self, defaults: Defaults, directory: Path) -> None:
        self.defaults = defaults
        self.directory = directory
        try:  # fail at start-up, not on the first message
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".mailroom-write-test-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SetupError(
                f"MAILROOM_SES_OUTPUT_PATH: cannot write to {str(directory)!r}: {reason}"
            ) from None

    def _write(self, operation: str, messages: Sequence[Message], request: dict[str, Any]) -> None:
        document = {
            "operation": operation,
            "outbox_ids": [m.id for m in messages],
            "request": _jsonable(request),
            "response": None,  # nothing was sent: SES gave no answer and no message id
        }
        name = f"{time.time_ns()}-{operation}-{messages[0].id}.json"
        tmp = self.directory / (name + ".tmp")
        tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.directory / name)  # readers never see half a file

    async def send_bulk(self, messages: Sequence[Message]) -> list[Result]:
        await anyio.to_thread.run_sync(
            self._write, "SendBulkEmail", messages, bulk_request(messages, self.defaults)
        )
        return [Result(Verdict.SENT, provider_id=None) for _ in messages]

    async def send_one(self, message: Message) -> Result:
        request = single_request(message, self.defaults)
        await anyio.to_thread.run_sync(self._write, "SendEmail", [message], request)
        return Result(Verdict.SENT, provider_id=None)

    async def aclose(self) -> None:
        pass
