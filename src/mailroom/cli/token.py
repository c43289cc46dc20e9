"""The commands ``token sign | verify`` and their parsers: HMAC tokens with the keys of
MAILROOM_SECRET_KEY (mailroom.tokens), no database. ``verify`` exits 1 when the token
does not verify."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mailroom.cli.args import as_json, command
from mailroom.cli.common import fail, load
from mailroom.text import positive


def cmd_token(args: argparse.Namespace) -> int:
    from mailroom import tokens  # noqa: PLC0415

    cfg = load(require_database=False)
    if not cfg.secret_keys:
        return fail("MAILROOM_SECRET_KEY: required for token commands")
    action = tokens.Action(args.action)
    if args.token_command == "sign":  # noqa: S105 -- a subcommand name, not a password
        try:
            secret = bytes.fromhex(args.secret) if args.secret else tokens.new_secret()
            expires = int(time.time() + args.ttl) if args.v1 else None
            if expires is not None:
                token = tokens.sign_v1(
                    cfg.secret_keys[0], action, secret, expires_at=expires, code=args.code
                )
            else:
                token = tokens.sign(cfg.secret_keys[0], action, secret, code=args.code)
        except ValueError as exc:
            return fail(str(exc))
        document = {"token": token, "action": args.action, "expires_at": expires}
        print(json.dumps(document) if args.json else token)
        return 0
    result = tokens.verify_any(args.token, action, cfg.secret_keys, now=time.time(), code=args.code)
    rejected = isinstance(result, tokens.Rejected)
    if args.json:
        print(json.dumps({
            "valid": not rejected,
            "reason": result.reason.value if isinstance(result, tokens.Rejected) else None,
            "key": None if isinstance(result, tokens.Rejected) else result.key_index + 1,
            "keys": len(cfg.secret_keys),
        }))  # fmt: skip
    elif isinstance(result, tokens.Rejected):
        print(f"invalid: {result.reason.value}")
    else:
        print(f"valid (key {result.key_index + 1} of {len(cfg.secret_keys)})")
    return 1 if rejected else 0


SIGNING_EXIT_CODES = """
exit codes: 0 ok (verify: the token is valid); 1 verify: the token is not valid;
2 bad usage or configuration (no MAILROOM_SECRET_KEY, a bad --secret); no database is used
"""


def add_commands(sub: Any) -> None:
    token = command(
        sub, "token", "sign or verify HMAC tokens (uses MAILROOM_SECRET_KEY)",
        description="The activation and password-recovery tokens the lifecycle emails carry "
        "(docs/tokens.md), signed and verified with the keys of MAILROOM_SECRET_KEY (the "
        "first signs; any verifies, for key rotation). Uses no database.",
        examples="  mailroom token sign --action activation\n"
        "  mailroom token verify TOKEN --action activation --json\n",
        exit_codes=SIGNING_EXIT_CODES,
    )  # fmt: skip
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    verify = command(
        token_sub, "verify", "exit 0 if TOKEN is valid, 1 if not",
        description="Checks TOKEN for the action (and its code, for password_recovery) "
        "against every key of MAILROOM_SECRET_KEY; prints which key verified it, or why it "
        "did not verify.",
        examples="  mailroom token verify TOKEN --action activation\n"
        "  mailroom token verify TOKEN --action password_recovery --code 12345 --json\n",
        parents=[as_json()], exit_codes=SIGNING_EXIT_CODES,
    )  # fmt: skip
    verify.add_argument("token", metavar="TOKEN")
    sign = command(
        token_sub, "sign", "print a token for a secret (random if omitted)",
        description="Signs a token for the action with the first key of MAILROOM_SECRET_KEY: "
        "for the given 32-byte secret, or a random one. --v1 binds an expiry (--ttl).",
        examples="  mailroom token sign --action activation\n"
        "  mailroom token sign --action activation --v1 --ttl 3600 --json\n",
        parents=[as_json()], exit_codes=SIGNING_EXIT_CODES,
    )  # fmt: skip
    sign.add_argument("--secret", help="32-byte secret as 64 hex characters")
    sign.add_argument("--v1", action="store_true", help="versioned format binding an expiry")
    sign.add_argument("--ttl", type=positive, default=900, help="v1 lifetime in seconds (900)")
    for p in (verify, sign):
        p.add_argument("--action", choices=["activation", "password_recovery"], required=True)
        p.add_argument("--code", help="5-digit code (password_recovery)")
    token.set_defaults(handler=cmd_token)
