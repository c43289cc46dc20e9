"""Recipient search (issue 22, sql/0029, operator/search.py): every message of a customer is
found however its address was written, the field that matched is shown, the searches are
index scans, and only mailroom_operator and mailroom_viewer read the recipients.

The misses the issue found each have a test: the display-name form, an IDN domain, an
address pasted with spaces, a Cc/Bcc match shown as such, a domain, a prefix.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors, sql

import mailroom
from mailroom.cli import commands as cli
from mailroom.operator import search
from mailroom.outbox import query
from mailroom.text import CommandError

# ---------------------------------------------------------------- parsing (pure)


@pytest.mark.parametrize(
    ("typed", "kind", "value"),
    [
        ('"Alice Smith" <Alice@Example.com>', "address", "alice@example.com"),
        ("  alice@example.com \t", "address", "alice@example.com"),
        ("Alice Smith <ALICE@example.COM>", "address", "alice@example.com"),
        ('"Smith, Alice" <alice@example.com>', "address", "alice@example.com"),
        ("ann@bücher.de", "address", "ann@xn--bcher-kva.de"),
        ("ann@xn--bcher-kva.de", "address", "ann@xn--bcher-kva.de"),
        ("@Example.com", "domain", "example.com"),
        ("@BÜCHER.de", "domain", "xn--bcher-kva.de"),
        (" ali* ", "prefix", "ali"),
        ("Alice@Ex*", "prefix", "alice@ex"),
    ],
)
def test_what_the_operator_types_becomes_what_is_stored(typed: str, kind: str, value: str) -> None:
    wanted = search.parse(typed)
    assert (wanted.kind, wanted.value) == (kind, value)


def test_the_flags_name_the_kind_and_like_wildcards_are_literal() -> None:
    assert search.parse("example.com", "domain").value == "example.com"
    assert search.parse("alice_", "prefix").params()["prefix"] == "alice\\_%"
    assert search.parse("a%b", "prefix").params()["prefix"] == "a\\%b%"
    # an address may hold a "*": only a trailing one (no domain ends so) means a prefix
    assert search.parse("a*b@example.com").kind == "address"


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("", "nothing to search for"),
        ("  @ ", "nothing to search for"),
        ("alice", "is not an address"),
        ("A <a@example.com>, B <b@example.com>", "several addresses"),
        ("@exa mple.com", "is not a domain"),
        ("@a@b.com", "is not a domain"),
        ("@ex\u200bample.com", "cannot be written in punycode"),
        ("ann@bü*", "a prefix must be ASCII"),
        ("x" * 400 + "@example.com", "longer than any address"),
    ],
)
def test_what_cannot_match_is_refused_in_the_operators_words(typed: str, why: str) -> None:
    with pytest.raises(CommandError, match=why) as raised:
        search.parse(typed)
    assert raised.value.code == 2


# ---------------------------------------------------------------- SQL and Python agree

_ODD = st.one_of(
    st.text(alphabet=st.sampled_from('aAzZ09._+-@"<>,;\\ \t()ÄäüßÉé\u0130ﬀ.xn--'), max_size=40),
    st.builds(
        lambda name, local, domain, pad: f'{pad}{name} <{local}@{domain}>{pad}',
        st.sampled_from(["", "Ann", '"Smith, Ann"', '"a \\" b"', "Ünïcödé", "=?UTF-8?B?QQ==?="]),
        st.from_regex(r"[A-Za-z0-9._+-]{1,12}", fullmatch=True),
        st.sampled_from(["Example.COM", "bücher.de", "BÜCHER.DE", "xn--bcher-kva.de",
                         "ex\u00e4mple.org", "例え.テスト", "sub.Domain.io"]),
        st.sampled_from(["", " ", "\t", "  "]),
    ),
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_ODD)
def test_the_sql_normaliser_equals_the_python_one(conn: psycopg.Connection[Any], text: str) -> None:
    """What the trigger stores for an address as enqueued (ses_address on the way in, then
    normalize_address) is what search.address_key computes for the same text typed."""
    if "\x00" in text:
        return
    row = conn.execute(
        "SELECT mailroom.normalize_address(mailroom.ses_address(%s)),"
        " mailroom.is_valid_address(mailroom.ses_address(%s))", [text, text]
    ).fetchone()  # fmt: skip
    assert row is not None
    stored, valid = row
    key = search.address_key(text)
    if key.isascii():
        assert stored == key
    else:
        # lower() of a non-ASCII letter may differ ("İ"); such a key is nothing the outbox
        # keeps (addresses are ASCII once converted), and the search refuses it
        assert not valid
        with pytest.raises(CommandError):
            search.parse(text, "address")


# ---------------------------------------------------------------- the misses

_FORMS = {
    "display": '"Alice Smith" <Alice@Example.com>',
    "bare": "alice@example.com",
    "upper": "ALICE@EXAMPLE.COM",
    "idn": "Ann <ann@bücher.de>",
    "other": "bob@example.org",
}


@pytest.fixture
def mail(conn: psycopg.Connection[Any]) -> dict[str, int]:
    ids = {name: mailroom.enqueue(conn, to, subject="s", text="t") for name, to in _FORMS.items()}
    ids["cc"] = mailroom.enqueue(conn, "carol@example.net", cc=["Alice <alice@example.com>"],
                                 subject="s", text="t")  # fmt: skip
    ids["bcc"] = mailroom.enqueue(conn, "dave@example.net", bcc=["alice@example.com"],
                                  subject="s", text="t")  # fmt: skip
    ids["prefix"] = mailroom.enqueue(conn, "alicia@example.org", subject="s", text="t")
    return ids


def _find(dsn: str, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = cli.main(["--dsn", dsn, "find", *args, "--json", "--reveal"])
    out = capsys.readouterr()
    assert code == 0, out.err
    found: dict[str, Any] = json.loads(out.out)
    return found


@pytest.mark.parametrize("role", ["mailroom_operator", "mailroom_viewer"])
def test_every_form_of_a_customers_address_is_found_with_the_field_shown(
    role: str, mail: dict[str, int], login_as: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    dsn = login_as(role)
    alice = {mail[k] for k in ("display", "bare", "upper", "cc", "bcc")}
    for typed in ("alice@example.com", ' "A. Smith" <ALICE@example.com> ', "  alice@example.com "):
        found = _find(dsn, capsys, "--to", typed)["messages"]
        assert {m["id"] for m in found} == alice, typed
        matched = {m["id"]: m["matched"] for m in found}
        assert matched[mail["cc"]] == ["cc"]
        assert matched[mail["bcc"]] == ["bcc"]
        assert matched[mail["display"]] == ["to"]
    # the IDN domain typed in Unicode finds its punycode
    assert [m["id"] for m in _find(dsn, capsys, "--to", "ann@BÜCHER.de")["messages"]] == [
        mail["idn"]
    ]
    assert [m["id"] for m in _find(dsn, capsys, "--domain", "bücher.de")["messages"]] == [
        mail["idn"]
    ]
    # a domain: every recipient there, not only the To; --to @domain is the same search
    domain = {m["id"] for m in _find(dsn, capsys, "--domain", "@example.com")["messages"]}
    assert domain == alice
    assert {m["id"] for m in _find(dsn, capsys, "--to", "@example.com")["messages"]} == domain
    # a prefix
    prefix = {m["id"] for m in _find(dsn, capsys, "--prefix", "ali")["messages"]}
    assert prefix == alice | {mail["prefix"]}
    assert {m["id"] for m in _find(dsn, capsys, "--prefix", "alice@ex")["messages"]} == alice
    # combined with the other filters
    assert _find(dsn, capsys, "--to", "alice@example.com", "--status", "sent")["messages"] == []
    assert _find(dsn, capsys, "--to", "alice@example.com", "--since", "1h", "--before", "1h")[
        "messages"] == []  # fmt: skip
    # the text output has the column
    capsys.readouterr()
    assert cli.main(["--dsn", dsn, "find", "--to", "alice@example.com", "--reveal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "matched" in lines[0].split()
    assert any(" bcc " in line and "dave@example.net" in line for line in lines)


def test_pages_are_keyset_and_cover_every_message_once(
    conn: psycopg.Connection[Any], db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, cc_addresses, subject, body_text, created_at)"
        " SELECT ARRAY['Shop <Shop@Example.com>'], ARRAY['x' || i || '@example.com'], 's', 't',"
        " now() - make_interval(secs => i % 7)  FROM generate_series(1, 23) AS i"
    )
    seen: list[int] = []
    cursor: list[str] = []
    while True:
        page = _find(db, capsys, "--to", "shop@example.com", "--limit", "5", *cursor)
        seen += [m["id"] for m in page["messages"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", str(page["next_cursor"])]
    assert len(seen) == 23
    assert len(set(seen)) == 23
    # a cursor whose message was purged meanwhile: said so, not a wrong page
    conn.execute("DELETE FROM mailroom.outbox WHERE id = %s", [seen[4]])
    capsys.readouterr()
    assert cli.main(["--dsn", db, "find", "--to", "shop@example.com", "--cursor",
                     str(seen[4])]) == 2  # fmt: skip
    assert "of the cursor is gone" in capsys.readouterr().err


def test_two_searches_at_once_are_refused(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dsn", db, "find", "--to", "a@example.com", "--domain", "x.org"]) == 2
    assert "give one recipient search" in capsys.readouterr().err


# ---------------------------------------------------------------- the rows follow the outbox


def test_deleting_messages_takes_their_recipients_and_an_update_moves_them(
    conn: psycopg.Connection[Any], mail: dict[str, int]
) -> None:
    def rows(message_id: int) -> list[tuple[str, str]]:
        got = conn.execute(
            "SELECT field, address FROM mailroom.outbox_recipients WHERE message_id = %s"
            " ORDER BY 1, 2", [message_id]
        ).fetchall()  # fmt: skip
        return [(str(f), str(a)) for f, a in got]

    assert rows(mail["cc"]) == [("cc", "alice@example.com"), ("to", "carol@example.net")]
    conn.execute("DELETE FROM mailroom.outbox WHERE id = ANY(%s)", [[mail["cc"], mail["bcc"]]])
    assert rows(mail["cc"]) == rows(mail["bcc"]) == []
    conn.execute("UPDATE mailroom.outbox SET to_addresses = ARRAY['Zed <ZED@example.com>']"
                 " WHERE id = %s", [mail["other"]])  # fmt: skip
    assert rows(mail["other"]) == [("to", "zed@example.com")]
    conn.execute("TRUNCATE mailroom.outbox CASCADE")
    assert conn.execute("SELECT count(*) FROM mailroom.outbox_recipients").fetchone() == (0,)


# ---------------------------------------------------------------- nobody else reads or writes

_WRITES = (
    "INSERT INTO mailroom.outbox_recipients VALUES (1, 'to', 'x@ex.com', 'ex.com', now())",
    "UPDATE mailroom.outbox_recipients SET address = 'x@example.com'",
    "DELETE FROM mailroom.outbox_recipients",
    "TRUNCATE mailroom.outbox_recipients",
    "UPDATE mailroom.recipients_backfill SET below = 0",
    "SELECT mailroom.backfill_recipients(10)",
)


@pytest.mark.parametrize(
    "role", ["mailroom_app", "mailroom_daemon", "mailroom_operator", "mailroom_viewer", None]
)
def test_no_role_writes_the_recipients_and_only_operators_read_them(
    role: str | None, mail: dict[str, int], conn: psycopg.Connection[Any],
    login_as: Callable[..., str],
) -> None:  # fmt: skip
    before = conn.execute("SELECT count(*) FROM mailroom.outbox_recipients").fetchone()
    with psycopg.connect(login_as(role), autocommit=True) as other:
        for statement in _WRITES:
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute(statement)
        reading = "SELECT count(*) FROM mailroom.outbox_recipients"
        if role in ("mailroom_operator", "mailroom_viewer"):
            assert other.execute(reading).fetchone() == before
        else:
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute(reading)
    assert conn.execute("SELECT count(*) FROM mailroom.outbox_recipients").fetchone() == before


def test_the_app_enqueues_through_the_trigger_with_plants_in_public(
    conn: psycopg.Connection[Any], login_as: Callable[..., str]
) -> None:
    """A login that may create in public plants a lower(), a split_part() and a text "="
    there; the application's enqueue still stores the recipients as the owner's trigger
    computes them, and the plants never run."""
    planter = login_as(None)
    user = psycopg.conninfo.conninfo_to_dict(planter)["user"]
    conn.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(sql.Identifier(user)))
    with psycopg.connect(planter, autocommit=True) as evil:
        evil.execute(
            "CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'pwned' $$;"
            "CREATE FUNCTION public.split_part(text, text, integer) RETURNS text LANGUAGE sql"
            " AS $$ SELECT 'pwned' $$;"
            "CREATE FUNCTION public.eq(text, text) RETURNS boolean LANGUAGE sql"
            " AS $$ SELECT true $$;"
            "CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.eq);"
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO PUBLIC"
        )
    app = login_as("mailroom_app")
    try:
        with psycopg.connect(app, autocommit=True) as application:
            application.execute("SET search_path = public, mailroom, pg_catalog")
            message = mailroom.enqueue(application, "Eve <EVE@Example.com>", subject="s", text="t")
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
    rows = conn.execute(
        "SELECT field, address, domain FROM mailroom.outbox_recipients WHERE message_id = %s",
        [message],
    ).fetchall()
    assert rows == [("to", "eve@example.com", "example.com")]


# ---------------------------------------------------------------- the planner's choice


def _plan(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> str:
    explained = sql.Composed([sql.SQL("EXPLAIN "), query(name)])
    return "\n".join(r[0] for r in conn.execute(explained, params, prepare=False).fetchall())


@pytest.fixture
def many(conn: psycopg.Connection[Any]) -> None:
    """20,000 messages: 100 recipients' mail, one domain of 1 %, most sent, then ANALYZE."""
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, cc_addresses, subject, body_text, status,"
        " sent_at, provider_message_id, queue)"
        " SELECT ARRAY['\"User ' || i % 100 || '\" <user' || i % 100 || '@d' || i % 50"
        "   || '.example>'],"
        "   CASE WHEN i % 100 = 0 THEN ARRAY['boss@customer.example'] ELSE '{}' END, 's', 't',"
        "   CASE WHEN i % 50 = 0 THEN 'pending' ELSE 'sent' END,"
        "   CASE WHEN i % 50 = 0 THEN NULL ELSE now() END,"
        "   CASE WHEN i % 50 = 0 THEN NULL ELSE 'ses-' || i END,"
        "   CASE WHEN i % 3 = 0 THEN 'bulk' ELSE 'user_action_queue' END"
        " FROM generate_series(1, 20000) AS i"
    )
    conn.execute("VACUUM ANALYZE mailroom.outbox")
    conn.execute("VACUUM ANALYZE mailroom.outbox_recipients")


