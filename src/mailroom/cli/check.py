"""The command ``check`` and its parser: the local daemon's readiness (its /readyz or
/healthz), ``--ses`` the SES go-live preflight (daemon/preflight.py), ``--schema`` the
mailroom objects bound to something outside pg_catalog (operator/schema_check.py), each
exit 1 when the answer is "no"."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mailroom.cli.args import EXIT_CODES, as_json, command
from mailroom.cli.common import connect, fail, load
from mailroom.config import settings as configuration
from mailroom.operator.schema_check import FIX, bindings


def cmd_check(args: argparse.Namespace) -> int:
    from mailroom.health import probe  # noqa: PLC0415

    if args.ses:
        return _check_ses(args)
    if args.schema:
        return cmd_check_schema(args)
    cfg = load(require_database=False)
    if not cfg.http_port:
        return fail("MAILROOM_HTTP_PORT is 0: the health endpoints are off")
    path = "/healthz" if args.live else "/readyz"
    healthy, body = probe(cfg.http_port, path)
    if args.json:
        print(json.dumps(health_document(healthy, path, body), indent=2))
    else:
        print(body)
    return 0 if healthy else 1


def health_document(healthy: bool, path: str, body: str) -> dict[str, Any]:
    """``check --json``: the endpoint's own JSON under "checks", or why it was not read
    (no daemon listening, a body that is not JSON) under "error"."""
    try:
        checks = json.loads(body)
    except ValueError:
        return {"ok": False, "endpoint": path, "checks": None, "error": body[:500]}
    return {"ok": healthy, "endpoint": path, "checks": checks, "error": None}


def _check_ses(args: argparse.Namespace) -> int:
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


def cmd_check_schema(args: argparse.Namespace) -> int:
    from mailroom import outbox  # noqa: PLC0415

    cfg = configuration.load(require_database=True)
    with outbox.connect(cfg.database_url, connect_timeout=10) as conn:
        found = bindings(conn)
    if args.json:
        document = {
            "ok": not found,
            "bindings": [{"object": obj, "depends_on": dep} for obj, dep in found],
            "fix": FIX if found else None,
        }
        print(json.dumps(document, indent=2))
    elif found:
        for obj, dep in found:
            print(f"mailroom {obj} depends on {dep}")
        print(f"{len(found)} binding(s) outside pg_catalog and mailroom: {FIX}")
    else:
        print("schema: nothing in mailroom depends on an object outside pg_catalog and mailroom")
    return 1 if found else 0


def add_commands(sub: Any) -> None:
    check = command(
        sub, "check", "exit 0 if the local daemon is ready (for Docker HEALTHCHECK), 1 if not",
        description="Asks the daemon on 127.0.0.1:$MAILROOM_HTTP_PORT for /readyz (database "
        "reachable, LISTEN alive, not shutting down) and prints its checks; exit 1 when it is "
        "not ready or does not answer. --ses and --schema check other things instead.",
        examples="  mailroom check                      in a HEALTHCHECK or a readiness probe\n"
        "  mailroom check --live --json\n"
        "  mailroom check --ses                before going live: credentials, sandbox, ...\n"
        "  mailroom --dsn postgresql://owner@db/app check --schema\n",
        parents=[as_json()], exit_codes=EXIT_CODES,
    )  # fmt: skip
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
    check.set_defaults(handler=cmd_check)
