"""Parsing SES events in every envelope, and the suppression plan step: pure, no I/O.

Fixtures (tests/fixtures/ses_events/) follow the record structures of the SES developer
guide's event-publishing examples.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailroom.addresses import normalize_address
from mailroom.daemon import suppression
from mailroom.events import parsing as events
from mailroom.events.reader import _in_thread, _Worker
from mailroom.outbox import Message

FIXTURES = Path(__file__).parent / "fixtures" / "ses_events"


def fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return document


def sns(event: dict[str, Any], message_id: str = "sns-1") -> str:
    envelope = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": json.dumps(event),
        "Timestamp": "2024-05-01T10:00:06.000Z",
    }
    return json.dumps(envelope)


def eventbridge(event: dict[str, Any]) -> str:
    return json.dumps({"version": "0", "id": "eb-1", "detail-type": "Email Bounced",
                       "source": "aws.ses", "account": "123456789012",
                       "time": "2024-05-01T10:00:06Z", "region": "us-east-1",
                       "resources": [], "detail": event})  # fmt: skip


def test_a_bounce_in_every_envelope_is_the_same_event() -> None:
    bounce = fixture("bounce")
    parsed = [events.parse(body) for body in (sns(bounce), json.dumps(bounce), eventbridge(bounce))]
    assert parsed[0] == parsed[1] == parsed[2]
    (event,) = parsed[0]
    assert event.type == "Bounce"
    assert event.subtype == "Permanent/General"
    assert event.recipient == "ann@example.com"  # normalized
    assert event.detail == "smtp; 550 5.1.1 user unknown"
    assert event.provider_message_id == "0100018f-message-1"
    assert event.occurred_at == datetime(2024, 5, 1, 10, 0, 5, 120000, tzinfo=UTC)
    assert events.suppression_reason(event) == "bounce"


def test_the_older_identity_notifications_parse_too() -> None:
    (event,) = events.parse(sns(fixture("identity_bounce_transient")))
    assert (event.type, event.subtype, event.recipient) == (
        "Bounce", "Transient/MailboxFull", "ivy@example.com")  # fmt: skip
    assert events.suppression_reason(event) is None  # counted in the database instead


@pytest.mark.parametrize(
    ("name", "kind", "subtype", "recipients"),
    [
        ("complaint", "Complaint", "abuse", ["bob@example.com"]),
        ("delivery", "Delivery", "", ["carol@example.com", "dave@example.com"]),
        ("send", "Send", "", ["carol@example.com", "dave@example.com"]),
        ("reject", "Reject", "", ["erin@example.com"]),
        ("delivery_delay", "DeliveryDelay", "TransientCommunicationFailure", ["frank@example.com"]),
        ("rendering_failure", "RenderingFailure", "activationv1", ["gina@example.com"]),
        ("open", "Open", "", ["carol@example.com"]),
        ("click", "Click", "", ["carol@example.com"]),
        ("subscription", "Subscription", "", ["hank@example.com"]),
    ],
)
def test_every_event_type(name: str, kind: str, subtype: str, recipients: list[str]) -> None:
    records = events.parse(sns(fixture(name)))
    assert [r.recipient for r in records] == recipients
    assert {(r.type, r.subtype) for r in records} == {(kind, subtype)}
    assert len({r.key for r in records}) == len(records)  # one key per recipient


def test_a_click_keeps_no_link_ip_or_user_agent() -> None:
    (record,) = events.parse(sns(fixture("click")))
    flat = repr(record)
    for secret in ("SECRET-TOKEN-VALUE", "192.0.2.1", "Mozilla"):
        assert secret not in flat


def test_keys_identify_the_event_not_the_envelope() -> None:
    bounce = fixture("bounce")
    a = events.parse(sns(bounce, "sns-1"))
    b = events.parse(sns(bounce, "sns-2"))  # an SNS redelivery has the same SNS id; a
    assert a[0].key == b[0].key  # second path a different one: still one event
    opened = fixture("open")
    later = json.loads(json.dumps(opened))
    later["open"]["timestamp"] = "2024-05-01T12:30:00.000Z"
    assert events.parse(sns(opened))[0].key != events.parse(sns(later))[0].key  # two opens


def test_a_not_spam_complaint_does_not_suppress() -> None:
    complaint = fixture("complaint")
    complaint["complaint"]["complaintFeedbackType"] = "not-spam"
    (event,) = events.parse(sns(complaint))
    assert events.suppression_reason(event) is None


def test_subscription_confirmations_are_ignored_not_malformed() -> None:
    body = json.dumps({"Type": "SubscriptionConfirmation", "Message": "You have chosen..."})
    assert events.parse(body) == []
    hello = {"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "hi"}
    assert events.parse(sns(hello)) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not_json"),
        ("[1, 2]", "no_event"),
        (json.dumps({"Type": "Notification", "Message": "{oops"}), "not_json"),
        (json.dumps({"Type": "Notification", "Message": 42}), "bad_field"),
        (json.dumps({"hello": "world"}), "no_event"),
        (json.dumps({"eventType": "Teleport", "mail": {}}), "unknown_type"),
        (json.dumps({"eventType": "Bounce", "mail": {"messageId": "m"}}), "missing_field"),
        (
            json.dumps(
                {
                    "eventType": "Bounce",
                    "mail": {"messageId": "m"},
                    "bounce": {"bounceType": "Permanent", "bouncedRecipients": []},
                }
            ),
            "missing_field",
        ),
        (
            json.dumps(
                {
                    "eventType": "Bounce",
                    "mail": {"messageId": "m"},
                    "bounce": {
                        "bounceType": "Soft",
                        "timestamp": "2024-05-01T10:00:00Z",
                        "bouncedRecipients": [{"emailAddress": "a@b.c"}],
                    },
                }
            ),
            "bad_field",
        ),
        (
            json.dumps(
                {
                    "eventType": "Delivery",
                    "mail": {"messageId": "m"},
                    "delivery": {"recipients": ["a@b.c"], "timestamp": "yesterday"},
                }
            ),
            "bad_field",
        ),
        (
            json.dumps(
                {"eventType": "Send", "mail": {"messageId": ["m"], "destination": ["a@b.c"]}}
            ),
            "bad_field",
        ),
        ("[" * 100_000 + "]" * 100_000, "not_json"),
    ],
)
def test_malformed_messages_say_why(body: str, reason: str) -> None:
    with pytest.raises(events.Malformed) as caught:
        events.parse(body)
    assert caught.value.reason == reason
    assert reason in events.MALFORMED_REASONS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["eventType", "notificationType", "mail", "bounce", "complaint", "delivery",
                     "Type", "Message", "detail", "detail-type"]),
    json_values, max_size=6,
))  # fmt: skip
def test_arbitrary_documents_parse_or_are_malformed_never_crash(document: dict[str, Any]) -> None:
    reason = None
    try:
        records = events.parse(json.dumps(document))
    except events.Malformed as exc:
        reason, records = exc.reason, []
    assert reason is None or reason in events.MALFORMED_REASONS
    assert all(r.type in events.EVENT_TYPES for r in records)


# -- what the database cannot store or index ---------------------------------------------

UNSTORABLE = ("\x00", "\ud800", "\udbff", "\udc00", "\udfff")


def test_sanitize_replaces_nul_and_lone_surrogates_in_every_string_keys_included() -> None:
    document = {"a\x00": ["x\ud800y", {"k": "\udfff"}], "n": 1, "ok": "\U0001f600 é", "z": None}
    assert events.sanitize(document) == {
        "a\ufffd": ["x\ufffdy", {"k": "\ufffd"}], "n": 1, "ok": "\U0001f600 é", "z": None,
    }  # fmt: skip


def strings_of(record: events.Event) -> list[str]:
    fields = (record.key, record.provider_message_id, record.recipient, record.subtype,
              record.detail)  # fmt: skip
    return [f for f in fields if f is not None]


@pytest.mark.parametrize("bad", UNSTORABLE)
def test_a_lone_surrogate_or_nul_anywhere_in_a_bounce_parses_to_storable_text(bad: str) -> None:
    event = fixture("bounce")
    event["mail"]["messageId"] = f"id{bad}"
    event["bounce"]["bounceSubType"] = f"General{bad}"
    recipient = event["bounce"]["bouncedRecipients"][0]
    recipient["emailAddress"] = f"an{bad}n@example.com"
    recipient["diagnosticCode"] = f"smtp; 550 {bad}"
    for body in (sns(event), json.dumps(event)):  # escaped twice, and once
        [record] = events.parse(body)
        for text in strings_of(record):
            text.encode()  # raises UnicodeEncodeError on a lone surrogate
            assert "\x00" not in text
        assert record.recipient == "an\ufffdn@example.com"


def test_an_address_over_320_characters_is_dropped_and_the_others_kept() -> None:
    event = fixture("bounce")
    good = event["bounce"]["bouncedRecipients"][0]
    huge = {**good, "emailAddress": "a" * 320 + "@example.com"}
    event["bounce"]["bouncedRecipients"] = [huge, good]
    assert [r.recipient for r in events.parse(sns(event))] == [good["emailAddress"].lower()]
    longest = "a" * (320 - len("@example.com")) + "@example.com"
    event["bounce"]["bouncedRecipients"] = [{**good, "emailAddress": longest}]
    assert [r.recipient for r in events.parse(sns(event))] == [longest]
    event["bounce"]["bouncedRecipients"] = [huge]
    with pytest.raises(events.Malformed) as caught:
        events.parse(sns(event))
    assert caught.value.reason == "too_long"


def test_a_message_id_over_256_characters_is_malformed() -> None:
    event = fixture("bounce")
    event["mail"]["messageId"] = "m" * 256
    assert events.parse(sns(event))[0].provider_message_id == "m" * 256
    event["mail"]["messageId"] = "m" * 257
    with pytest.raises(events.Malformed) as caught:
        events.parse(sns(event))
    assert caught.value.reason == "too_long"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from([*UNSTORABLE, "a", "@", "\u00e9"]), max_size=30))
def test_hostile_text_in_any_field_parses_to_storable_records_or_is_malformed(text: str) -> None:
    event = fixture("bounce")
    event["mail"]["messageId"] = text
    event["bounce"]["bounceSubType"] = text
    event["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = text
    event["bounce"]["bouncedRecipients"].append({"emailAddress": f"{text}@example.com"})
    reason = None
    try:
        records = events.parse(sns(event))
    except events.Malformed as exc:
        reason, records = exc.reason, []
    assert reason is None or reason in events.MALFORMED_REASONS
    for record in records:
        for field in strings_of(record):
            field.encode()
            assert "\x00" not in field


# -- addresses and the suppression plan step ----------------------------------------------


@pytest.mark.parametrize(
    ("given_address", "normalized"),
    [
        ("Ann@Example.COM", "ann@example.com"),
        ("  bob@example.com ", "bob@example.com"),
        ('"Ann Smith" <Ann@Example.com>', "ann@example.com"),
        ("Ann <ann@example.com>", "ann@example.com"),
    ],
)
def test_normalize_address(given_address: str, normalized: str) -> None:
    assert normalize_address(given_address) == normalized


def message(i: int, to: list[str], cc: list[str] | None = None) -> Message:
    return Message(i, 1, 10, None, to, cc or [], [], [], None, "t", "{}", None, None, None,
                   None, 0.0)  # fmt: skip


def test_strip_removes_suppressed_recipients_and_kills_empty_messages() -> None:
    since = datetime(2024, 5, 1, 10, 0, 5, tzinfo=UTC)
    listed = {"ann@example.com": suppression.Entry("bounce", since)}
    batch = [
        message(1, ["Ann@example.com"]),
        message(2, ["ann@example.com", "bob@example.com"]),
        message(3, ["carol@example.com"], cc=["ANN@example.com"]),
        message(4, ["dave@example.com"]),
    ]
    kept, dead, removed = suppression.strip(batch, listed)
    assert [(m.id, m.to, m.cc) for m in kept] == [
        (2, ["bob@example.com"], []),
        (3, ["carol@example.com"], []),
        (4, ["dave@example.com"], []),
    ]
    assert kept[2] is batch[3]  # untouched messages are not copied
    assert dead == [(batch[0], "bounce since 2024-05-01T10:00:05Z")]
    assert removed == 3
    assert suppression.recipients(batch) == [
        "ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]  # fmt: skip


def test_strip_with_nothing_suppressed_is_the_batch() -> None:
    batch = [message(1, ["a@example.com"])]
    assert suppression.strip(batch, {}) == (batch, [], 0)


# -- the reader's worker threads (events_reader._Worker) ----------------------------------


def test_a_pollers_calls_share_one_thread_and_errors_reach_the_caller() -> None:
    async def scenario() -> set[int]:
        worker = _Worker()
        names = {await worker.call(threading.get_ident) for _ in range(5)}

        def fail() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await worker.call(fail)
        after = await worker.call(threading.get_ident)  # still serving after an error
        names.add(after)
        return names

    idents = asyncio.run(scenario())
    assert len(idents) == 1  # one thread for every call
    assert threading.get_ident() not in idents  # and not the event loop's


def test_a_one_shot_worker_leaves_no_thread_behind() -> None:
    before = {t.ident for t in threading.enumerate()}

    async def scenario() -> None:
        for _ in range(20):
            await _in_thread(lambda: None)

    asyncio.run(scenario())
    leftover = [
        t for t in threading.enumerate() if t.ident not in before and t.name == "mailroom-sqs"
    ]
    for thread in leftover:
        thread.join(5)
    assert not any(t.is_alive() for t in leftover)


# -- bounded input (issue 19, item 2) -------------------------------------------------------


def many(count: int) -> dict[str, Any]:
    event = fixture("bounce")
    event["bounce"]["bouncedRecipients"] = [
        {"emailAddress": f"r{i}@example.com"} for i in range(count)
    ]
    return event


def test_at_most_50_recipients_per_event_the_rest_dropped_and_counted() -> None:
    """SES's own limit: 50 recipients per message. Before: 51 gave 51 records."""
    assert len(events.parse(sns(many(50)))) == 50
    records, dropped = events.parse_counted(sns(many(51)))
    assert [r.recipient for r in records] == [f"r{i}@example.com" for i in range(50)]
    assert dropped == {"too_many_recipients": 1}
    records, dropped = events.parse_counted(sns(many(5000)))
    assert len(records) == 50
    assert dropped == {"too_many_recipients": 4950}


def test_an_address_over_320_characters_is_counted_as_dropped() -> None:
    event = many(2)
    event["bounce"]["bouncedRecipients"][0]["emailAddress"] = "a" * 320 + "@example.com"
    records, dropped = events.parse_counted(sns(event))
    assert [r.recipient for r in records] == ["r1@example.com"]
    assert dropped == {"too_long": 1}


def test_diagnostic_text_is_truncated_within_the_columns_limit() -> None:
    event = fixture("bounce")
    event["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "x" * 5000
    (record,) = events.parse(sns(event))
    assert record.detail == "x" * events.MAX_DETAIL
    assert events.MAX_DETAIL <= 1000  # events_detail_at_most_1000_chars (sql/0009)