_NONE = {
    "idempotency_key": None, "ses_id": None, "statuses": None, "template": None, "queue": None,
    "since": None, "before": None, "cursor": None, "cursor_at": None, "limit": 51,
}  # fmt: skip


_SEARCHES = (
    ("user7@d7.example", "outbox_recipients_by_address"),
    ("@customer.example", "outbox_recipients_by_domain"),
    ("boss@cust*", "outbox_recipients_by_address"),
)


def test_searches_are_index_scans_and_the_overview_reads_indexes_only(
    conn: psycopg.Connection[Any], many: None
) -> None:
    """One test over one set of 20,000 messages (the set-up is most of its time)."""
    for wanted, index in _SEARCHES:
        params = {**_NONE, **search.parse(wanted).params()}
        plan = _plan(conn, "find_by_recipient", params)
        assert re.search(rf"Index (Only )?Scan (Backward )?using {index} ", plan), plan
        assert "Seq Scan" not in plan, plan
        if search.parse(wanted).kind != "prefix":
            # the index order is the result order: the LIMIT stops the scan (a prefix spans
            # many addresses, whose messages are sorted)
            assert "Sort" not in plan, plan
        # --since bounds the index range
        plan = _plan(conn, "find_by_recipient", {**params, "since": "2000-01-01T00:00:00Z"})
        conditions = [line for line in plan.splitlines() if "Index Cond" in line]
        assert "created_at >=" in conditions[0], plan
    _overview(conn)


