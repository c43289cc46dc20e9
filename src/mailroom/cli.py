"""The ``mailroom`` command.

Exit codes: 0 success; 1 the command ran and the answer is "no" (e.g. a token that does
not verify); 2 bad usage or configuration; 3 the database is unreachable or not migrated.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from mailroom import config as configuration

EPILOG = """\
Configuration comes from MAILROOM_* environment variables (see `mailroom config`);
secrets may be given as files with MAILROOM_DATABASE_URL_FILE / MAILROOM_SECRET_KEY_FILE.

examples:
  mailroom demo                          try it: embedded PostgreSQL, debug transport
  MAILROOM_DATABASE_URL=postgresql://mailroom@db/app mailroom migrate
  MAILROOM_DATABASE_URL=... AWS_REGION=eu-west-1 mailroom run
  mailroom config                        effective settings, secrets redacted
  mailroom check                         exit 0 when the local daemon is ready
  mailroom token verify TOKEN --action activation
"""


def _fail(message: str, code: int = 2) -> int:
    print(f"mailroom: {message}", file=sys.stderr)
    return code


def _load(*, require_database: bool = True) -> configuration.Config:
    return configuration.load(require_database=require_database)


def _connect(cfg: configuration.Config) -> Any:
    import psycopg  # noqa: PLC0415

    return psycopg.connect(cfg.database_url, autocommit=True, connect_timeout=10)


def cmd_migrate(args: argparse.Namespace) -> int:
    from mailroom import migrate  # noqa: PLC0415

    cfg = _load()
    with _connect(cfg) as conn:
        applied = migrate.migrate(conn, channel=cfg.channel_name, modules=tuple(args.modules))
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    if not applied:
        print("schema up to date")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _load(require_database=False)
    width = max(len(name) for name, _ in configuration.describe(cfg))
    for name, value in configuration.describe(cfg):
        print(f"{name:<{width}}  {value}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415

    from mailroom import logs, migrate  # noqa: PLC0415
    from mailroom.daemon import Daemon, make_transport  # noqa: PLC0415

    cfg = _load()
    logs.configure(level=cfg.log_level, fmt=cfg.log_format, reveal_addresses=cfg.reveal_addresses)
    with _connect(cfg) as conn:
        migrate.check_ready(conn, channel=cfg.channel_name)
    try:
        transport = make_transport(cfg)
    except Exception as exc:
        if type(exc).__name__ == "NoRegionError":
            return _fail("no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION)")
        raise
    anyio.run(Daemon(cfg, transport).serve)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from mailroom.health import probe  # noqa: PLC0415

    cfg = _load(require_database=False)
    if not cfg.http_port:
        return _fail("MAILROOM_HTTP_PORT is 0: the health endpoints are off")
    healthy, body = probe(cfg.http_port, "/healthz" if args.live else "/readyz")
    print(body)
    return 0 if healthy else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from mailroom.demo import demo  # noqa: PLC0415

    return demo(args.output)


def cmd_token(args: argparse.Namespace) -> int:
    import time  # noqa: PLC0415

    from mailroom import tokens  # noqa: PLC0415

    cfg = _load(require_database=False)
    if not cfg.secret_keys:
        return _fail("MAILROOM_SECRET_KEY: required for token commands")
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
            return _fail(str(exc))
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
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, handler, summary in (
        ("run", cmd_run, "run the daemon (stops gracefully on SIGTERM/SIGINT)"),
        ("config", cmd_config, "print the effective configuration, secrets redacted"),
    ):
        sub.add_parser(name, help=summary, description=summary).set_defaults(handler=handler)
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
    sign.add_argument("--ttl", type=int, default=900, help="v1 lifetime in seconds (900)")
    for p in (verify, sign):
        p.add_argument("--action", choices=actions, required=True)
        p.add_argument("--code", help="5-digit code (password_recovery)")
    token.set_defaults(handler=cmd_token)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except configuration.ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        import psycopg  # noqa: PLC0415

        from mailroom.migrate import MigrationError  # noqa: PLC0415

        if isinstance(exc, MigrationError):
            return _fail(str(exc), 3)
        if isinstance(exc, psycopg.OperationalError):
            dsn = os.environ.get("MAILROOM_DATABASE_URL", "")
            text = str(exc).replace(dsn, configuration.redact_dsn(dsn)) if dsn else str(exc)
            return _fail(f"cannot reach the database: {text.strip()}", 3)
        raise


if __name__ == "__main__":
    sys.exit(main())
