"""`mailroom suppression list --limit/--cursor` (issue 22, "paging everywhere", sql/0032):
in-process through the CLI's own main() against the real PostgreSQL, as mailroom_operator
and as mailroom_viewer. Entries added in one statement share one created_at (an import, a
bulk add): the cursor must neither skip nor repeat one of them, nor one added or removed
between two pages, and must not carry an address."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from mailroom.cli.commands import main


def _list(capsys: pytest.CaptureFixture[str], dsn: str, *args: str) -> dict[str, Any]:
    code = main(["suppression", "list", "--dsn", dsn, "--json", "--reveal", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    document: dict[str, Any] = json.loads(out.out)
    return document


@pytest.mark.parametrize("role", ["mailroom_operator", "mailroom_viewer"])
def test_pages_cover_every_entry_once_and_the_cursor_names_no_address(
    role: str,
    conn: psycopg.Connection[Any],
    login_as: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = login_as(role)
    conn.execute(
        "INSERT INTO mailroom.suppressions (address, reason) "
        "SELECT 'tie' || i || '@example.com', 'bounce' FROM generate_series(1, 7) AS i"
    )  # seven entries, one created_at
    conn.execute("INSERT INTO mailroom.suppressions (address, reason, created_at) VALUES "
                 "('old@example.com', 'complaint', now() - interval '1 day')")  # fmt: skip
    seen: list[str] = []
    page = _list(capsys, dsn, "--limit", "3")
    cursors = []
    while True:
        assert page["total"] == 8  # of the whole filter, on every page
        seen += [e["address"] for e in page["entries"]]
        if page["next_cursor"] is None:
            break
        cursors.append(page["next_cursor"])
        assert "@" not in page["next_cursor"]
        assert "tie" not in page["next_cursor"]
        page = _list(capsys, dsn, "--limit", "3", "--cursor", page["next_cursor"])
    assert len(cursors) == 2  # 3 + 3 + 2
    assert len(seen) == len(set(seen)) == 8
    assert seen[-1] == "old@example.com"  # newest first

    # between two pages: an entry of page 1 removed and a new one added skip nothing later
    first = _list(capsys, dsn, "--limit", "3")
    conn.execute("DELETE FROM mailroom.suppressions WHERE address = %s",
                 (first["entries"][0]["address"],))  # fmt: skip
    conn.execute("INSERT INTO mailroom.suppressions (address, reason) "
                 "VALUES ('new@example.com', 'manual')")  # fmt: skip
    rest = _list(capsys, dsn, "--limit", "10", "--cursor", first["next_cursor"])
    later = [a for a in seen if a not in {e["address"] for e in first["entries"]}]
    assert [e["address"] for e in rest["entries"]] == later
    assert rest["next_cursor"] is None

    # filters hold on every page; the text form says how to get the next one
    bounces = _list(capsys, dsn, "--reason", "bounce", "--limit", "4")
    more = _list(capsys, dsn, "--reason", "bounce", "--cursor", bounces["next_cursor"])
    assert {e["reason"] for e in bounces["entries"] + more["entries"]} == {"bounce"}
    assert main(["suppression", "list", "--dsn", dsn, "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert "more: --cursor " in text.splitlines()[-1]
    assert "@example.com" not in text.splitlines()[-1]
    if role == "mailroom_viewer":  # sees, cannot act
        assert main(["suppression", "add", "x@example.com", "--dsn", dsn, "--note", "n"]) == 3
        assert main(["suppression", "remove", "new@example.com", "--dsn", dsn]) == 3
        capsys.readouterr()
        assert conn.execute("SELECT count(*) FROM mailroom.suppressions WHERE address IN "
                            "('x@example.com', 'new@example.com')").fetchone() == (1,)  # fmt: skip


@pytest.mark.parametrize(
    "cursor", ["", "x", "ann@example.com", "2026-12-01T09:30:00_5", "2026-12-01T09:30:00+00:00_",
               "2026-12-01T09:30:00+00:00_" + "9" * 30, "a\nb"],
)  # fmt: skip
def test_a_bad_cursor_is_refused_in_one_line_before_connecting(
    cursor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none"  # never reached: the argument is refused first
    assert main(["suppression", "list", "--dsn", dsn, "--cursor", cursor]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2, err  # usage line and the problem, no traceback
    assert "Traceback" not in "\n".join(err)
    assert "cursor" in err[-1]


def test_the_daemon_still_inserts_without_a_grant_on_the_numbering_sequence(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    """0032's identity column: the daemon suppresses addresses from SES events with its
    INSERT grant alone (no USAGE on the sequence behind the column), numbered in order."""
    with psycopg.connect(login_as("mailroom_daemon"), autocommit=True) as daemon:
        daemon.execute(
            "INSERT INTO mailroom.suppressions (address, reason) VALUES "
            "('one@example.com', 'bounce'), ('two@example.com', 'complaint')"
        )
        sequence = "pg_get_serial_sequence('mailroom.suppressions', 'id')"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            daemon.execute(f"SELECT nextval({sequence})")
    numbered = conn.execute("SELECT address, id FROM mailroom.suppressions ORDER BY id").fetchall()
    assert [a for a, _ in numbered] == ["one@example.com", "two@example.com"]
