"""Upgrading to 0029 (recipient search): a database at 0028 with messages in every form is
migrated, and every old message is then found; the post-migration step (migrate.finish)
fills the old messages in batches, carries on after a kill, and rebuilds an index a killed
CREATE INDEX CONCURRENTLY left invalid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

import mailroom
from mailroom import migrate
from mailroom.cli import commands as cli
from mailroom.operator.find import Filter, find, incomplete_notice, unsearched_below


@pytest.fixture
def at_0028(migrated_to: Callable[[int], str]) -> str:
    return migrated_to(28)


_OLD = [
    ('"Alice Smith" <Alice@Example.com>', [], []),
    ("alice@example.com", [], []),
    ("carol@example.net", ["Alice <ALICE@example.com>"], []),
    ("dave@example.net", [], ["alice@example.com"]),
    ("Ann <ann@bücher.de>", [], []),
]


def _ids(conn: psycopg.Connection[Any], typed: str) -> set[int]:
    rows, more = find(conn, Filter(recipient=typed), limit=500)
    assert more is None
    return {int(r["id"]) for r in rows}


def _killed_batch(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT mailroom.backfill_recipients(100)")
        conn.execute("SET LOCAL statement_timeout = 1")
        conn.execute("SELECT pg_sleep(1)")


def test_every_old_message_is_found_after_the_upgrade(
    at_0028: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(at_0028, autocommit=True) as conn:
        old = [mailroom.enqueue(conn, to, cc=cc, bcc=bcc, subject="s", text="t")
               for to, cc, bcc in _OLD]  # fmt: skip
        # 250 more, so that the batches below are several
        conn.execute(
            "INSERT INTO mailroom.outbox (to_addresses, subject, body_text)"
            " SELECT ARRAY['User <u' || i || '@bulk.example>'], 's', 't'"
            " FROM generate_series(1, 250) AS i"
        )
        assert old[-1] < conn.execute("SELECT max(id) FROM mailroom.outbox").fetchone()[0]  # type: ignore[index]

        # the migration alone, as if migrate were killed right after it committed
        m29 = next(m for m in migrate.available() if m.version == 29)
        with conn.transaction():
            conn.execute(
                migrate.query("search_path_set"), {"path": migrate.SAFE_PATH, "local": True}
            )
            conn.execute(sql.SQL(m29.text))  # type: ignore[arg-type]  # our own file
            record = {"version": 29, "name": m29.name, "checksum": m29.checksum}
            conn.execute(migrate.query("migrations_record"), record)
        # a message enqueued now is the trigger's, and found at once
        new = mailroom.enqueue(conn, "Alice <alice@EXAMPLE.com>", subject="s", text="t")
        assert _ids(conn, "alice@example.com") == {new}

        # one batch done, then a batch killed half-way (its transaction rolled back)
        conn.execute("SELECT mailroom.backfill_recipients(100)")
        assert unsearched_below(conn) == old[-1] + 250 - 100  # the ids still to fill
        assert "not searchable by recipient yet" in str(incomplete_notice(unsearched_below(conn)))
        with pytest.raises(psycopg.errors.QueryCanceled):
            _killed_batch(conn)
        # and a CREATE INDEX CONCURRENTLY killed: its index is left invalid
        conn.execute(migrate.query("outbox_live_index_create"))
        conn.execute("UPDATE pg_index SET indisvalid = false"
                     " WHERE indexrelid = 'mailroom.outbox_live'::regclass")  # fmt: skip

        # `mailroom migrate`: 0029 was applied, only the post-migration step (and the
        # migrations after 0029) run; the 155 messages the first batch left take one batch
        # of 10,000
        capsys.readouterr()
        assert cli.main(["--dsn", at_0028, "migrate"]) == 0
        out = capsys.readouterr()
        later = [f"applied {m.version:04d}_{m.name}" for m in migrate.available() if m.version > 29]
        assert out.out.strip().splitlines() == (later or ["schema up to date"])
        assert "recipient search: 1 batch(es) filled in, every message searchable" in out.err

        alice = {old[0], old[1], old[2], old[3], new}
        assert _ids(conn, "alice@example.com") == alice
        assert _ids(conn, "ann@bücher.de") == {old[4]}
        assert len(_ids(conn, "@bulk.example")) == 250
        # nothing twice: the killed batch left nothing, the redone one wrote each row once
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM mailroom.outbox_recipients"
            " GROUP BY message_id, field, address HAVING count(*) > 1) AS d"
        ).fetchone()
        assert twice == (0,)
        rows = conn.execute("SELECT count(*) FROM mailroom.outbox_recipients").fetchone()
        assert rows == (len(old) + 2 + 250 + 1,)  # the cc and bcc messages have two each
        valid = conn.execute(migrate.query("outbox_live_index")).fetchone()
        assert valid == (True,)
        assert unsearched_below(conn) == 0
        assert incomplete_notice(0) is None
        # migrate again: nothing left to do
        assert migrate.finish(conn) == migrate.Finished(built_index=False, batches=0)
