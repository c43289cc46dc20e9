"""structlog set-up: JSON lines in production, readable output on a terminal.

Recipient addresses are masked unless MAILROOM_LOG_REVEAL_ADDRESSES is set; secrets are
never passed to a logger in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_ADDRESS = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


# A display name before "<": quoted (the form the outbox stores) or RFC 2047 encoded words.
_WORD = r"=\?[^?\s]+\?[BbQq]\?[^?\s]*\?="
_NAME = re.compile(rf'(?:"(?:[^"\\]|\\.)*"|{_WORD}(?:\s+{_WORD})*)(\s*<)')


def mask(text: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``; ``"Alice Smith" <alice@...>`` ->
    ``"***" <a***@...>``: a display name says as much about a person as the address."""
    return _ADDRESS.sub(r"\1***@\2", _NAME.sub(r'"***"\1', text))


def _mask_addresses(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = mask(value)
    return event


def configure(*, level: str = "info", fmt: str = "auto", reveal_addresses: bool = False) -> bool:
    """Set up logging; returns whether the log is JSON lines."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not reveal_addresses:
        shared.append(_mask_addresses)
    renderer: list[Any] = (
        [structlog.dev.ConsoleRenderer(colors=True)]
        if console
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    )
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (psycopg_pool, botocore): render their
    # records the same way, so a JSON log stays JSON lines, masked alike.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING))  # library chatter only from warnings up
    return not console


def fatal(message: str, code: int) -> None:
    """A start-up failure as a log line (one per line of ``message``): in a JSON log,
    whatever reads it line by line gets this one too."""
    # a new proxy: loggers cached before configure() may still write to an older stderr
    logger = structlog.get_logger("mailroom")
    for line in message.splitlines() or [""]:
        logger.error("startup_failed", detail=line, exit_code=code)
