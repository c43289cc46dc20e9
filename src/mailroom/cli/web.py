"""The command ``mailroom web`` and its parser: serves the operators' console
(mailroom.web, the optional extra, imported only when the command runs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from mailroom.cli.args import OPERATOR_EXIT_CODES, command, port
from mailroom.cli.common import fail, load
from mailroom.config.settings import ConfigError


def blame_options(exc: ConfigError, args: argparse.Namespace) -> ConfigError:
    """The web settings' problems, naming --host / --port where the operator gave the
    value on the command line rather than in the environment variable it overrides."""
    given = {"MAILROOM_WEB_HOST:": args.host, "MAILROOM_WEB_PORT:": args.port}
    flags = {"MAILROOM_WEB_HOST:": "--host:", "MAILROOM_WEB_PORT:": "--port:"}
    problems = []
    for problem in exc.problems:
        variable = problem.split(" ", 1)[0]
        blamed = variable in given and given[variable] is not None
        problems.append(flags[variable] + problem[len(variable) :] if blamed else problem)
    return ConfigError(problems)


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from mailroom.web import app, settings  # noqa: PLC0415 -- the optional extra
    except ImportError as exc:
        return fail(f"`mailroom web` needs the web extra: pip install 'mailroom[web]' ({exc})")
    from mailroom.text import CommandError  # noqa: PLC0415

    cfg = load()
    env = dict(os.environ)
    if args.host is not None:
        env["MAILROOM_WEB_HOST"] = args.host
    if args.port is not None:
        env["MAILROOM_WEB_PORT"] = str(args.port)
    try:
        web_settings = settings.load(env)
    except ConfigError as exc:
        raise blame_options(exc, args) from None
    try:
        app.serve(cfg, web_settings)
    except CommandError as exc:
        return fail(str(exc), exc.code)
    except OSError as exc:  # the port is taken, or the address not this host's: a setting
        given = [flag for flag, value in (("--host", args.host), ("--port", args.port))
                 if value is not None] or ["MAILROOM_WEB_HOST", "MAILROOM_WEB_PORT"]  # fmt: skip
        return fail(f"{' / '.join(given)}: cannot listen on {web_settings.host}:"
                    f"{web_settings.port}: {exc.strerror or exc}")  # fmt: skip
    return 0


def add_commands(sub: Any) -> None:
    web = command(
        sub, "web", "the operators' web console (own port, loopback by default)",
        description="Serves the console: overview, message search, a message's attempts and "
        "audit, dead letters, and the actions (retry, purge, cancel, send now) behind a "
        "confirmation, audited; every queue. Binds MAILROOM_WEB_HOST:MAILROOM_WEB_PORT "
        "(127.0.0.1:8026; --host and --port override them); any other address needs "
        "authentication: MAILROOM_WEB_TOKEN (a bearer token) or MAILROOM_WEB_USER and "
        "MAILROOM_WEB_PASSWORD (basic auth), each also as a _FILE. Connect it as a member "
        "of mailroom_operator (or mailroom_viewer: read only). Needs the web extra: pip "
        "install 'mailroom[web]'. It prints nothing but its log; it runs until stopped.",
        examples="  mailroom web                       http://127.0.0.1:8026/\n"
        "  ssh -L 8026:127.0.0.1:8026 ops-host   then open it on your laptop\n"
        "  MAILROOM_WEB_USER=oncall MAILROOM_WEB_PASSWORD_FILE=/run/secrets/web \\\n"
        "      mailroom web --host 0.0.0.0\n",
        exit_codes=OPERATOR_EXIT_CODES,
    )  # fmt: skip
    web.add_argument("--host", help="address to bind (MAILROOM_WEB_HOST, 127.0.0.1)")
    web.add_argument("--port", type=port, help="port, 0-65535 (MAILROOM_WEB_PORT, 8026)")
    web.set_defaults(handler=cmd_web)
