"""The ``mailroom`` command.

Exit codes: 0 success; 1 the command ran and the answer is "no" (e.g. a token that does
not verify, an unknown message id, a test message that died); 2 bad usage or
configuration; 3 the database is unreachable, not migrated, or refused access.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from mailroom.cli import common
from mailroom.cli.args import EXIT_CODES, Parser, as_json, command, text_arguments
from mailroom.cli.common import connect, fail, load
from mailroom.config import dsn as dsn_text
from mailroom.config import settings as configuration

EPILOG = """\
Configuration comes from MAILROOM_* environment variables (see `mailroom config`);
secrets may be given as files with MAILROOM_DATABASE_URL_FILE / MAILROOM_SECRET_KEY_FILE.

examples:
  mailroom demo                          try it: embedded PostgreSQL, debug transport
  MAILROOM_DATABASE_URL=postgresql://mailroom@db/app mailroom migrate
  MAILROOM_DATABASE_URL=... AWS_REGION=eu-west-1 mailroom run
  mailroom config                        effective settings, secrets redacted
  mailroom check                         exit 0 when the local daemon is ready
  mailroom status                        what is waiting, failing, sending (--json)
  mailroom show 42                       one message and its attempts
  mailroom dead list --since 1h          recent dead letters, then `dead retry` / `dead purge`
  mailroom send-test --to you@example.com --wait
  mailroom token verify TOKEN --action activation
  mailroom templates diff                SES's stored templates against the files (CI)

