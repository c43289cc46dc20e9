"""The command ``mailroom web`` and its parser: serves the operators' console
(mailroom.web, the optional extra, imported only when the command runs)."""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import Any

from mailroom.cli.args import OPERATOR_EXIT_CODES, port
from mailroom.cli.common import fail, load


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from mailroom.web import app, settings  # noqa: PLC0415 -- the optional extra
    except ImportError as exc:
        return fail(f"`mailroom web` needs the web extra: pip install 'mailroom[web]' ({exc})")
    from mailroom.text import CommandError  # noqa: PLC0415

    cfg = load()
    env = dict(os.environ)
    if args.host:
        env["MAILROOM_WEB_HOST"] = args.host
    if args.port is not None:
        env["MAILROOM_WEB_PORT"] = str(args.port)
    web_settings = settings.load(env)
    try:
        app.serve(cfg, web_settings)
    except CommandError as exc:
        return fail(str(exc), exc.code)
    return 0


def add_commands(sub: Any) -> None:
    web = sub.add_parser(
        "web",
        help="the operators' web console (own port, loopback by default)",
        description=textwrap.fill(
            "Serves the console: overview, message search, a message's attempts and audit, "
            "dead letters, and the actions (retry, purge, cancel, send now) behind a "
            "confirmation, audited. Binds MAILROOM_WEB_HOST:MAILROOM_WEB_PORT "
            "(127.0.0.1:8026); any other address needs authentication: MAILROOM_WEB_TOKEN "
            "(a bearer token) or MAILROOM_WEB_USER and MAILROOM_WEB_PASSWORD (basic auth), "
            "each also as a _FILE. Connect it as a member of mailroom_operator. Needs the "
            "web extra: pip install 'mailroom[web]'.",
            88,
        ),
        epilog="examples:\n  mailroom web                       http://127.0.0.1:8026/\n"
        "  ssh -L 8026:127.0.0.1:8026 ops-host   then open it on your laptop\n"
        "  MAILROOM_WEB_USER=oncall MAILROOM_WEB_PASSWORD_FILE=/run/secrets/web \\\n"
        "      mailroom web --host 0.0.0.0\n" + OPERATOR_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    web.add_argument(
        "--dsn", default=argparse.SUPPRESS, help="database URL (overrides MAILROOM_DATABASE_URL)"
    )
    web.add_argument("--host", help="address to bind (MAILROOM_WEB_HOST, 127.0.0.1)")
    web.add_argument("--port", type=port, help="port (MAILROOM_WEB_PORT, 8026)")
    web.set_defaults(handler=cmd_web)
