"""Bad input never stops the daemon (SPEC §3.7), property-based.

Two ways in: the Python helper ``mailroom.enqueue`` and rows inserted with SQL. Every input is
either refused at enqueue time — ``CheckViolation`` naming the constraint, ``NotNullViolation``
naming the column, ``DataError`` naming the problem — leaving no row, or accepted; what is
accepted and then refused by SES is dead-lettered with SES's reason while the good messages
of the same batch are sent, and the daemon keeps running.

The expected outcome of each generated input comes from an oracle written from the rules
(README, sql/0001_outbox.sql), not from the code under test.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import string
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

import mailroom
from conftest import DaemonProcess, wait_for
from mailroom import addresses as mailroom_addresses
from sesv2_standin import SesStandin
from test_sql_security import bare_db  # noqa: F401 -- the fixture, shared

RECIPIENTS = "outbox_recipients_between_1_and_50"
ADDRESSES = "outbox_addresses_must_be_ascii_user_at_domain"
ONE_MAILBOX = "outbox_address_is_one_mailbox"  # "A <a@x>, B <b@x>" as one address (0028)
ONE_KIND = "outbox_exactly_one_of_template_subject_raw_mime"
TEMPLATE_NAME = "outbox_template_name_is_ses_name"
DATA_OBJECT = "outbox_template_data_is_object_for_templates_only"
DATA_SIZE = "outbox_template_data_at_most_256_kib"
SIMPLE = "outbox_simple_message_needs_subject_and_body"
BODY_ONLY = "outbox_body_only_with_subject"
SIZE = "outbox_message_at_most_40_mib"
MAX_ATTEMPTS = "outbox_max_attempts_between_1_and_100"
KEY = "outbox_idempotency_key_1_to_255_chars"
QUEUE = "outbox_queue_name_not_empty"
STATUS = "outbox_status_known"

MIB_40 = 40 * 1024 * 1024
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDRESS_RE = re.compile(rf"{_ATEXT}{{1,64}}@{_LABEL}(\.{_LABEL})+")
TEMPLATE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NOT_NULL = frozenset(
    {
        "to_addresses",
        "cc_addresses",
        "bcc_addresses",
        "reply_to_addresses",
        "queue",
        "status",
        "priority",
        "max_attempts",
        "not_before",
    }
)
SQL_TYPES = {
    "to_addresses": "text[]",
    "cc_addresses": "text[]",
    "bcc_addresses": "text[]",
    "reply_to_addresses": "text[]",
    "template_data": "jsonb",
    "raw_mime": "bytea",
    "priority": "smallint",
    "max_attempts": "integer",
}

FEW = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# -- the oracle -------------------------------------------------------------------------------


class Outcome:
    """What must happen to one input: accepted, or refused in one of three ways."""

    def __init__(self, kind: str, names: set[str] | None = None) -> None:
        self.kind = kind  # "ok" | "data" | "not_null" | "check"
        self.names = names or set()

    def __repr__(self) -> str:
        return f"Outcome({self.kind}, {sorted(self.names)})"


def valid_address(address: str | None) -> bool:
    """Since 0012 the database converts each address written (display names, IDN domains)
    before validating it; mailroom.addresses does the same (tests/test_addresses.py proves
    the two agree)."""
    if address is None:
        return False
    return mailroom_addresses.is_valid(mailroom_addresses.ses_address(address))


def helper_form(address: str, *, strip: bool = True) -> str:
    """What the Python helper stores (README): the form SES takes (mailroom.addresses)."""
    del strip  # the conversion trims, as the database's does
    return mailroom_addresses.ses_address(address)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _floats(v)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


class Json:
    """A template_data value given as JSON (``Json(None)`` is JSON null, not SQL NULL)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Json({self.value!r:.200})"


def expected(row: dict[str, Any]) -> Outcome:
    """The outcome of inserting ``row`` (column -> stored value; None is SQL NULL)."""
    data = row.get("template_data")
    data_value = data.value if isinstance(data, Json) else None
    # Refused before any constraint is looked at: values PostgreSQL cannot represent.
    problems = set()
    texts = [s for s in _strings(list(row.values())) if isinstance(s, str)]
    if any("\x00" in s for s in [*texts, *_strings(data_value)]):
        problems.add("NUL")
    if any(_surrogate(s) for s in texts):
        problems.add("surrogate")  # Python cannot even encode it: UnicodeEncodeError
    if any(not math.isfinite(f) for f in _floats(data_value)):
        problems.add("JSON")
    if row.get("priority") is not None and not -32768 <= row["priority"] <= 32767:
        problems.add("smallint")
    if problems:
        return Outcome("data", problems)
    missing = {c for c in NOT_NULL if c in row and row[c] is None}
    if missing:
        return Outcome("not_null", missing)
    return Outcome("check", checks(row)) if checks(row) else Outcome("ok")