def _overview(conn: psycopg.Connection[Any]) -> None:
    plan = _plan(conn, "queues_overview", {})
    assert "Seq Scan" not in plan, plan
    assert "Index Only Scan using outbox_live" in plan, plan
    assert "Index Only Scan using outbox_leases" in plan, plan
    from mailroom.operator.stats import queues  # noqa: PLC0415

    by_queue = {q["queue"]: q for q in queues(conn)}
    assert sorted(by_queue) == ["bulk", "user_action_queue"]
    assert by_queue["bulk"]["due"] + by_queue["user_action_queue"]["due"] == 400
    assert (
        by_queue["bulk"]["sent_last_hour"] + by_queue["user_action_queue"]["sent_last_hour"]
        == 19600
    )


# ---------------------------------------------------------------- the console's search box


def test_the_consoles_search_box_finds_every_form_and_shows_the_field(
    mail: dict[str, int], login_as: Callable[..., str], tmp_path: Path
) -> None:
    """The console (a real `mailroom web`, as mailroom_viewer) calls the same search."""
    from console_harness import Console, _request  # noqa: PLC0415

    server = Console(login_as("mailroom_viewer"), tmp_path)
    try:

        def page(typed: str) -> tuple[int, str, set[int], list[str]]:
            status, body = _request(f"{server.url}/messages?to={urllib.parse.quote(typed)}")
            ids = {int(i) for i in re.findall(r'<a href="/messages/(\d+)', body)}
            return status, body, ids, re.findall(r'<td class="matched">([^<]*)</td>', body)

        alice = {mail[k] for k in ("display", "bare", "upper", "cc", "bcc")}
        status, body, ids, matched = page(' "Alice" <ALICE@Example.com> ')
        assert status == 200, body
        assert ids == alice
        assert sorted(matched) == ["bcc", "cc", "to", "to", "to"]
        assert "<th>matched</th>" in body
        assert page("ann@bücher.de")[2] == {mail["idn"]}
        assert page("@example.com")[2] == alice
        assert page("ali*")[2] == alice | {mail["prefix"]}
        status, body, ids, _ = page("alice")
        assert status == 400
        assert "is not an address" in body
        assert ids == set()
    finally:
        server.stop()
