"""What every command module of the CLI shares: the one-line failure (``fail``), the
configuration (``load``), the database connection (``connect``) and the handler that runs
an operator function on it (``handler``). A module of its own so that commands.py and
the command modules both import it rather than each other."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailroom.config import settings as configuration

# Set by `run` once its log is JSON lines (MAILROOM_LOG_FORMAT=json, or auto without a
# terminal): its start-up failures are then JSON log lines too, not text in a JSON log
# (issue 19, finding 8). commands.main() resets it for each command run in-process.
log_json = False


def fail(message: str, code: int = 2) -> int:
    if log_json:
        from mailroom import logs  # noqa: PLC0415

        logs.fatal(message, code)
        return code
    for line in message.splitlines() or [""]:
        print(f"mailroom: {line}", file=sys.stderr)
    return code


def load(*, require_database: bool = True) -> configuration.Config:
    return configuration.load(require_database=require_database)


def connect(cfg: configuration.Config) -> Any:
    from mailroom import outbox  # noqa: PLC0415

    return outbox.connect(cfg.database_url, connect_timeout=10)


def handler(name: str) -> Any:
    """A handler running ``<module>.<name>`` of mailroom.cli (``messages`` when no module
    is given) on a connection to a migrated database."""

    def run(args: argparse.Namespace) -> int:
        import importlib  # noqa: PLC0415

        from mailroom import migrate  # noqa: PLC0415
        from mailroom.text import CommandError  # noqa: PLC0415

        module, _, function = name.rpartition(".")
        command = getattr(importlib.import_module(f"mailroom.cli.{module or 'messages'}"), function)
        cfg = load()
        with connect(cfg) as conn:
            try:
                migrate.check_ready(conn, channel=cfg.channel_name)
                return int(command(args, cfg, conn))
            except CommandError as exc:
                return fail(str(exc), exc.code)
            # a refused privilege reaches main(), which names what the command needs

    return run