def checks(row: dict[str, Any]) -> set[str]:
    """The CHECK constraints ``row`` violates, with SQL's rule that NULL passes a CHECK."""
    return _recipient_checks(row) | _content_checks(row) | _setting_checks(row)


def _recipient_checks(row: dict[str, Any]) -> set[str]:
    broken = set()
    to = row.get("to_addresses") or []
    cc, bcc, reply_to = (
        row.get(c) or [] for c in ("cc_addresses", "bcc_addresses", "reply_to_addresses")
    )
    if not to or len(to) + len(cc) + len(bcc) > 50:
        broken.add(RECIPIENTS)
    sender = row.get("from_address")
    if not all(valid_address(a) for a in to + cc + bcc + reply_to) or (
        sender is not None and not valid_address(sender)
    ):
        broken.add(ADDRESSES)
    everyone = [a for a in [sender, *to, *cc, *bcc, *reply_to] if isinstance(a, str)]
    if any(mailroom_addresses.holds_several_mailboxes(a) for a in everyone):
        broken.add(ONE_MAILBOX)  # a list of mailboxes: refused, and never converted
    return broken


def _content_checks(row: dict[str, Any]) -> set[str]:
    broken = set()
    template, subject, raw = row.get("template"), row.get("subject"), row.get("raw_mime")
    if sum(x is not None for x in (template, subject, raw)) != 1:
        broken.add(ONE_KIND)
    if template is not None and not TEMPLATE_RE.fullmatch(template):
        broken.add(TEMPLATE_NAME)
    data = row.get("template_data")
    if data is not None and (template is None or not isinstance(data.value, dict)):
        broken.add(DATA_OBJECT)
    if data is not None and len(json.dumps(data.value, ensure_ascii=False).encode()) > 262_144:
        broken.add(DATA_SIZE)  # (sizes are generated far from the boundary)
    text, html = row.get("body_text"), row.get("body_html")
    if subject is not None and (not 1 <= len(subject) <= 998 or (text is None and html is None)):
        broken.add(SIMPLE)
    if subject is None and (text is not None or html is not None):
        broken.add(BODY_ONLY)
    body = len((text or "").encode()) + len((html or "").encode())
    if (raw is not None and len(raw) > MIB_40) or body > MIB_40:
        broken.add(SIZE)
    return broken


def _setting_checks(row: dict[str, Any]) -> set[str]:
    broken = set()
    if row.get("max_attempts") is not None and not 1 <= row["max_attempts"] <= 100:
        broken.add(MAX_ATTEMPTS)
    key = row.get("idempotency_key")
    if key is not None and not 1 <= len(key) <= 255:
        broken.add(KEY)
    if row.get("queue") is not None and not 1 <= len(row["queue"]) <= 63:
        broken.add(QUEUE)
    known = ("pending", "sending", "sent", "retrying", "dead")
    if row.get("status") is not None and row["status"] not in known:
        broken.add(STATUS)
    return broken


DATA_ERROR_WORDS = {
    "NUL": ("NUL (0x00)", "\\u0000"),
    "surrogate": ("surrogates not allowed",),
    "JSON": ("invalid input syntax for type json",),
    "smallint": ("smallint out of range",),
}


def check_outcome(
    conn: psycopg.Connection[Any], insert: Callable[[], object], want: Outcome
) -> None:
    """Run ``insert`` in a savepoint of a rolled-back transaction and compare with ``want``:
    a refusal must be the expected error, name the problem and leave no row."""
    error: Exception | None = None
    with conn.transaction(force_rollback=True):
        try:
            with conn.transaction():
                insert()
        except (psycopg.Error, UnicodeEncodeError) as exc:
            error = exc
        row = conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone()
    assert row is not None
    rows = int(row[0])
    if want.kind == "ok":
        assert error is None, f"refused valid input: {error!r}"
        assert rows == 1
        return
    assert error is not None, f"accepted invalid input; expected {want}"
    assert rows == 0, "a refused enqueue left a row behind"
    message = str(error)
    if want.kind == "data":
        refused = (psycopg.DataError, UnicodeEncodeError)
        assert isinstance(error, refused), f"{error!r}, expected a DataError {want}"
        words = [w for name in want.names for w in DATA_ERROR_WORDS[name]]
        assert any(w in message for w in words), f"{message!r} names none of {words}"
        return
    assert isinstance(error, psycopg.Error)
    if want.kind == "not_null":
        assert isinstance(error, psycopg.errors.NotNullViolation), f"{error!r}, want {want}"
        assert error.diag.column_name in want.names, (error.diag.column_name, want)
        assert f'"{error.diag.column_name}"' in message
    else:
        assert isinstance(error, psycopg.errors.CheckViolation), f"{error!r}, want {want}"
        assert error.diag.constraint_name in want.names, (error.diag.constraint_name, want)
        assert error.diag.constraint_name in message


