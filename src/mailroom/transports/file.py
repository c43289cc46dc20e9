"""Debug transport (MAILROOM_DEBUG=true): send nothing, write each request that would
have gone to SES as a JSON file in MAILROOM_SES_OUTPUT_PATH, as the seed's debug mode did,
and beside it each message as the email its recipient would read (``.eml``, which a mail
client opens): templated messages rendered from MAILROOM_TEMPLATES_DIR (transports.compose).
A message that cannot be rendered here is still "sent" (SES holds the template that
counts): the JSON file says why it has no .eml. Nothing reaches SES, so nothing has an SES
message id: the messages are recorded sent with none (NULL), never an id that looks like
SES's (`mailroom show` says "none (debug)")."""

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
from mailroom.transports.compose import ComposeError, compose
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
    def __init__(self, defaults: Defaults, directory: Path, templates: Path | None = None) -> None:
        self.defaults = defaults
        self.directory = directory
        self.templates = templates
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
        stem = f"{time.time_ns()}-{operation}-{messages[0].id}"
        emails = []
        for message in messages:
            try:
                raw = compose(message, self.defaults, self.templates)
            except ComposeError as exc:
                emails.append({"outbox_id": message.id, "error": str(exc)})
                continue
            eml = f"{stem}-{message.id}.eml"
            self._replace(eml, raw)
            emails.append({"outbox_id": message.id, "file": eml})
        document = {
            "operation": operation,
            "outbox_ids": [m.id for m in messages],
            "request": _jsonable(request),
            "response": None,  # nothing was sent: SES gave no answer and no message id
            "emails": emails,
        }
        text = json.dumps(document, indent=2, ensure_ascii=False)
        self._replace(stem + ".json", text.encode("utf-8"))

    def _replace(self, name: str, content: bytes) -> None:
        tmp = self.directory / (name + ".tmp")
        tmp.write_bytes(content)
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
