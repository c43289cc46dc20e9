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


def mask(text: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``."""
    return _ADDRESS.sub(r"\1***@\2", text)


def _mask_addresses(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = mask(value)
    return event


def configure(*, level: str = "info", fmt: str = "auto", reveal_addresses: bool = False) -> None:
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not reveal_addresses:
        processors.append(_mask_addresses)
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=True))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
