"""``mailroom demo``: the whole flow on a laptop with nothing but Python.

An embedded PostgreSQL, the real schema and daemon, and the debug transport (the seed's
MAILROOM_DEBUG mode): nothing leaves the machine; each SES request is written to a file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import psycopg

from mailroom import client, logs, migrate, outbox, tokens
from mailroom.config import settings as config
from mailroom.daemon.run import Daemon
from mailroom.daemon.startup import make_transport
from mailroom.embedded import EmbeddedPostgres


def _samples(conn: psycopg.Connection[Any]) -> list[int]:
    raw = EmailMessage()
    raw["From"] = "noreply@example.com"
    raw["To"] = "carol@example.com"
    raw["Subject"] = "Your invoice"
    raw.set_content("Invoice attached (this one is raw MIME).")
    with conn.transaction():  # one transaction: the emails exist only if it commits
        # the lifecycle schema: a provisioned account gets an activation email whose
        # token the daemon signs at send time
        conn.execute(
            "INSERT INTO mailroom.accounts (login, email) VALUES ('alice', 'alice@example.com')"
        )
        return [
            *(row[0] for row in conn.execute("SELECT id FROM mailroom.outbox")),
            client.enqueue(
                conn, "bob@example.com", template="welcomev1", data={"name": "Bob"},
            ),
            client.enqueue(
                conn, "dave@example.com", subject="Welcome", text="Hello Dave!",
                html="<p>Hello <b>Dave</b>!</p>", priority=5,
            ),
            client.enqueue(conn, "carol@example.com", raw=raw.as_bytes()),
        ]  # fmt: skip


async def _deliver(cfg: config.Config, expected: int) -> dict[str, int]:
    daemon = Daemon(cfg, make_transport(cfg))
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        async with await psycopg.AsyncConnection.connect(cfg.database_url, autocommit=True) as conn:
            await outbox.secure_session_async(conn)
            with anyio.fail_after(30):
                while True:
                    counts = await outbox.status_counts(conn, cfg.queue_name)
                    if counts.get("sent", 0) + counts.get("dead", 0) >= expected:
                        break
                    await anyio.sleep(0.05)
        daemon.stop()
    return counts


def _activation_token(files: list[Path]) -> str | None:
    for path in files:
        request = json.loads(path.read_text(encoding="utf-8"))["request"]
        if (
            request.get("DefaultContent", {}).get("Template", {}).get("TemplateName")
            == "activationv1"
        ):
            entry = request["BulkEmailEntries"][0]["ReplacementEmailContent"]
            return str(
                json.loads(entry["ReplacementTemplate"]["ReplacementTemplateData"])["secret"]
            )
    return None


def demo(output: str, *, as_json: bool = False) -> int:
    """The walkthrough, narrated on stdout; with ``as_json`` the narration goes to stderr
    and stdout gets one JSON document of what was done (``mailroom demo --json``)."""
    out = Path(output).resolve()
    stream = sys.stderr if as_json else sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    say("mailroom demo: starting an embedded PostgreSQL ...")
    with EmbeddedPostgres() as pg:
        dsn = pg.dsn()
        say(f"  database   {dsn}")
        key = tokens.new_secret().hex()  # a throwaway key for this demo only
        cfg = config.load(
            {
                "MAILROOM_DATABASE_URL": dsn,
                "MAILROOM_SECRET_KEY": key,
                "MAILROOM_DEBUG": "true",
                "MAILROOM_SES_OUTPUT_PATH": str(out),
                "MAILROOM_LOG_FORMAT": "console",
                "MAILROOM_LOG_LEVEL": "warning",
            }
        )
        cfg = dataclasses.replace(cfg, worker_name="demo")
        logs.configure(level=cfg.log_level, fmt=cfg.log_format)
        with outbox.connect(dsn) as conn:
            applied = migrate.migrate(conn, channel=cfg.channel_name, modules=("lifecycle",))
            say(f"  migrated   {', '.join(f'{m.version:04d}_{m.name}' for m in applied)}")
            ids = _samples(conn)
            say(f"  enqueued   {len(ids)} emails (ids {', '.join(map(str, ids))})")
        counts = anyio.run(_deliver, cfg, len(ids))
        say(f"  delivered  {counts}")
    files = sorted(out.glob("*.json"))[-len(ids) :]
    say(f"\nMAILROOM_DEBUG mode wrote each SES request it would have made to {out}:")
    for path in files:
        say(f"  {path.name}")
    token = _activation_token(files)
    if token:
        say("\nAlice's activation link carries a seed-compatible signed token; check it with:")
        say(f"  MAILROOM_SECRET_KEY={key} mailroom token verify {token} --action activation")
    say("\nNext: docs/architecture.md; run for real with `mailroom migrate` and `mailroom run`.")
    if as_json:
        print(json.dumps({
            "output": str(out), "enqueued": ids, "delivered": counts,
            "files": [path.name for path in files],
            "secret_key": key, "activation_token": token,  # the demo's throwaway key
        }, indent=2))  # fmt: skip
    return 0 if counts.get("sent", 0) == len(ids) else 1


if __name__ == "__main__":
    sys.exit(demo("./output"))