# -- strategies -------------------------------------------------------------------------------

CURATED_ADDRESSES = [
    "ann@example.com",
    "Ann.Lee+tag@sub.example.co.uk",
    "Ann <ann@example.com>",
    "ann@localhost",
    "ann@exämple.com",
    "ännä@example.com",
    "用户@例子.广告",
    "ann@例え.jp",
    " ann@example.com\t",
    "ann@example.com\n",
    "ann@@example.com",
    "ann@-bad.example.com",
    "ann@bad-.example.com",
    "ann@example..com",
    "ann@.example.com",
    "ann@example.com.",
    "@example.com",
    "ann@",
    "",
    "a" * 64 + "@example.com",
    "a" * 65 + "@example.com",
    "ann@" + "d" * 63 + ".com",
    "ann@" + "d" * 64 + ".com",
    "ann@" + ".".join(["abcdefgh"] * 40) + ".com",  # over 320 bytes in all
    "ann@xn--exmple-cua.com",
    "ann@exa mple.com",
    "ann\x00@example.com",
    "ann@example.com\x00",
    '"quoted local"@example.com',
    "ann@[127.0.0.1]",
    "Ann <ann@example.com>, Bob <bob@example.com>",
    "ann@example.com;bob@example.com",
    '"Smith, Ann" <ann@example.com>',
]
GOOD_ADDRESSES = st.sampled_from(
    ["ann@example.com", "bob@example.org", "c.d+e@mail.example.net", "x@xn--exmple-cua.com"]
)
domains = st.from_regex(r"[a-zäöüß例え0-9-]{0,12}(\.[a-z]{0,4}){1,2}", fullmatch=True)
addresses = st.one_of(
    st.sampled_from(CURATED_ADDRESSES),
    st.emails(),
    st.text(max_size=30),
    st.builds("{}@{}".format, st.text(max_size=20), st.text(max_size=20)),
    st.builds("{}@{}".format, st.text(string.printable, min_size=0, max_size=70), domains),
    st.characters(categories=["Cs"]).map("ann{}@example.com".format),  # a lone surrogate
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
_clean_text = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20
)
clean_objects = st.dictionaries(  # what PostgreSQL can store: no NUL, finite numbers
    _clean_text,
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(10**30), 10**30)
        | _clean_text
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_clean_text, inner, max_size=4),
        max_leaves=10,
    ),
    max_size=5,
)
odd_objects = st.one_of(
    st.just({"big": "é" * 140_000}),  # 280,000 bytes: over 256 KiB
    st.just({"nan": float("nan")}),
    st.just({"inf": [float("-inf")]}),
)
template_names = st.one_of(
    st.sampled_from(["activationv1", "a", "x" * 64, "x" * 65, "bad name", "naïve", ""]),
    st.text(max_size=70),
)


def _long(char: str, sizes: list[int]) -> st.SearchStrategy[str]:
    return st.sampled_from(sizes).map(lambda n: char * n)


subjects = st.one_of(
    st.sampled_from(["", "\ud83d"]), st.text(min_size=1, max_size=40), _long("é", [998, 999])
)
bodies = st.one_of(st.just(""), st.text(max_size=40), st.text(max_size=40), _long("x", [1 << 20]))
raws = st.one_of(st.binary(max_size=200), st.binary(max_size=200), st.just(b"y" * (1 << 20)))


@st.composite
def helper_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of mailroom.enqueue: content, options and scalar settings."""
    kind = draw(st.sampled_from(["template", "simple", "raw", "none", "mixed"]))
    fields: dict[str, Any] = {}
    if kind in ("template", "mixed"):
        fields["template"] = draw(template_names)
        data = draw(st.one_of(st.none(), json_objects, odd_objects))
        if data is not None:
            fields["data"] = data
    if kind in ("simple", "mixed"):
        fields["subject"] = draw(st.one_of(st.none(), subjects))
    if kind in ("simple", "mixed", "none"):
        for name in ("text", "html"):
            fields[name] = draw(st.one_of(st.none(), bodies))
    if kind in ("raw", "mixed"):
        fields["raw"] = draw(st.one_of(st.none(), raws))
    fields["priority"] = draw(st.one_of(st.integers(-32768, 32767), st.integers(-(10**6), 10**6)))
    fields["max_attempts"] = draw(st.integers(-3, 103))
    fields["idempotency_key"] = draw(
        st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=20), _long("k", [255, 256]))
    )
    fields["queue"] = draw(
        st.one_of(
            st.just("user_action_queue"), st.just(""), st.text(max_size=10), _long("q", [63, 64])
        )
    )
    return fields


def stored_row(to: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The row the helper writes for ``enqueue(conn, to, **fields)`` (its documented mapping)."""

    def listed(value: Any) -> list[str]:
        if value is None:
            return []
        return [helper_form(a) for a in ([value] if isinstance(value, str) else value)]

    data = fields.get("data")
    return {
        "to_addresses": listed(to),
        "cc_addresses": listed(fields.get("cc")),
        "bcc_addresses": listed(fields.get("bcc")),
        "reply_to_addresses": listed(fields.get("reply_to")),
        "from_address": (
            None
            if fields.get("from_address") is None
            else helper_form(fields["from_address"], strip=False)
        ),
        "template": fields.get("template"),
        "template_data": None if data is None else Json(data),
        "subject": fields.get("subject"),
        "body_text": fields.get("text"),
        "body_html": fields.get("html"),
        "raw_mime": fields.get("raw"),
        "priority": fields.get("priority", 0),
        "max_attempts": fields.get("max_attempts", 10),
        "idempotency_key": fields.get("idempotency_key"),
        "queue": fields.get("queue", "user_action_queue"),
    }


