"""The outbox schema on a real PostgreSQL: constraints, enqueue(), idempotency,
transactions, the statement-level NOTIFY, scheduling and migrations."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

import mailroom
from conftest import wait_for
from mailroom import migrate

CHANNEL = "token_insert"
QUEUE = "user_action_queue"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def _create_db(admin_dsn: str, template: str | None = None) -> str:
    name = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        if template is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
            admin.execute(create.format(sql.Identifier(name), sql.Identifier(template)))
    return name


def _drop_db(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def shared_db(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """One migrated database for the tests that only look at rows they made themselves."""
    name = _create_db(pg_admin_dsn, template_db)
    try:
        yield _with_db(pg_admin_dsn, name)
    finally:
        _drop_db(pg_admin_dsn, name)


@pytest.fixture(scope="module")
def shared_conn(shared_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(shared_db, autocommit=True) as connection:
        yield connection


@pytest.fixture
def empty_db(pg_admin_dsn: str) -> Iterator[str]:
    """DSN of a brand-new database that was never migrated."""
    name = _create_db(pg_admin_dsn)
    try:
        yield _with_db(pg_admin_dsn, name)
    finally:
        _drop_db(pg_admin_dsn, name)


def count(conn: psycopg.Connection[Any], where: str = "true") -> int:
    query = sql.SQL("SELECT count(*) FROM mailroom.outbox WHERE {}").format(sql.SQL(where))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# -- three ways in: the Python helper, the SQL function and a plain INSERT ------------------

SQL_TYPES = {
    "to_addresses": "text[]",
    "cc_addresses": "text[]",
    "bcc_addresses": "text[]",
    "reply_to_addresses": "text[]",
    "template_data": "jsonb",
    "raw_mime": "bytea",
    "priority": "smallint",
    "max_attempts": "integer",
    "not_before": "timestamptz",
    "next_attempt_at": "timestamptz",
}
PYTHON_NAMES = {
    "template_data": "data",
    "body_text": "text",
    "body_html": "html",
    "raw_mime": "raw",
    "cc_addresses": "cc",
    "bcc_addresses": "bcc",
    "reply_to_addresses": "reply_to",
}


def _typed(name: str) -> sql.Composed:
    return sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(SQL_TYPES.get(name, "text")))


def _sql_params(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: Jsonb(v) if k == "template_data" else v for k, v in fields.items()}


def via_python(conn: psycopg.Connection[Any], fields: dict[str, Any]) -> int:
    rest = dict(fields)
    to = rest.pop("to_addresses")
    return mailroom.enqueue(conn, to, **{PYTHON_NAMES.get(k, k): v for k, v in rest.items()})


def via_function(conn: psycopg.Connection[Any], fields: dict[str, Any]) -> int:
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), _typed(name)) for name in fields
    )
    row = conn.execute(
        sql.SQL("SELECT mailroom.enqueue({})").format(args), _sql_params(fields)
    ).fetchone()
    assert row is not None
    return int(row[0])


def via_insert(conn: psycopg.Connection[Any], fields: dict[str, Any]) -> int:
    query = sql.SQL("INSERT INTO mailroom.outbox ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in fields),
        sql.SQL(", ").join(_typed(name) for name in fields),
    )
    row = conn.execute(query, _sql_params(fields)).fetchone()
    assert row is not None
    return int(row[0])


ROUTES: dict[str, Callable[[psycopg.Connection[Any], dict[str, Any]], int]] = {
    "python": via_python,
    "function": via_function,
    "insert": via_insert,
}
ALL = ("python", "function", "insert")
SQL_ONLY = ("function", "insert")

BASE: dict[str, Any] = {
    "to_addresses": ["ann@example.com"],
    "subject": "Hello",
    "body_text": "Hi Ann",
}
TEMPLATE_ONLY: dict[str, Any] = {"subject": None, "body_text": None, "template": "welcome"}


def fields_of(overrides: dict[str, Any]) -> dict[str, Any]:
    merged = {**BASE, **overrides}
    return {k: v for k, v in merged.items() if v is not None}


def addresses(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


@dataclass(frozen=True)
class Case:
    name: str
    constraint: str
    overrides: dict[str, Any]
    routes: tuple[str, ...] = ALL


RECIPIENTS = "outbox_recipients_between_1_and_50"
ADDRESS = "outbox_addresses_must_be_ascii_user_at_domain"
ONE_KIND = "outbox_exactly_one_of_template_subject_raw_mime"
TEMPLATE_NAME = "outbox_template_name_is_ses_name"
TEMPLATE_DATA = "outbox_template_data_is_object_for_templates_only"
NEEDS_BODY = "outbox_simple_message_needs_subject_and_body"
BODY_ONLY = "outbox_body_only_with_subject"
MAX_ATTEMPTS = "outbox_max_attempts_between_1_and_100"
IDEMPOTENCY = "outbox_idempotency_key_1_to_255_chars"
QUEUE_NAME = "outbox_queue_name_not_empty"

CASES = [
    Case("zero recipients", RECIPIENTS, {"to_addresses": []}),
    Case("cc but no to", RECIPIENTS, {"to_addresses": [], "cc_addresses": ["bob@example.com"]}),
    Case(
        "51 recipients across to cc bcc",
        RECIPIENTS,
        {
            "to_addresses": addresses("to", 17),
            "cc_addresses": addresses("cc", 17),
            "bcc_addresses": addresses("bcc", 17),
        },
    ),
    Case("51 to", RECIPIENTS, {"to_addresses": addresses("to", 51)}),
    Case("not an address", ADDRESS, {"to_addresses": ["not an address"]}),
    Case("no dot in domain", ADDRESS, {"to_addresses": ["a@b"]}),
    Case("empty address", ADDRESS, {"to_addresses": ["ann@example.com", ""]}),
    # 0012: IDN domains and display names are converted (tests/test_addresses.py); what
    # cannot be converted faithfully is still refused
    Case("fullwidth domain", ADDRESS, {"to_addresses": ["ann@m\uff55nchen.de"]}),
    Case("display name with a line break", ADDRESS, {"to_addresses": ["Ann\r\nBcc: <a@x.org>"]}),
    # RFC 5321 dot-string: no leading, trailing or doubled dot; local part <= 64 octets
    Case("leading dot in local part", ADDRESS, {"to_addresses": [".a@x.org"]}),
    Case("trailing dot in local part", ADDRESS, {"to_addresses": ["a.@x.org"]}),
    Case("doubled dot in local part", ADDRESS, {"to_addresses": ["a..b@x.org"]}),
    Case("only a dot as local part", ADDRESS, {"cc_addresses": [".@x.org"]}),
    Case("65-octet local part", ADDRESS, {"to_addresses": ["a" * 65 + "@x.org"]}),
    Case("dotted from", ADDRESS, {"from_address": "no..reply@x.org"}),
    Case("invisible character in domain", ADDRESS, {"to_addresses": ["abc@exa\u200bmple.com"]}),
    Case("sharp s mapped by IDNA 2003", ADDRESS, {"to_addresses": ["ann@straße.de"]}),
    Case("bad cc", ADDRESS, {"cc_addresses": ["bob at example.com"]}),
    Case("bad bcc", ADDRESS, {"bcc_addresses": ["carol@"]}),
    Case("bad reply-to", ADDRESS, {"reply_to_addresses": ["@example.com"]}),
    Case("bad from", ADDRESS, {"from_address": "noreply"}),
    Case("from with display name, no domain", ADDRESS, {"from_address": "Team <team@>"}),
    Case("no content", ONE_KIND, {"subject": None, "body_text": None}),
    Case("template and simple", ONE_KIND, {"template": "welcome"}),
    Case("template and raw", ONE_KIND, {**TEMPLATE_ONLY, "raw_mime": b"Subject: x\r\n\r\nx"}),
    Case("simple and raw", ONE_KIND, {"raw_mime": b"Subject: x\r\n\r\nx"}),
    Case("template name with space", TEMPLATE_NAME, {**TEMPLATE_ONLY, "template": "welcome v1"}),
    Case("template name of 65 chars", TEMPLATE_NAME, {**TEMPLATE_ONLY, "template": "t" * 65}),
    Case("empty template name", TEMPLATE_NAME, {**TEMPLATE_ONLY, "template": ""}),
    Case("template data array", TEMPLATE_DATA, {**TEMPLATE_ONLY, "template_data": [1]}, SQL_ONLY),
    Case("template data string", TEMPLATE_DATA, {**TEMPLATE_ONLY, "template_data": "x"}, SQL_ONLY),
    Case("template data on simple message", TEMPLATE_DATA, {"template_data": {"a": 1}}),
    Case("body without subject", BODY_ONLY, {**TEMPLATE_ONLY, "body_text": "x"}),
    Case("html without subject", BODY_ONLY, {**TEMPLATE_ONLY, "body_html": "<p>x</p>"}),
    Case("subject without body", NEEDS_BODY, {"body_text": None}),
    Case("empty subject", NEEDS_BODY, {"subject": ""}),
    Case("max_attempts 0", MAX_ATTEMPTS, {"max_attempts": 0}),
    Case("max_attempts 101", MAX_ATTEMPTS, {"max_attempts": 101}),
    Case("empty idempotency key", IDEMPOTENCY, {"idempotency_key": ""}),
    Case("idempotency key of 256 chars", IDEMPOTENCY, {"idempotency_key": "k" * 256}),
    Case("empty queue", QUEUE_NAME, {"queue": ""}),
]


@pytest.mark.parametrize(
    ("case", "route"),
    [pytest.param(c, r, id=f"{c.name}-{r}") for c in CASES for r in c.routes],
)
def test_check_constraint_rejects(
    shared_conn: psycopg.Connection[Any], case: Case, route: str
) -> None:
    before = count(shared_conn)
    with pytest.raises(psycopg.errors.CheckViolation, match=case.constraint) as caught:
        ROUTES[route](shared_conn, fields_of(case.overrides))
    assert caught.value.diag.constraint_name == case.constraint
    assert count(shared_conn) == before


ACCEPTED = [
    pytest.param(
        {
            "to_addresses": addresses("to", 30),
            "cc_addresses": addresses("cc", 10),
            "bcc_addresses": addresses("bcc", 10),
        },
        id="50 recipients",
    ),
    pytest.param({"max_attempts": 1}, id="max_attempts 1"),
    pytest.param({"max_attempts": 100}, id="max_attempts 100"),
    pytest.param({**TEMPLATE_ONLY, "template": "Ab_-9" + "x" * 59}, id="64-char template name"),
    pytest.param({**TEMPLATE_ONLY, "template_data": {"a": [1, {"b": None}]}}, id="template data"),
    pytest.param(
        {"subject": None, "body_text": None, "raw_mime": b"Subject: x\r\n\r\nx"}, id="raw"
    ),
    pytest.param({"body_text": None, "body_html": "<p>hi</p>"}, id="html only"),
    pytest.param(
        {
            "to_addresses": [
                "o'neil+tag@mail.sub-domain.example.co.uk",
                "a.b.c@x.org",
                "a" * 64 + "@x.org",
            ],
            "from_address": "no-reply@xn--mnchen-3ya.de",
            "reply_to_addresses": ["help@example.com"],
        },
        id="unusual but valid addresses",
    ),
]


@pytest.mark.parametrize("overrides", ACCEPTED)
@pytest.mark.parametrize("route", ALL)
def test_valid_boundaries_are_accepted(
    shared_conn: psycopg.Connection[Any], overrides: dict[str, Any], route: str
) -> None:
    fields = fields_of({**overrides, "idempotency_key": route[0] + uuid.uuid4().hex * 7 + "x" * 30})
    assert len(fields["idempotency_key"]) == 255
    message_id = ROUTES[route](shared_conn, fields)
    row = shared_conn.execute(
        "SELECT status, to_addresses, max_attempts FROM mailroom.outbox WHERE id = %s",
        [message_id],
    ).fetchone()
    assert row == ("pending", fields["to_addresses"], fields.get("max_attempts", 10))


def test_python_helper_idna_encodes_unicode_domains(shared_conn: psycopg.Connection[Any]) -> None:
    conn = shared_conn
    message_id = mailroom.enqueue(
        conn,
        "ann@münchen.de",
        subject="Hallo",
        text="Grüße",
        from_address="team@bücher.example",
        cc=["Bob@München.de"],
        bcc="carol@example.com",
        reply_to=[" help@bücher.example "],
    )
    row = conn.execute(
        "SELECT to_addresses, from_address, cc_addresses, bcc_addresses, reply_to_addresses,"
        " body_text FROM mailroom.outbox WHERE id = %s",
        [message_id],
    ).fetchone()
    assert row == (
        ["ann@xn--mnchen-3ya.de"],
        "team@xn--bcher-kva.example",
        ["Bob@xn--mnchen-3ya.de"],
        ["carol@example.com"],
        ["help@xn--bcher-kva.example"],
        "Grüße",
    )


@pytest.mark.parametrize(
    "address", ["ann@münchen..de", "ann@.münchen.de", "ann@" + "ü" * 70 + ".de"]
)
def test_python_helper_malformed_unicode_domain_is_a_check_violation(
    shared_conn: psycopg.Connection[Any], address: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=ADDRESS):
        mailroom.enqueue(shared_conn, address, subject="s", text="t")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"to": 42}, "to must be an address or a list of addresses"),
        ({"to": [b"a@example.com"]}, "to: an address must be a str"),
        ({"to": ["a@example.com", None]}, "to: an address must be a str"),
        ({"to": "a@example.com", "cc": [1]}, "cc: an address must be a str"),
        ({"to": "a@example.com", "bcc": {"a@example.com": 1}}, "bcc must be an address"),
        ({"to": "a@example.com", "reply_to": 3.5}, "reply_to must be an address"),
        ({"to": "a@example.com", "from_address": ["f@example.com"]}, "from_address must be"),
    ],
)
def test_python_helper_names_a_recipient_that_is_not_a_string(
    shared_conn: psycopg.Connection[Any], fields: dict[str, Any], message: str
) -> None:
    before = count(shared_conn)
    to = fields.pop("to")
    with pytest.raises(TypeError, match=message):
        mailroom.enqueue(shared_conn, to, subject="s", text="t", **fields)
    assert count(shared_conn) == before


@pytest.mark.parametrize("data", [[1, 2], "text", 42, [("a", 1)]])
def test_python_helper_rejects_non_mapping_data(
    shared_conn: psycopg.Connection[Any], data: Any
) -> None:
    before = count(shared_conn)
    with pytest.raises(TypeError, match="mapping"):
        mailroom.enqueue(shared_conn, "ann@example.com", template="welcome", data=data)
    assert count(shared_conn) == before


def test_python_helper_stores_template_data_as_object(
    shared_conn: psycopg.Connection[Any],
) -> None:
    conn = shared_conn
    data = {"login": "ann", "n": 3, "nested": {"ok": True}, "text": "Grüße"}
    message_id = mailroom.enqueue(conn, "ann@example.com", template="welcome", data=data)
    row = conn.execute(
        "SELECT template, template_data, jsonb_typeof(template_data) FROM mailroom.outbox"
        " WHERE id = %s",
        [message_id],
    ).fetchone()
    assert row == ("welcome", data, "object")


# -- idempotency --------------------------------------------------------------------------


def test_same_idempotency_key_returns_same_id(shared_conn: psycopg.Connection[Any]) -> None:
    conn = shared_conn
    k1, k2 = f"k1-{uuid.uuid4()}", f"k2-{uuid.uuid4()}"
    first = mailroom.enqueue(conn, "ann@example.com", subject="1", text="a", idempotency_key=k1)
    second = mailroom.enqueue(conn, " ann@example.com", subject="1", text="a", idempotency_key=k1,
                              priority=3)  # fmt: skip  # the same message: options differ
    third = via_function(conn, fields_of({"idempotency_key": k1, "subject": "1", "body_text": "a"}))
    assert first == second == third
    # the same key for another message: refused, whichever way it comes
    with pytest.raises(mailroom.IdempotencyConflict):
        mailroom.enqueue(conn, "bob@example.com", subject="1", text="a", idempotency_key=k1)
    with pytest.raises(psycopg.errors.UniqueViolation, match="already names message"):
        via_function(conn, fields_of({"idempotency_key": k1, "subject": "3"}))
    rows = conn.execute(
        "SELECT id, to_addresses, subject, priority FROM mailroom.outbox"
        " WHERE idempotency_key = %s",
        [k1],
    ).fetchall()
    assert rows == [(first, ["ann@example.com"], "1", 0)]  # the first enqueue stands

    other = mailroom.enqueue(conn, "ann@example.com", subject="1", text="a", idempotency_key=k2)
    assert other != first
    no_key_1 = mailroom.enqueue(conn, "ann@example.com", subject="1", text="a")
    no_key_2 = mailroom.enqueue(conn, "ann@example.com", subject="1", text="a")
    ids = [first, other, no_key_1, no_key_2]
    assert len(set(ids)) == 4
    assert count(conn, f"id IN ({', '.join(str(int(i)) for i in ids)})") == 4


@pytest.mark.parametrize("second_subject", ["first", "second"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_concurrent_enqueue_with_same_key_waits_for_the_first(
    db: str, conn: psycopg.Connection[Any], outcome: str, second_subject: str
) -> None:
    with psycopg.connect(db) as first, psycopg.connect(db) as second:
        first_id = mailroom.enqueue(
            first, "ann@example.com", subject="first", text="x", idempotency_key="same"
        )
        second_pid = second.info.backend_pid
        result: dict[str, Any] = {}

        def enqueue_second() -> None:
            try:
                result["id"] = mailroom.enqueue(
                    second, "ann@example.com", subject=second_subject, text="x",
                    idempotency_key="same",
                )  # fmt: skip
                second.commit()
            except BaseException as exc:  # reported to the test thread
                result["error"] = exc

        thread = threading.Thread(target=enqueue_second)
        thread.start()
        try:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        [second_pid],
                    ).fetchone()
                    == (True,)
                ),
                timeout=10,
            )
            assert thread.is_alive()
            assert result == {}  # still blocked behind the first, uncommitted insert
            if outcome == "commit":
                first.commit()
            else:
                first.rollback()
        finally:
            thread.join(10)
        assert not thread.is_alive()

    conflict = outcome == "commit" and second_subject != "first"  # another message, same key
    if conflict:
        assert isinstance(result.get("error"), mailroom.IdempotencyConflict), result
    else:
        assert "error" not in result, result.get("error")
    rows = conn.execute("SELECT id, subject FROM mailroom.outbox").fetchall()
    if outcome == "commit":
        assert conflict or result["id"] == first_id
        assert rows == [(first_id, "first")]
    else:
        assert result["id"] != first_id
        assert rows == [(result["id"], second_subject)]


# -- transactions ---------------------------------------------------------------------------


def test_enqueue_is_part_of_the_callers_transaction(db: str, conn: psycopg.Connection[Any]) -> None:
    with psycopg.connect(db) as tx:
        mailroom.enqueue(tx, "ann@example.com", subject="s", text="t")
        assert count(conn) == 0  # not visible before commit
        tx.rollback()
    assert count(conn) == 0

    class BusinessFailure(Exception):
        pass

    def sign_up(tx: psycopg.Connection[Any]) -> None:
        with tx.transaction():
            mailroom.enqueue(tx, "ann@example.com", subject="s", text="t")
            raise BusinessFailure

    with psycopg.connect(db) as tx, pytest.raises(BusinessFailure):
        sign_up(tx)
    assert count(conn) == 0

    with psycopg.connect(db) as tx:
        with tx.transaction():
            message_id = mailroom.enqueue(tx, "ann@example.com", subject="s", text="t")
            assert count(conn) == 0
        assert count(conn) == 1
    assert count(conn, f"id = {int(message_id)}") == 1


@pytest.mark.anyio
async def test_enqueue_async(db: str, conn: psycopg.Connection[Any]) -> None:
    async with await psycopg.AsyncConnection.connect(db) as aconn:
        message_id = await mailroom.enqueue_async(
            aconn, ["ann@münchen.de"], template="welcome", data={"a": 1}, idempotency_key="k"
        )
        again = await mailroom.enqueue_async(  # the same message, as stored: the same id
            aconn, ["ann@MÜNCHEN.de"], template="welcome", data={"a": 1}, idempotency_key="k"
        )
        assert again == message_id
        assert count(conn) == 0
        await aconn.commit()
    row = conn.execute(
        "SELECT id, to_addresses, template, template_data FROM mailroom.outbox"
    ).fetchall()
    assert row == [(message_id, ["ann@xn--mnchen-3ya.de"], "welcome", {"a": 1})]


# -- NOTIFY -----------------------------------------------------------------------------------


@pytest.fixture
def listener(db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db, autocommit=True) as connection:
        connection.execute(f"LISTEN {CHANNEL}")
        yield connection


def received(listener: psycopg.Connection[Any], conn: psycopg.Connection[Any]) -> list[Any]:
    """Notifications delivered so far: a sentinel sent after them arrives after them."""
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, sentinel])
    got: list[tuple[str, str]] = []
    for notify in listener.notifies(timeout=1):
        if notify.payload == sentinel:
            return got
        got.append((notify.channel, notify.payload))
    raise AssertionError(f"sentinel not received; got {got}")


INSERT_MANY = """
INSERT INTO mailroom.outbox (queue, to_addresses, subject, body_text)
SELECT {queue}, ARRAY['user' || g || '@example.com'], 'Hello', 'Hi'
FROM generate_series(1, %s) AS g
"""


def test_one_notification_per_statement(
    listener: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    conn.execute(INSERT_MANY.format(queue="'user_action_queue'"), [100])
    assert count(conn) == 100
    assert received(listener, conn) == [(CHANNEL, QUEUE)]

    mailroom.enqueue(conn, "ann@example.com", subject="s", text="t")
    assert received(listener, conn) == [(CHANNEL, QUEUE)]

    # the trigger fires once per statement, not per row
    row = conn.execute(
        "SELECT action_orientation, action_timing FROM information_schema.triggers"
        " WHERE event_object_schema = 'mailroom' AND trigger_name = 'outbox_notify'"
    ).fetchone()
    assert row == ("STATEMENT", "AFTER")


def test_one_notification_per_queue(
    listener: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    queue = "CASE WHEN g %% 3 = 0 THEN 'bulk_queue' ELSE 'user_action_queue' END"
    conn.execute(INSERT_MANY.format(queue=queue), [30])
    got = received(listener, conn)
    assert sorted(got) == [(CHANNEL, "bulk_queue"), (CHANNEL, QUEUE)]


def test_no_notification_for_a_rolled_back_insert(
    db: str, listener: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(db) as tx:
        tx.execute(INSERT_MANY.format(queue="'user_action_queue'"), [5])
        mailroom.enqueue(tx, "ann@example.com", subject="s", text="t")
        tx.rollback()
    assert received(listener, conn) == []
    assert count(conn) == 0


# -- scheduling -------------------------------------------------------------------------------


def test_not_before_sets_next_attempt_at(shared_conn: psycopg.Connection[Any]) -> None:
    conn = shared_conn
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    by_python = mailroom.enqueue(conn, "ann@example.com", subject="s", text="t", not_before=later)
    by_function = via_function(conn, fields_of({"not_before": later}))
    by_insert = via_insert(conn, fields_of({"not_before": later}))
    # a direct INSERT that sets next_attempt_at itself is overruled by not_before
    forced = conn.execute(
        "INSERT INTO mailroom.outbox (to_addresses, subject, body_text, not_before,"
        " next_attempt_at) VALUES (ARRAY['ann@example.com'], 's', 't', %s, now()) RETURNING id",
        [later],
    ).fetchone()
    assert forced is not None
    ids = [by_python, by_function, by_insert, forced[0]]
    rows = conn.execute(
        "SELECT not_before, next_attempt_at FROM mailroom.outbox WHERE id = ANY(%s) ORDER BY id",
        [ids],
    ).fetchall()
    assert rows == [(later, later)] * 4

    now_id = mailroom.enqueue(conn, "ann@example.com", subject="s", text="t")
    row = conn.execute(
        "SELECT next_attempt_at = not_before, next_attempt_at <= now() FROM mailroom.outbox"
        " WHERE id = %s",
        [now_id],
    ).fetchone()
    assert row == (True, True)


# -- migrations -------------------------------------------------------------------------------


def test_migrate_on_a_migrated_database_applies_nothing(conn: psycopg.Connection[Any]) -> None:
    assert migrate.migrate(conn, channel=CHANNEL) == []
    assert migrate.pending(conn) == []
    rows = conn.execute(
        "SELECT version, name, checksum FROM mailroom.schema_migrations ORDER BY version"
    ).fetchall()
    assert rows == [(m.version, m.name, m.checksum) for m in migrate.available()]
    migrate.check_ready(conn, channel=CHANNEL)

    # a migration edited after it was applied is refused
    conn.execute("UPDATE mailroom.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(migrate.MigrationError, match="changed"):
        migrate.migrate(conn, channel=CHANNEL)
    # and the advisory lock was released on the way out
    locks = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
    assert locks == (0,)


def test_migrate_needs_autocommit(shared_db: str) -> None:
    with (
        psycopg.connect(shared_db) as tx,
        pytest.raises(migrate.MigrationError, match="autocommit"),
    ):
        migrate.migrate(tx, channel=CHANNEL)


def test_concurrent_migrations_apply_each_version_once(empty_db: str) -> None:
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_db, autocommit=True) as c:
                barrier.wait(10)
                results.append(migrate.migrate(c, channel=CHANNEL))
        except BaseException as exc:  # reported to the test thread
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(isinstance(r, BaseException) for r in results), results
    applied = sorted(len(r) for r in results)
    assert applied == [0, len(migrate.available())]

    with psycopg.connect(empty_db, autocommit=True) as c:
        rows = c.execute(
            "SELECT version, count(*) FROM mailroom.schema_migrations"
            " GROUP BY version ORDER BY version"
        ).fetchall()
        assert rows == [(m.version, 1) for m in migrate.available()]
        migrate.check_ready(c, channel=CHANNEL)
        locks = c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert locks == (0,)


def test_check_ready_on_an_empty_database(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as c:
        with pytest.raises(migrate.MigrationError, match="mailroom migrate") as caught:
            migrate.check_ready(c, channel=CHANNEL)
        assert "0001_outbox" in str(caught.value)
        assert [m.version for m in migrate.pending(c)] == [m.version for m in migrate.available()]


def test_channel_setting_follows_migrate(db: str, conn: psycopg.Connection[Any]) -> None:
    migrate.check_ready(conn, channel=CHANNEL)
    with pytest.raises(migrate.MigrationError, match="mailroom migrate") as caught:
        migrate.check_ready(conn, channel="other_channel")
    assert "other_channel" in str(caught.value)

    # migrate rewires the trigger to the configured channel
    assert migrate.migrate(conn, channel="other_channel") == []
    migrate.check_ready(conn, channel="other_channel")
    with pytest.raises(migrate.MigrationError, match="mailroom migrate"):
        migrate.check_ready(conn, channel=CHANNEL)
    with psycopg.connect(db, autocommit=True) as other:
        other.execute("LISTEN other_channel")
        mailroom.enqueue(conn, "ann@example.com", subject="s", text="t", queue="q2")
        got = [(n.channel, n.payload) for n in other.notifies(timeout=1, stop_after=1)]
    assert got == [("other_channel", "q2")]
