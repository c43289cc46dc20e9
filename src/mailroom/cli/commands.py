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
from mailroom.cli.args import text_arguments
from mailroom.cli.common import connect, fail, load
from mailroom.config import dsn as dsn_text
from mailroom.config import settings as configuration
from mailroom.text import positive

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
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("schema up to date")
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
    from mailroom.daemon.run import Daemon, make_transport  # noqa: PLC0415
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


def cmd_check(args: argparse.Namespace) -> int:
    from mailroom.health import probe  # noqa: PLC0415

    if args.ses:
        return _check_ses(args)
    if args.schema:
        from mailroom.cli.check import cmd_check_schema  # noqa: PLC0415

        return cmd_check_schema(args)
    cfg = load(require_database=False)
    if not cfg.http_port:
        return fail("MAILROOM_HTTP_PORT is 0: the health endpoints are off")
    healthy, body = probe(cfg.http_port, "/healthz" if args.live else "/readyz")
    print(body)
    return 0 if healthy else 1


def _check_ses(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from mailroom.daemon import preflight  # noqa: PLC0415

    cfg = load(require_database=False)
    templates = None
    if cfg.database_url:
        with connect(cfg) as conn:
            templates = preflight.pending_templates_sync(conn, cfg.queue_name)
    findings = preflight.run(cfg, templates)
    failed = any(f.status == preflight.FAIL for f in findings)
    if args.json:
        document = {"ok": not failed, "findings": [f.as_dict() for f in findings]}
        print(json.dumps(document, indent=2))
    else:
        print(preflight.report(findings))
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mailroom.demo import demo  # noqa: PLC0415

    return demo(args.output)


def cmd_token(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from mailroom import tokens  # noqa: PLC0415

    cfg = load(require_database=False)
    if not cfg.secret_keys:
        return fail("MAILROOM_SECRET_KEY: required for token commands")
    action = tokens.Action(args.action)
    if args.token_command == "sign":  # noqa: S105 -- a subcommand name, not a password
        try:
            secret = bytes.fromhex(args.secret) if args.secret else tokens.new_secret()
            if args.v1:
                expires = int(time.time() + args.ttl)
                token = tokens.sign_v1(
                    cfg.secret_keys[0], action, secret, expires_at=expires, code=args.code
                )
            else:
                token = tokens.sign(cfg.secret_keys[0], action, secret, code=args.code)
        except ValueError as exc:
            return fail(str(exc))
        print(token)
        return 0
    result = tokens.verify_any(args.token, action, cfg.secret_keys, now=time.time(), code=args.code)
    if isinstance(result, tokens.Rejected):
        print(f"invalid: {result.reason.value}")
        return 1
    print(f"valid (key {result.key_index + 1} of {len(cfg.secret_keys)})")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mailroom",
        description="PostgreSQL transactional-email outbox delivered through AWS SES.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--dsn", help="database URL (overrides MAILROOM_DATABASE_URL)")
    top.add_argument("--version", action="version", version=f"mailroom {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    summary = "run the daemon (stops gracefully on SIGTERM/SIGINT)"
    sub.add_parser("run", help=summary, description=summary).set_defaults(handler=cmd_run)
    summary = "print the effective configuration, secrets redacted"
    config = sub.add_parser("config", help=summary, description=summary)
    config.add_argument(
        "--json", action="store_true",
        help="one JSON object: each variable with its effective value as `config` prints it",
    )  # fmt: skip
    config.set_defaults(handler=cmd_config)
    summary = "apply pending schema migrations (safe to repeat, from every replica at once)"
    migrate = sub.add_parser("migrate", help=summary, description=summary)
    migrate.add_argument(
        "--with", dest="modules", action="append", default=[], choices=["lifecycle"],
        help="also install an optional module: lifecycle = accounts, tokens and their emails",
    )  # fmt: skip
    migrate.set_defaults(handler=cmd_migrate)
    check = sub.add_parser(
        "check",
        help="exit 0 if the local daemon is ready (for Docker HEALTHCHECK), 1 if not",
        description="Asks the daemon on 127.0.0.1:$MAILROOM_HTTP_PORT for /readyz "
        "(database reachable, LISTEN alive, not shutting down) and prints its checks.",
    )
    check.add_argument("--live", action="store_true", help="liveness only (/healthz)")
    check.add_argument(
        "--ses", action="store_true",
        help="instead: the SES go-live preflight (credentials, sandbox, From identity, "
        "configuration set and event destination, pending messages' templates); exit 0 "
        "when nothing fails, 1 otherwise",
    )  # fmt: skip
    check.add_argument(
        "--schema", action="store_true",
        help="instead: list mailroom objects bound to an operator, function, type or "
        "collation outside pg_catalog (an install migrated under an unsafe search_path); "
        "exit 1 if any",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="with --ses/--schema: as JSON")
    check.add_argument("--dsn", default=argparse.SUPPRESS, help="with --schema: database URL")
    check.set_defaults(handler=cmd_check)
    demo = sub.add_parser(
        "demo",
        help="try mailroom: embedded PostgreSQL, a few emails, debug transport",
        description="Starts a throwaway PostgreSQL, migrates it, enqueues sample emails, "
        "delivers them with the debug transport and shows the files written.",
    )
    demo.add_argument("--output", default="./output", help="where to write (default ./output)")
    demo.set_defaults(handler=cmd_demo)

    token = sub.add_parser("token", help="sign or verify HMAC tokens (uses MAILROOM_SECRET_KEY)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    actions = ["activation", "password_recovery"]
    verify = token_sub.add_parser("verify", help="exit 0 if TOKEN is valid, 1 if not")
    verify.add_argument("token")
    sign = token_sub.add_parser("sign", help="print a token for a secret (random if omitted)")
    sign.add_argument("--secret", help="32-byte secret as 64 hex characters")
    sign.add_argument("--v1", action="store_true", help="versioned format binding an expiry")
    sign.add_argument("--ttl", type=positive, default=900, help="v1 lifetime in seconds (900)")
    for p in (verify, sign):
        p.add_argument("--action", choices=actions, required=True)
        p.add_argument("--code", help="5-digit code (password_recovery)")
    token.set_defaults(handler=cmd_token)
    from mailroom.cli import ops  # noqa: PLC0415 -- light; `run` stays lean

    ops.operator_commands(sub)
    from mailroom.cli import queue as queue_commands  # noqa: PLC0415 -- as ops

    queue_commands.add_commands(sub)
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
    return _run(parser().parse_args(words))


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
        return fail(f"cannot reach the database: {text.strip()}", 3)
    return None


if __name__ == "__main__":
    sys.exit(main())