# -- refused or accepted at enqueue time: the Python helper ------------------------------------


@FEW
@given(
    address=addresses,
    position=st.sampled_from(["to", "cc", "bcc", "reply_to", "from_address"]),
)
def test_helper_address_is_refused_by_name_or_accepted(
    conn: psycopg.Connection[Any], address: str, position: str
) -> None:
    fields: dict[str, Any] = {"subject": "Hello", "text": "body"}
    to: Any = "ann@example.com"
    if position == "to":
        to = address
    else:
        fields[position] = address
    want = expected(stored_row(to, fields))
    assert want.kind != "not_null"
    check_outcome(conn, lambda: mailroom.enqueue(conn, to, **fields), want)


@FEW
@given(
    to=st.lists(GOOD_ADDRESSES, max_size=55),
    cc=st.lists(GOOD_ADDRESSES, max_size=30),
    bcc=st.lists(GOOD_ADDRESSES, max_size=30),
)
def test_helper_recipient_count_between_1_and_50(
    conn: psycopg.Connection[Any], to: list[str], cc: list[str], bcc: list[str]
) -> None:
    fields = {"cc": cc, "bcc": bcc, "template": "activationv1", "data": {"login": "ann"}}
    want = expected(stored_row(to, fields))
    assert want.kind in ("ok", "check")
    assert (want.kind == "ok") == (len(to) >= 1 and len(to) + len(cc) + len(bcc) <= 50)
    check_outcome(conn, lambda: mailroom.enqueue(conn, to, **fields), want)


@settings(FEW, max_examples=80)
@given(fields=helper_inputs())
def test_helper_content_and_settings_are_refused_by_name_or_accepted(
    conn: psycopg.Connection[Any], fields: dict[str, Any]
) -> None:
    want = expected(stored_row("ann@example.com", fields))
    check_outcome(conn, lambda: mailroom.enqueue(conn, "ann@example.com", **fields), want)


@FEW
@given(data=st.one_of(st.lists(json_values, max_size=3), st.text(max_size=10), st.integers()))
def test_helper_refuses_template_data_that_is_not_an_object(
    conn: psycopg.Connection[Any], data: Any
) -> None:
    with pytest.raises(TypeError, match="mapping"):
        mailroom.enqueue(conn, "ann@example.com", template="activationv1", data=data)
    assert conn.execute("SELECT count(*) FROM mailroom.outbox").fetchone() == (0,)


# -- refused or accepted at enqueue time: rows inserted with SQL -------------------------------

ADDRESS_ARRAYS = st.one_of(
    st.none(),  # SQL NULL
    st.lists(st.one_of(GOOD_ADDRESSES, st.none(), addresses), max_size=4),
    st.lists(GOOD_ADDRESSES, min_size=48, max_size=52),
)
ANY_JSON = st.one_of(
    json_values.map(Json),  # any JSON value, JSON null included
    json_objects.map(Json),
    st.just(Json(None)),
    st.just(Json([])),
    st.just(Json("a string")),
)


