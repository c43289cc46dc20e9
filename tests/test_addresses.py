"""Display names and internationalised domains: the SQL conversion (sql/0012) and the
Python one (mailroom.addresses) agree, the result is what SES takes, and what cannot be
converted is refused with the rule's name."""

from __future__ import annotations

import base64
import email.header
import email.utils
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors, sql

from mailroom import addresses
from mailroom.client import enqueue
from mailroom.config import settings as config

RULE = "outbox_addresses_must_be_ascii_user_at_domain"


@pytest.fixture(scope="module")
def shared(pg_admin_dsn: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A migrated database of this module's own (the template must stay unused)."""
    from conftest import _drop, _with_db  # noqa: PLC0415

    name = f"t_addresses_{os.getpid()}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        with psycopg.connect(_with_db(pg_admin_dsn, name), autocommit=True) as conn:
            yield conn
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            admin.execute(_drop(name))


def sql_form(conn: psycopg.Connection[Any], address: str) -> str:
    row = conn.execute("SELECT mailroom.ses_address(%s)", (address,)).fetchone()
    assert row is not None
    return str(row[0])


def valid(conn: psycopg.Connection[Any], address: str) -> bool:
    row = conn.execute("SELECT mailroom.is_valid_address(%s)", (address,)).fetchone()
    assert row is not None
    return bool(row[0])


KNOWN = [
    ("ann@example.com", "ann@example.com"),
    ("  ann@example.com\t", "ann@example.com"),
    ("Ann Smith <ann@example.com>", '"Ann Smith" <ann@example.com>'),
    ('"Shop" <shop@example.com>', '"Shop" <shop@example.com>'),
    ('"Smith, Ann" <ann@example.com>', '"Smith, Ann" <ann@example.com>'),
    ('"Say \\"hi\\"" <a@example.com>', '"Say \\"hi\\"" <a@example.com>'),
    ("<ann@example.com>", "ann@example.com"),
    # a quoted name may hold what separates mailboxes: it is one mailbox
    ('"A <a@example.com>, B" <b@example.com>', '"A <a@example.com>, B" <b@example.com>'),
    ('"Ann <ann@example.com>', '"\\"Ann" <ann@example.com>'),  # a lone quote is text
    ("ann@bücher.de", "ann@xn--bcher-kva.de"),
    ("ann@BÜCHER.de", "ann@xn--bcher-kva.de"),
    ("ann@münchen.de", "ann@xn--mnchen-3ya.de"),
    ("a@例え.テスト", "a@xn--r8jz45g.xn--zckzah"),
    ("Ännchen <ann@bücher.de>", "=?UTF-8?B?w4RubmNoZW4=?= <ann@xn--bcher-kva.de>"),
]


@pytest.mark.parametrize(("written", "stored"), KNOWN)
def test_known_conversions_in_sql_and_python(
    shared: psycopg.Connection[Any], written: str, stored: str
) -> None:
    assert addresses.ses_address(written) == stored
    assert sql_form(shared, written) == stored
    assert valid(shared, stored)


@pytest.mark.parametrize(
    "written",
    [
        "ann@straße.de",  # IDNA 2003 maps ß to ss: another domain than the one written
        "abc@exa\u200bmple.com",  # zero-width space vanishes in IDNA
        "ann@\uff45\uff58ample.com",  # fullwidth letters: NFKC changes them
        "ann@bü cher.de",
        "ann@bü\u00adcher.de",  # soft hyphen
        '"Evil\r\nBcc: x@example.org" <ann@example.com>',  # header injection
        "Evil\nBcc: x@example.org <ann@example.com>",
        "Ann <a..b@example.com>",
        "Ann <>",
    ],
)
def test_unconvertible_addresses_are_refused_by_name(
    shared: psycopg.Connection[Any], written: str
) -> None:
    assert addresses.ses_address(written) == sql_form(shared, written)
    assert not valid(shared, sql_form(shared, written))
    with pytest.raises(errors.CheckViolation) as caught:
        shared.execute(
            "SELECT mailroom.enqueue(ARRAY[%s], subject => 's', body_text => 'b')", (written,)
        )
    assert caught.value.diag.constraint_name == RULE


LISTS = [
    "A <a@example.com>, B <b@example.com>",  # became '"A <a@example.com>, B" <b@...>'
    "a@example.com, b@example.com",
    "a@example.com,b@example.com",
    "a@example.com;b@example.com",
    "Smith, Ann <ann@example.com>",  # an unquoted comma: Django refuses it too
    "Ann <ann@example.com> <b@example.com>",
    "Team: a@example.com, b@example.com;",  # RFC 5322 group
    '"Ann" <a@example.com>, "Bob" <b@example.com>',
]


@pytest.mark.parametrize("written", LISTS)
@pytest.mark.parametrize("column", ["to_addresses", "cc_addresses", "from_address"])
def test_several_mailboxes_in_one_address_are_refused_by_their_own_rule(
    shared: psycopg.Connection[Any], written: str, column: str
) -> None:
    assert addresses.holds_several_mailboxes(written)
    assert addresses.ses_address(written) == sql_form(shared, written) == written.strip()
    row = shared.execute("SELECT mailroom.holds_several_mailboxes(%s)", (written,)).fetchone()
    assert row == (True,)
    value: Any = written if column == "from_address" else [written]
    columns = ["to_addresses"] if column == "to_addresses" else ["to_addresses", column]
    values = [value] if column == "to_addresses" else [["ok@example.com"], value]
    statement = sql.SQL(
        "INSERT INTO mailroom.outbox ({}, subject, body_text) VALUES ({}, 's', 'b')"
    )
    with pytest.raises(errors.CheckViolation) as caught:
        shared.execute(
            statement.format(
                sql.SQL(", ").join(map(sql.Identifier, columns)),
                sql.SQL(", ").join(sql.Placeholder() * len(values)),
            ),
            values,
        )
    assert caught.value.diag.constraint_name == "outbox_address_is_one_mailbox"
    assert caught.value.diag.column_name == column
    assert caught.value.diag.message_detail == f"an element of {column} holds more than one address"


def test_the_helper_refuses_several_mailboxes_in_one_string(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(errors.CheckViolation, match="outbox_address_is_one_mailbox"):
        enqueue(conn, ["A <a@example.com>, B <b@example.com>"], subject="s", text="b")
    # a list of two is two recipients, and a comma in a pair's name is the name's
    mid = enqueue(conn, ["A <a@example.com>", ("Smith, Ann", "ann@example.com")],
                  subject="s", text="b")  # fmt: skip
    row = conn.execute("SELECT to_addresses FROM mailroom.outbox WHERE id = %s", (mid,)).fetchone()
    assert row == (['"A" <a@example.com>', '"Smith, Ann" <ann@example.com>'],)


def test_a_long_non_ascii_name_is_split_into_short_encoded_words(
    shared: psycopg.Connection[Any],
) -> None:
    name = "Ünïcödé Shöp — " * 8
    stored = addresses.ses_address((name, "shop@example.com"))
    assert stored == sql_form(shared, f"{name} <shop@example.com>")
    words = stored.rsplit(" <", 1)[0].split(" ")
    assert len(words) > 1
    assert all(len(w) <= 75 for w in words)
    decoded = email.header.make_header(email.header.decode_header(stored.rsplit(" <", 1)[0]))
    assert str(decoded) == name.strip()
    # what a mail client reads back from the header
    assert email.utils.parseaddr(stored)[1] == "shop@example.com"


def test_every_direct_insert_path_converts(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, cc_addresses, bcc_addresses,"
        " reply_to_addresses, from_address, subject, body_text)"
        " VALUES (ARRAY['Ann Smith <ann@bücher.de>'], ARRAY['Ça <c@example.com>'],"
        " ARRAY['b@例え.jp'], ARRAY['\"Help\" <help@example.com>'],"
        " '\"Shop\" <shop@münchen.de>', 's', 'b')"
    )
    row = conn.execute(
        "SELECT to_addresses, cc_addresses, bcc_addresses, reply_to_addresses, from_address,"
        " mailroom.bare_address(from_address) FROM mailroom.outbox"
    ).fetchone()
    assert row == (
        ['"Ann Smith" <ann@xn--bcher-kva.de>'],
        [f"=?UTF-8?B?{base64.b64encode('Ça'.encode()).decode()}?= <c@example.com>"],
        ["b@xn--r8jz45g.jp"],
        ['"Help" <help@example.com>'],
        '"Shop" <shop@xn--mnchen-3ya.de>',
        "shop@xn--mnchen-3ya.de",
    )


ALPHABET = (
    'abcxyzABZ019-.@ <>"\\,äöüÄÖÜßéΣ\u03c3\u03c2\u0391例え\uff45\u200b\u00ad\u0308\u0130\t\r\nя'
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(ALPHABET, max_size=12),
    local=st.text("abc.+_-", min_size=0, max_size=6),
    domain=st.text(ALPHABET.replace("@", "").replace("<", "").replace(">", ""), max_size=14),
    shape=st.sampled_from(
        [
            "{l}@{d}",
            "{n} <{l}@{d}>",
            '"{n}" <{l}@{d}>',
            "{n}{l}@{d}",
            "{n} <{l}@{d}>, {l}@{d}",
            '"{n}" <{l}@{d}> <{l}@{d}>',
        ]
    ),
)
def test_python_and_sql_convert_alike(
    shared: psycopg.Connection[Any], name: str, local: str, domain: str, shape: str
) -> None:
    written = shape.format(n=name, l=local, d=domain)
    python = addresses.ses_address(written)
    assert python == sql_form(shared, written), written
    listed = shared.execute("SELECT mailroom.holds_several_mailboxes(%s)", (written,)).fetchone()
    assert listed == (addresses.holds_several_mailboxes(written),), written
    assert addresses.ses_address(python) == python  # converting twice changes nothing
    assert addresses.is_valid(python) == valid(shared, python), python
    if valid(shared, python):
        # what SES receives parses back to the same address
        assert email.utils.parseaddr(python)[1] == addresses.bare(python)
        assert addresses.bare(python).isascii()


def test_python_helper_and_sql_store_the_same(conn: psycopg.Connection[Any]) -> None:
    written = ["Ann Smith <ann@bücher.de>", "ann@BÜCHER.de", "Ωmega <o@example.com>"]
    with conn.transaction():
        via_python = enqueue(conn, written, subject="s", text="b")
        row = conn.execute(
            "SELECT mailroom.enqueue(%s::text[], subject => 's', body_text => 'b')", (written,)
        ).fetchone()
    assert row is not None
    stored = dict(
        conn.execute(
            "SELECT id, to_addresses FROM mailroom.outbox WHERE id = ANY(%s)",
            ([via_python, row[0]],),
        ).fetchall()
    )
    assert stored[via_python] == stored[row[0]] == [addresses.ses_address(a) for a in written]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("ann@straße.de", "ann@stra"),
        ("noreply", "noreply"),
        ("noreply@localhost", "noreply@localhost"),  # the seed's: no dot, SES cannot verify it
        ('"Shop\r\nBcc: x@example.org" <shop@example.com>', "Shop"),
        ("Shop <shop@>", "Shop"),
    ],
)
def test_a_bad_ses_source_stops_the_daemon_at_start(source: str, problem: str) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "MAILROOM_DATABASE_URL": "postgresql://x@localhost/x",
           "MAILROOM_SES_SOURCE": source}  # fmt: skip  # PYTHONPATH: this checkout's mailroom
    done = subprocess.run(
        [sys.executable, "-m", "mailroom", "config"], env=env, capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "MAILROOM_SES_SOURCE" in line]
    assert len(lines) == 1
    assert "must be an address" in lines[0]


@pytest.mark.parametrize(
    ("source", "used"),
    [
        ("noreply@example.com", "noreply@example.com"),  # the default
        ("Bücher Shop <shop@bücher.de>", "=?UTF-8?B?QsO8Y2hlciBTaG9w?= <shop@xn--bcher-kva.de>"),
        ("Shop <shop@example.com>", '"Shop" <shop@example.com>'),
    ],
)
def test_ses_source_is_converted_like_any_address(source: str, used: str) -> None:
    env = {"MAILROOM_DATABASE_URL": "postgresql://db/app", "MAILROOM_SES_SOURCE": source}
    cfg = config.load(env)
    assert cfg.ses_source == used
    assert addresses.is_valid(used)


def test_the_default_ses_source_passes_the_outboxs_own_rule(
    shared: psycopg.Connection[Any],
) -> None:
    default = config.load({"MAILROOM_DATABASE_URL": "postgresql://db/app"}).ses_source
    assert default == "noreply@example.com"
    assert valid(shared, default)
    assert config.load({"MAILROOM_DATABASE_URL": "postgresql://db/app",
                        "MAILROOM_SES_SOURCE": default}).ses_source == default  # fmt: skip