Commands that use the database take --dsn (before or after the command name) or
MAILROOM_DATABASE_URL. Exit codes: 0 ok; 1 the answer is "no" (token invalid, no such
message, test message dead or late, purge declined); 2 bad usage or configuration;
3 database unreachable, not migrated (run `mailroom migrate`) or access refused.
See docs/cli.md.
"""


def cmd_migrate(args: argparse.Namespace) -> int:
    from mailroom import lifecycle, migrate  # noqa: PLC0415

    cfg = load()
    batches = [0]

    def progress(mark: int) -> None:  # 0029's backfill (migrate.finish): a line a 100 batches
        batches[0] += 1
        if mark == 0 or batches[0] % 100 == 0:
            left = f"messages with ids up to {mark} left" if mark else "every message searchable"
            print(f"recipient search: {batches[0]} batch(es) filled in, {left}", file=sys.stderr,
                  flush=True)  # fmt: skip

    with connect(cfg) as conn:
        applied = migrate.migrate(conn, channel=cfg.channel_name, modules=tuple(args.modules),
                                  progress=progress)  # fmt: skip
        unowned = lifecycle.unowned_accounts(conn)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    if args.json:
        import json  # noqa: PLC0415

        print(json.dumps({"applied": names, "unowned_accounts": unowned}, indent=2))
    else:
        print("\n".join(f"applied {name}" for name in names) or "schema up to date")
    if unowned:  # every migrate says so, until they are assigned
        print(f"warning: {unowned} lifecycle account(s) have no owner and are visible to no "
              "application: assign them with mailroom.assign_account_owner (docs/tokens.md, "
              "'Upgrading to 1004')", file=sys.stderr)  # fmt: skip
    return 0


class PrivilegeError(Exception):
    """The connected role lacks what a command needs (exit 3)."""


def _check_privileges(conn: Any, query_name: str, role: str) -> None:
    from mailroom.outbox import query  # noqa: PLC0415

    missing = [row[0] for row in conn.execute(query(query_name)).fetchall()]
    if missing:
        who = conn.info.user
        raise PrivilegeError(
            f"role {who!r} lacks {', '.join(missing)}: grant it {role} "
            "(see docs/operations.md, 'Database roles')"
        )


def cmd_config(args: argparse.Namespace) -> int:
    cfg = load(require_database=False)
    if args.json:
        import json  # noqa: PLC0415

        print(json.dumps(dict(configuration.describe(cfg)), indent=2))
        return 0
    width = max(len(name) for name, _ in configuration.describe(cfg))
    for name, value in configuration.describe(cfg):
        print(f"{name:<{width}}  {value}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import gc  # noqa: PLC0415

    import anyio  # noqa: PLC0415

    from mailroom import logs, migrate  # noqa: PLC0415
    from mailroom.daemon.run import Daemon  # noqa: PLC0415
    from mailroom.daemon.startup import make_transport  # noqa: PLC0415
    from mailroom.transports import SetupError  # noqa: PLC0415

    try:
        cfg = load()
    except configuration.ConfigError:
        # a bad setting, maybe not the log format's: log the refusal as that asks for
        fmt = os.environ.get("MAILROOM_LOG_FORMAT", "auto").lower()  # as config reads it
        if fmt in ("auto", "json", "console"):
            common.log_json = logs.configure(fmt=fmt)
        raise
    # main()'s error paths must know how `run` logs
    common.log_json = logs.configure(
        level=cfg.log_level, fmt=cfg.log_format, reveal_addresses=cfg.reveal_addresses
    )
    try:  # configuration first: a bad setting exits 2 whether or not the database is up
        transport = make_transport(cfg)
    except SetupError as exc:
        return fail(str(exc))
    with connect(cfg) as conn:
        migrate.check_ready(conn, channel=cfg.channel_name)
        _check_privileges(conn, "daemon_privileges", "mailroom_daemon")
    daemon = Daemon(cfg, transport)
    # Start-up leaves ~58,000 long-lived objects (modules, botocore's tables); every full
    # collection of the cyclic GC would walk them: a 25 ms pause, mid-send, here.
    gc.freeze()
    anyio.run(daemon.serve)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailroom.demo import demo  # noqa: PLC0415

    return demo(args.output, as_json=args.json)


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="mailroom",
        description="PostgreSQL transactional-email outbox delivered through AWS SES.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--dsn", metavar="URL", help="database URL (overrides MAILROOM_DATABASE_URL)")
    top.add_argument("--version", action="version", version=f"mailroom {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = command(
        sub, "run", "run the daemon (stops gracefully on SIGTERM/SIGINT)",
        description="Runs the daemon: claims due messages of MAILROOM_QUEUE_NAME and sends "
        "them through SES (or writes them, MAILROOM_DEBUG), until SIGTERM or SIGINT, which "
        "finish what was claimed. It prints nothing but its log (JSON lines with "
        "MAILROOM_LOG_FORMAT=json; a start-up refusal is a log line too).",
        examples="  MAILROOM_DATABASE_URL=postgresql://mailroom@db/app AWS_REGION=eu-west-1 "
        "mailroom run\n  mailroom run --dsn postgresql://mailroom@db/app\n",
        exit_codes=EXIT_CODES + "(the daemon connects as a member of mailroom_daemon)\n",
    )  # fmt: skip
    run.set_defaults(handler=cmd_run)
    config = command(
        sub, "config", "print the effective configuration, secrets redacted",
        description="Every MAILROOM_* setting with its effective value (the environment, "
        "_FILE secrets, defaults), passwords and keys redacted. Exit 2, one line per "
        "problem, when a setting is invalid. Connects to nothing.",
        examples="  mailroom config\n  mailroom config --json | jq .MAILROOM_QUEUE_NAME\n",
        parents=[as_json()],
    )  # fmt: skip
    config.set_defaults(handler=cmd_config)
    migrate = command(
        sub, "migrate", "apply pending schema migrations (safe to repeat, from every replica "
        "at once)",
        description="Applies the pending migrations of the mailroom schema in order, each in "
        "its transaction, under an advisory lock (replicas starting together wait for each "
        "other). Run it as the owner of the mailroom schema.",
        examples="  mailroom migrate\n  mailroom migrate --with lifecycle --json\n"
        "  mailroom migrate --dsn postgresql://owner@db/app\n",
        parents=[as_json()],
    )  # fmt: skip
    migrate.add_argument(
        "--with", dest="modules", action="append", default=[], choices=["lifecycle"],
        help="also install an optional module: lifecycle = accounts, tokens and their emails",
    )  # fmt: skip
    migrate.set_defaults(handler=cmd_migrate)
    demo = command(
        sub, "demo", "try mailroom: embedded PostgreSQL, a few emails, debug transport",
        description="Starts a throwaway PostgreSQL, migrates it, enqueues sample emails, "
        "delivers them with the debug transport and shows the files written. Uses no "
        "database of yours: --dsn and MAILROOM_DATABASE_URL are not read.",
        examples="  mailroom demo\n  mailroom demo --output /tmp/mailroom-demo --json\n",
        parents=[as_json()],
    )  # fmt: skip
    demo.add_argument("--output", default="./output", help="where to write (default ./output)")
    demo.set_defaults(handler=cmd_demo)
    # Each command's parser lives beside its handler; the modules import only operator/
    # (plain SQL wrappers), never the console or boto3, so `run` stays lean.
    from mailroom.cli import (  # noqa: PLC0415
        actions,
        check,
        dead,
        messages,
        queue,
        stats,
        suppression,
        templates,
        token,
    )
    from mailroom.cli import web as console  # noqa: PLC0415

    modules = (check, token, stats, messages, dead, actions, suppression, queue, console, templates)
    for module in modules:
        module.add_commands(sub)
    return top


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("mailroom")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    common.log_json = False  # a command run in-process earlier must not leak it
    words = list(sys.argv[1:] if argv is None else argv)
    problem = text_arguments(words)
    if problem:
        return fail(problem)
    try:
        args = parser().parse_args(words)
    except SystemExit as exc:  # --help, --version (0) or a usage error, already printed (2)
        return exc.code if isinstance(exc.code, int) else 2
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "dsn", None):
        os.environ["MAILROOM_DATABASE_URL"] = args.dsn
        os.environ.pop("MAILROOM_DATABASE_URL_FILE", None)
    try:
        return int(args.handler(args))
    except configuration.ConfigError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`: not worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except PrivilegeError as exc:
        return fail(str(exc), 3)
    except Exception as exc:
        code = _explain(exc, args)
        if code is None:
            raise
        return code


# Which role each database command needs (docs/operations.md, "Database roles").
NEEDS = {
    "migrate": "the owner of the mailroom schema",
    "run": "mailroom_daemon",
    "status": "mailroom_operator (or mailroom_daemon)",
    "show": "mailroom_operator",
}


def _explain(exc: Exception, args: argparse.Namespace) -> int | None:
    """Exit code (after a message) for a database-side failure; None: a bug, re-raise."""
    import psycopg  # noqa: PLC0415

    from mailroom.migrate import MigrationError  # noqa: PLC0415

    if isinstance(exc, MigrationError):
        return fail(str(exc), 3)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        needs = NEEDS.get(args.command, "mailroom_operator")
        return fail(
            f"the database refused: {str(exc).strip().splitlines()[0]} "
            f"(`mailroom {args.command}` needs {needs}; see docs/operations.md, 'Database roles')",
            3,
        )
    if isinstance(exc, psycopg.OperationalError):
        dsn = os.environ.get("MAILROOM_DATABASE_URL", "")
        text = dsn_text.scrub(str(exc), dsn)
        # libpq adds a hint on a line of its own ("\tIs the server running ..."): one line
        return fail(f"cannot reach the database: {' '.join(text.split())}", 3)
    return None


if __name__ == "__main__":
    sys.exit(main())