@st.composite
def sql_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row for a direct INSERT: NULLs anywhere, JSON that is not an object, odd values."""

    def maybe(values: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.none(), values))

    row: dict[str, Any] = {
        "to_addresses": draw(
            st.one_of(st.lists(GOOD_ADDRESSES, min_size=1, max_size=2), ADDRESS_ARRAYS)
        ),
        "cc_addresses": draw(st.one_of(st.just([]), ADDRESS_ARRAYS)),
        "template": maybe(st.one_of(st.just("activationv1"), template_names)),
        "template_data": maybe(ANY_JSON),
        "subject": maybe(subjects),
        "body_text": maybe(st.text(max_size=20)),
        "body_html": maybe(st.text(max_size=20)),
        "raw_mime": maybe(st.binary(max_size=50)),
        "queue": maybe(st.one_of(st.just("user_action_queue"), st.text(max_size=70))),
        "status": maybe(st.one_of(st.sampled_from(["pending", "dead"]), st.text(max_size=8))),
        "priority": maybe(st.integers(-32768, 32767)),
        "max_attempts": maybe(st.integers(-2, 102)),
        "idempotency_key": maybe(st.text(max_size=12)),
    }
    drop = draw(st.sets(st.sampled_from(sorted(row)), max_size=6))  # columns left to defaults
    return {k: v for k, v in row.items() if k not in drop or k == "to_addresses"}


def _insert(conn: psycopg.Connection[Any], row: dict[str, Any]) -> None:
    columns = sorted(row)
    values = [
        sql.SQL("{}::{}").format(sql.Placeholder(c), sql.SQL(SQL_TYPES.get(c, "text")))
        for c in columns
    ]
    statement = sql.SQL("INSERT INTO mailroom.outbox ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(values)
    )
    params = {c: Jsonb(v.value) if isinstance(v, Json) else v for c, v in row.items()}
    conn.execute(statement, params)


@settings(FEW, max_examples=80)
@given(row=sql_rows())
def test_sql_insert_is_refused_by_name_or_accepted(
    conn: psycopg.Connection[Any], row: dict[str, Any]
) -> None:
    check_outcome(conn, lambda: _insert(conn, row), expected(row))


HALF = "repeat('x', 20971520)"  # 20 MiB: the two bodies count together


@pytest.mark.parametrize(
    ("expression", "accepted"),
    [
        ("raw_mime => convert_to(repeat('x', 41943040), 'UTF8')", True),  # 40 MiB exactly
        ("raw_mime => convert_to(repeat('x', 41943041), 'UTF8')", False),
        (f"subject => 's', body_text => {HALF}, body_html => {HALF} || 'y'", False),
        ("subject => 's', body_html => repeat('é', 20971521)", False),  # bytes, not characters
    ],
)
def test_40_mib_boundary(conn: psycopg.Connection[Any], expression: str, accepted: bool) -> None:
    statement = f"SELECT mailroom.enqueue(to_addresses => '{{ann@example.com}}', {expression})"
    want = Outcome("ok") if accepted else Outcome("check", {SIZE})
    check_outcome(conn, lambda: conn.execute(statement), want)


# -- accepted, then refused by SES: dead-lettered, the rest is sent, the daemon runs on -------

SECRET_KEY = "ab" * 32
FATES = {
    # fate: (address token, message kind, dead-letter reason; None: sent)
    "good": ("ok", "template", None),
    "good_simple": ("oks", "simple", None),
    "unknown_template": ("tnf", "template", "TEMPLATE_NOT_FOUND"),
    "bad_request": ("badreq", "template", "BadRequestException"),
    "bad_request_simple": ("badreqs", "simple", "BadRequestException"),
    "rejected_entry": ("rej", "template", "MESSAGE_REJECTED"),
    "rejected_simple": ("rejs", "simple", "MessageRejected"),
}


def _configure(standin: SesStandin) -> None:
    standin.entry_status_for("-tnf-", "TEMPLATE_NOT_FOUND")
    standin.entry_status_for("-rej-", "MESSAGE_REJECTED")
    standin.fail_address("-badreq-", "bad_request")
    standin.fail_address("-badreqs-", "bad_request")
    standin.fail_address("-rejs-", "message_rejected")


def _final(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[str, str]]:
    rows = conn.execute(
        "SELECT id, status, coalesce(last_error, '') FROM mailroom.outbox"
        " WHERE id = ANY(%s) AND status IN ('sent', 'dead')",
        [ids],
    ).fetchall()
    return {int(i): (str(s), str(e)) for i, s, e in rows}


def _diagnose(daemon: DaemonProcess) -> str:
    """Exit code, the exception that ended the daemon (if any) and its last log events."""
    assert daemon.proc is not None
    events = daemon.events()
    plain = [e["line"].strip(" |") for e in events if e.get("event") == "unparsed"]
    raised = [line for line in plain if re.match(r"^\w+(Error|Exception)\b.*:", line)]
    where = [line for line in plain if line.startswith('File "') and "/mailroom/" in line]
    logged = [e for e in events if e.get("event") not in ("unparsed", "batch_done")]
    return (
        f"daemon exit code {daemon.proc.poll()}; raised {raised[-1:]} at {where[-2:]};"
        f" last events {logged[-5:]}"
    )


def _still_serving(conn: psycopg.Connection[Any], daemon: DaemonProcess, tag: str) -> None:
    """The daemon is alive and a later good message is still delivered."""
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, _diagnose(daemon)
    later = mailroom.enqueue(conn, f"later-{tag}@example.com", subject="later", text="x")
    wait_for(lambda: _final(conn, [later]), timeout=20)
    assert _final(conn, [later]) == {later: ("sent", "")}, _diagnose(daemon)
    assert daemon.proc.poll() is None, _diagnose(daemon)
    plain = [e["line"] for e in daemon.events() if e.get("event") == "unparsed"]
    assert not [line for line in plain if line.startswith("Traceback")], plain


@pytest.fixture
def mixed_daemon(standin: SesStandin, spawn: Any) -> DaemonProcess:
    _configure(standin)
    daemon: DaemonProcess = spawn(MAILROOM_BATCH_LIMIT="50", MAILROOM_SECRET_KEY=SECRET_KEY)
    daemon.wait_listening()
    return daemon


_examples = itertools.count()


@settings(FEW, max_examples=6)
@given(
    batch=st.lists(
        st.tuples(st.sampled_from(sorted(FATES)), clean_objects),
        min_size=2,
        max_size=12,
    )
)
def test_ses_refusals_are_dead_lettered_and_the_rest_of_the_batch_is_sent(
    conn: psycopg.Connection[Any],
    standin: SesStandin,
    mixed_daemon: DaemonProcess,
    batch: list[tuple[str, dict[str, Any]]],
) -> None:
    example = next(_examples)
    ids: dict[int, str] = {}
    with conn.transaction():  # one transaction: claimed together, sent in the same calls
        for position, (fate, data) in enumerate(batch):
            token, kind, _ = FATES[fate]
            to = f"e{example}-{token}-{position}@example.com"
            if kind == "template":
                message = mailroom.enqueue(conn, to, template="welcome", data=data)
            else:
                message = mailroom.enqueue(conn, to, subject=f"S{position}", text=json.dumps(data))
            ids[message] = fate
    wait_for(lambda: len(_final(conn, list(ids))) == len(ids), timeout=30)
    final = _final(conn, list(ids))
    for message, fate in ids.items():
        status, error = final[message]
        reason = FATES[fate][2]
        if reason is None:
            assert (status, error) == ("sent", ""), (fate, status, error)
        else:
            assert status == "dead", (fate, status, error)
            assert error.startswith(reason + ":"), (fate, error)
    delivered = {r["to"][0] for r in standin.sent() if r["to"][0].startswith(f"e{example}-")}
    wanted = {
        f"e{example}-{FATES[f][0]}-{p}@example.com"
        for p, (f, _) in enumerate(batch)
        if FATES[f][2] is None
    }
    assert delivered == wanted
    assert mixed_daemon.proc is not None
    assert mixed_daemon.proc.poll() is None, _diagnose(mixed_daemon)


def test_unusual_but_valid_messages_are_delivered_and_a_sign_block_is_refused(
    conn: psycopg.Connection[Any], standin: SesStandin, mixed_daemon: DaemonProcess
) -> None:
    many = [f"r{i}@example.com" for i in range(50)]
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\n\r\n" + b"z" * (3 << 20)
    with conn.transaction():
        idn = mailroom.enqueue(conn, "ann@exämple.com", subject="IDN", text="x")
        fifty = mailroom.enqueue(
            conn, many[:30], cc=many[30:40], bcc=many[40:], subject="50", text="x"
        )
        big = mailroom.enqueue(conn, "big@example.com", subject="Big", text="é" * (1 << 20))
        html_only = mailroom.enqueue(conn, "html@example.com", subject="H", html="<p>ü</p>")
        rawmsg = mailroom.enqueue(conn, "raw@example.com", raw=raw)
        unicode_data = mailroom.enqueue(
            conn, "uni@example.com", template="welcome", data={"名前": "Zoë 🎉", "n": [1, None]}
        )
    # a signing request in template data is refused at enqueue (0019), with its reason
    with pytest.raises(psycopg.errors.CheckViolation, match=r'may not carry a "\$sign" block'):
        mailroom.enqueue(
            conn,
            "sign@example.com",
            template="activationv1",
            data={"$sign": {"field": "secret", "action": "nonsense", "secret": "zz"}},
        )
    ids = [idn, fifty, big, html_only, rawmsg, unicode_data]
    wait_for(lambda: len(_final(conn, ids)) == len(ids), timeout=30)
    final = _final(conn, ids)
    assert {i: final[i][0] for i in ids} == dict.fromkeys(ids, "sent")
    sent = {r["to"][0] if r["to"] else r["subject"]: r for r in standin.sent()}
    assert "ann@xn--exmple-cua.com" in sent  # the helper stored the IDN domain in punycode
    fifty_rec = sent["r0@example.com"]
    assert len(fifty_rec["to"] + fifty_rec["cc"] + fifty_rec["bcc"]) == 50
    assert sent["big@example.com"]["text"] == "é" * (1 << 20)
    assert sent["raw@example.com"]["raw"] == raw
    assert sent["uni@example.com"]["template_data"] == {"名前": "Zoë 🎉", "n": [1, None]}
    _still_serving(conn, mixed_daemon, "unusual")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("'{\"n\": ' || repeat('9', 5000) || '}'", id="5000-digit-number"),
        pytest.param("'{\"a\": ' || repeat('[', 3000) || repeat(']', 3000) || '}'", id="deep-3000"),
    ],
)
def test_template_data_the_daemon_cannot_decode_is_dead_lettered(
    conn: psycopg.Connection[Any], standin: SesStandin, mixed_daemon: DaemonProcess, data: str
) -> None:
    """Valid jsonb objects under 256 KiB, inserted by another client (Python's json cannot
    even encode them): the schema accepts them, so the daemon must cope (SPEC §3.7)."""
    with conn.transaction():
        before = [
            mailroom.enqueue(conn, f"good{i}@example.com", template="welcome", data={"i": i})
            for i in range(3)
        ]
        row = conn.execute(
            "SELECT mailroom.enqueue(to_addresses => '{poison@example.com}',"
            f" template => 'welcome', template_data => ({data})::jsonb)"
        ).fetchone()
        assert row is not None
        poison = int(row[0])
        after = [
            mailroom.enqueue(conn, f"good{i}@example.com", template="welcome", data={"i": i})
            for i in range(3, 6)
        ]
    good = before + after
    proc = mixed_daemon.proc
    assert proc is not None
    wait_for(lambda: len(_final(conn, [*good, poison])) == 7 or proc.poll() is not None, 25)
    states = conn.execute("SELECT id, status, attempts, last_error FROM mailroom.outbox").fetchall()
    assert proc.poll() is None, f"rows {states}; {_diagnose(mixed_daemon)}"
    final = _final(conn, [*good, poison])
    assert {i: final[i][0] for i in good} == dict.fromkeys(good, "sent"), final
    assert final[poison][0] == "dead"
    _still_serving(conn, mixed_daemon, "poison")


# -- NOTIFY on the daemon's channel ------------------------------------------------------------

payloads = st.one_of(
    st.sampled_from(["", "user_action_queue", "other_queue", "x" * 7999, "é" * 3999, "{}", "\n"]),
    st.text(max_size=300),
    st.text(min_size=2000, max_size=2600),
).filter(lambda p: "\x00" not in p and len(p.encode()) < 8000)


@pytest.fixture
def listening_daemon(spawn: Any) -> DaemonProcess:
    daemon: DaemonProcess = spawn()
    daemon.wait_listening()
    return daemon


@settings(FEW, max_examples=50)
@given(payload=payloads)
def test_any_notify_payload_on_the_channel_is_harmless(
    conn: psycopg.Connection[Any], listening_daemon: DaemonProcess, payload: str
) -> None:
    conn.execute("SELECT pg_notify('token_insert', %s)", [payload])
    assert listening_daemon.proc is not None
    assert listening_daemon.proc.poll() is None, _diagnose(listening_daemon)


def test_notify_flood_and_over_long_payload_then_mail_still_flows(
    conn: psycopg.Connection[Any], listening_daemon: DaemonProcess
) -> None:
    with conn.transaction():  # 5,000 distinct notifications delivered at commit
        conn.execute(
            "SELECT pg_notify('token_insert', 'flood ' || i) FROM generate_series(1, 5000) AS i"
        )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="payload string too long"):
        conn.execute("SELECT pg_notify('token_insert', repeat('x', 8000))")
    _still_serving(conn, listening_daemon, "notify")
    listens = [e for e in listening_daemon.events() if e.get("event") == "listening"]
    assert len(listens) == 1, "odd notifications must not cost the LISTEN session"


# -- connection strings: no piece of a password in any output --------------------------------

# (connection string, the pieces of its password, refused at start-up?)
HOSTILE_DSNS = [
    ("postgresql://mr:SlashPw/S3cr3tQ@127.0.0.1:1/db", ["SlashPw", "S3cr3tQ"], True),
    ("postgresql://mr:AtPw@S3cr3tQ@127.0.0.1:1/db", ["AtPw", "S3cr3tQ"], True),
    ("postgresql://mr:ColonPw:S3cr3tQ@127.0.0.1:1/db", ["ColonPw", "S3cr3tQ"], False),
    ("postgresql://mr:QPw?S3cr3tQ@127.0.0.1:1/db", ["QPw", "S3cr3tQ"], False),
    ("postgresql://mr:S3cr3tQ/db", ["S3cr3tQ"], True),  # no host: libpq's port
    ("postgresql://mr@127.0.0.1:1/db?password=S3cr3tQ", ["S3cr3tQ"], False),
    ("postgresql://mr@127.0.0.1:1/db?sslmode=prefer&pass%77ord=S3cr3tQ", ["S3cr3tQ"], False),
    ("postgresql://mr:%53%33cr3tQ@127.0.0.1:1/db", ["S3cr3tQ", "%53%33cr3tQ"], False),
    ("postgresql://mr:S3cr3tQ@127.0.0.1:1/db?sslmode=S3cr3tQ", ["S3cr3tQ"], True),
    ("host=127.0.0.1 port=1 password=S3cr3tQ", ["S3cr3tQ"], False),
    ("host=127.0.0.1 port=1 password='S3cr3tQ with spaces'", ["S3cr3tQ"], False),
    ("host=127.0.0.1 port=S3cr3tQ password=S3cr3tQ", ["S3cr3tQ"], True),
    (
        "host=127.0.0.1 password = S3cr3tQ sslpassword=Other5ecret port=1",
        ["S3cr3tQ", "Other5ecret"],
        False,
    ),
    ("password=S3cr3tQ host='unterminated", ["S3cr3tQ"], True),
    ("postgresql://mr:S3cr3tQ@[::1/db", ["S3cr3tQ"], True),
    ("S3cr3tQ", ["S3cr3tQ"], True),
]


@pytest.mark.parametrize(("dsn", "pieces", "refused"), HOSTILE_DSNS)
def test_no_piece_of_a_password_is_shown(dsn: str, pieces: list[str], refused: bool) -> None:
    from test_cli import mailroom  # noqa: PLC0415 -- the CLI as a real process

    env = {"MAILROOM_DATABASE_URL": dsn}
    runs = {
        "config (environment)": mailroom("config", env=env),
        "config --json": mailroom("config", "--json", env=env),
        "--dsn before": mailroom("--dsn", dsn, "status"),
        "--dsn after": mailroom("status", "--dsn", dsn),
        "status (environment)": mailroom("status", env=env),
    }
    for name, run in runs.items():
        for piece in pieces:
            assert piece not in run.stdout + run.stderr, f"{name}: {run.stdout}{run.stderr}"
        assert "Traceback" not in run.stderr, name
        if refused:
            assert run.returncode == 2, f"{name}: {run.stderr}"
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1, f"{name}: {run.stderr}"
            assert "MAILROOM_DATABASE_URL" in lines[0], name
        else:
            assert run.returncode in (0, 3), f"{name}: {run.stderr}"


def test_redaction_rules() -> None:
    from mailroom.config import dsn as dsn_text  # noqa: PLC0415

    assert dsn_text.redact("postgresql://app:hunter2@db/app") == "postgresql://app:***@db/app"
    assert (
        dsn_text.redact("postgresql://db/app?x=1&password=p")
        == "postgresql://db/app?x=1&password=***"
    )
    assert dsn_text.redact("host=db password='a b' user=u") == "host=db password=*** user=u"
    assert dsn_text.redact("not a dsn") == dsn_text.HIDDEN
    # a libpq message quoting a parsed piece of the password
    text = 'could not translate host name "S3cr3t@127.0.0.1"'
    assert "S3cr3t" not in dsn_text.scrub(text, "postgresql://mr:AtPw@S3cr3t@127.0.0.1/db")


def test_an_over_long_idn_label_is_refused_before_conversion(
    bare_db: str,  # noqa: F811 -- the fixture imported from test_sql_security
    login_as: Callable[..., str],
) -> None:
    """A guard, not a speed assertion: 2 s of statement_timeout is far more than the guarded
    refusal needs and far less than punycode spends on 8,000 characters (18 s seen), so
    the unguarded schema (before 0018) is cancelled and the guarded one answers."""
    from mailroom import migrate  # noqa: PLC0415
    from test_sql_security import _apply_up_to  # noqa: PLC0415

    # 8,000 distinct code points: punycode walks the label once per distinct one
    domain = "".join(chr(0x4E00 + i) for i in range(8000)) + ".de"
    with psycopg.connect(bare_db, autocommit=True) as conn:
        _apply_up_to(conn, 17, ())
        conn.execute("SET statement_timeout = '2s'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT mailroom.ascii_domain(%s)", (domain,))
        conn.execute("RESET statement_timeout")
        migrate.migrate(conn, channel="token_insert")
        conn.execute("SET statement_timeout = '2s'")
        with pytest.raises(psycopg.errors.CheckViolation):  # the trigger converts, then refused
            conn.execute(
                "INSERT INTO mailroom.outbox (idempotency_key, to_addresses, subject, body_text)"
                " VALUES ('long-idn', ARRAY[%s], 's', 't')",
                ("x@" + domain,),
            )
    with psycopg.connect(login_as("mailroom_app", db=bare_db), autocommit=True) as app:
        app.execute("SET statement_timeout = '2s'")
        assert app.execute("SELECT mailroom.ascii_domain(%s)", (domain,)).fetchone() == (None,)
        assert app.execute("SELECT mailroom.ascii_domain('b\u00fccher.de')").fetchone() == (
            "xn--bcher-kva.de",
        )
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            app.execute("SELECT mailroom.punycode(%s)", ("\u00fc" * 64,))
