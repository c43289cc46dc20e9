"""The SES v2 stand-in must be indistinguishable from SES to a real boto3 sesv2 client."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from sesv2_standin import SesStandin

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server() -> Iterator[SesStandin]:
    with SesStandin() as standin:
        yield standin


@pytest.fixture
def standin(server: SesStandin) -> SesStandin:
    server.reset()
    server.latency = 0.0
    server.timeout_sleep = 30.0
    return server


def make_client(url: str, read_timeout: float = 2) -> Any:
    return boto3.client(
        "sesv2",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=read_timeout
        ),
    )


@pytest.fixture
def ses(standin: SesStandin) -> Any:
    return make_client(standin.url)


def simple(to: str = "a@example.com") -> dict[str, Any]:
    return {
        "FromEmailAddress": "sender@example.com",
        "Destination": {"ToAddresses": [to]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Hi"},
                "Body": {"Text": {"Data": "plain"}, "Html": {"Data": "<b>html</b>"}},
            }
        },
    }


def bulk(addresses: list[str]) -> dict[str, Any]:
    return {
        "FromEmailAddress": "sender@example.com",
        "DefaultContent": {
            "Template": {"TemplateName": "welcome", "TemplateData": '{"name": "x", "plan": "free"}'}
        },
        "DefaultEmailTags": [{"Name": "kind", "Value": "welcome"}],
        "BulkEmailEntries": [
            {
                "Destination": {"ToAddresses": [a]},
                "ReplacementEmailContent": {
                    "ReplacementTemplate": {"ReplacementTemplateData": json.dumps({"name": a})}
                },
            }
            for a in addresses
        ],
    }


def test_send_email_simple(standin: SesStandin, ses: Any) -> None:
    req = simple()
    req["Destination"]["CcAddresses"] = ["c@example.com"]
    req["ConfigurationSetName"] = "cs"
    req["EmailTags"] = [{"Name": "outbox_id", "Value": "42"}]
    resp = ses.send_email(**req)
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    [rec] = standin.sent()
    assert rec["message_id"] == resp["MessageId"]
    assert rec["operation"] == "SendEmail"
    assert (rec["from"], rec["to"], rec["cc"], rec["bcc"]) == (
        "sender@example.com",
        ["a@example.com"],
        ["c@example.com"],
        [],
    )
    assert (rec["subject"], rec["text"], rec["html"]) == ("Hi", "plain", "<b>html</b>")
    assert rec["configuration_set"] == "cs"
    assert rec["tags"] == {"outbox_id": "42"}
    assert rec["raw"] is None
    assert standin.calls() == {"SendEmail": 1}


def test_send_email_raw_uses_message_headers(standin: SesStandin, ses: Any) -> None:
    raw = b"From: Raw <raw@example.com>\r\nTo: r1@example.com, R2 <r2@example.com>\r\n\r\nbody\xff"
    ses.send_email(Content={"Raw": {"Data": raw}})
    [rec] = standin.sent()
    assert rec["raw"] == raw
    assert rec["from"] == "Raw <raw@example.com>"
    assert rec["to"] == ["r1@example.com", "r2@example.com"]


def test_send_email_template(standin: SesStandin, ses: Any) -> None:
    ses.send_email(
        FromEmailAddress="sender@example.com",
        Destination={"ToAddresses": ["t@example.com"]},
        Content={"Template": {"TemplateName": "reset", "TemplateData": '{"code": 7}'}},
    )
    [rec] = standin.sent()
    assert (rec["template"], rec["template_data"]) == ("reset", {"code": 7})


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.pop("FromEmailAddress"),
        lambda r: r["Destination"].update(BccAddresses=[f"b{i}@example.com" for i in range(50)]),
        lambda r: r.pop("Destination"),
    ],
    ids=["no-from", "51-recipients", "no-recipients"],
)
def test_send_email_validation(standin: SesStandin, ses: Any, mutate: Any) -> None:
    req = simple()
    mutate(req)
    with pytest.raises(ClientError) as info:
        ses.send_email(**req)
    assert info.value.response["Error"]["Code"] == "BadRequestException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert standin.sent() == []
    assert standin.calls() == {"SendEmail": 1}


def test_send_bulk_email(standin: SesStandin, ses: Any) -> None:
    addresses = ["b1@example.com", "b2@example.com", "b3@example.com"]
    resp = ses.send_bulk_email(**bulk(addresses))
    results = resp["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == ["SUCCESS"] * 3
    assert len({r["MessageId"] for r in results}) == 3
    sent = standin.sent()
    assert [r["message_id"] for r in sent] == [r["MessageId"] for r in results]
    assert [r["to"] for r in sent] == [[a] for a in addresses]
    assert sent[1]["template"] == "welcome"
    assert sent[1]["template_data"] == {"name": "b2@example.com", "plan": "free"}
    assert sent[1]["tags"] == {"kind": "welcome"}
    assert {r["operation"] for r in sent} == {"SendBulkEmail"}


def test_send_bulk_email_over_50_entries(standin: SesStandin, ses: Any) -> None:
    with pytest.raises(ses.exceptions.BadRequestException) as info:
        ses.send_bulk_email(**bulk([f"x{i}@example.com" for i in range(51)]))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert standin.sent() == []


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("throttle", "TooManyRequestsException", 429),
        ("limit", "LimitExceededException", 400),
        ("server_error", "InternalFailure", 500),
        ("unavailable", "ServiceUnavailable", 503),
        ("sending_paused", "SendingPausedException", 400),
        ("account_suspended", "AccountSuspendedException", 400),
        ("message_rejected", "MessageRejected", 400),
        ("mail_from_not_verified", "MailFromDomainNotVerifiedException", 400),
        ("not_found", "NotFoundException", 404),
        ("bad_request", "BadRequestException", 400),
    ],
)
def test_injected_faults(standin: SesStandin, ses: Any, kind: str, code: str, status: int) -> None:
    standin.inject(kind, count=2)
    for operation, request in (("send_email", simple()), ("send_bulk_email", bulk(["a@x"]))):
        with pytest.raises(ClientError) as info:
            getattr(ses, operation)(**request)
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["Error"]["Message"]
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    ses.send_email(**simple())  # the queue is drained: the third call goes through
    assert len(standin.sent()) == 1
    assert standin.calls() == {"SendEmail": 2, "SendBulkEmail": 1}


def test_modeled_exception_classes_match(standin: SesStandin, ses: Any) -> None:
    standin.inject("throttle")
    with pytest.raises(ses.exceptions.TooManyRequestsException):
        ses.send_email(**simple())


def test_timeout_fault(standin: SesStandin) -> None:
    standin.timeout_sleep = 1.5
    standin.inject("timeout")
    client = make_client(standin.url, read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        client.send_email(**simple())
    # The late answer still counts as accepted, as a lost response from SES would be.
    deadline = time.monotonic() + 3
    while not standin.sent() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(standin.sent()) == 1
    client.send_email(**simple())
    assert len(standin.sent()) == 2


def test_stop_aborts_a_sleeping_timeout() -> None:
    standin = SesStandin(timeout_sleep=30).start()
    standin.inject("timeout")
    client = make_client(standin.url, read_timeout=0.3)
    with pytest.raises(ReadTimeoutError):
        client.send_email(**simple())
    started = time.monotonic()
    standin.stop()
    assert time.monotonic() - started < 2
    assert standin.sent() == []


def test_latency(standin: SesStandin, ses: Any) -> None:
    standin.latency = 0.2
    started = time.monotonic()
    ses.send_email(**simple())
    assert time.monotonic() - started >= 0.2


def test_fail_address_is_persistent(standin: SesStandin, ses: Any) -> None:
    standin.fail_address("bounce", "message_rejected")
    for _ in range(3):
        with pytest.raises(ses.exceptions.MessageRejected):
            ses.send_email(**simple("hard-bounce@example.com"))
    with pytest.raises(ses.exceptions.MessageRejected):
        ses.send_bulk_email(**bulk(["ok@example.com", "bounce@example.com"]))
    ses.send_email(**simple("fine@example.com"))
    assert [r["to"] for r in standin.sent()] == [["fine@example.com"]]


def test_entry_statuses(standin: SesStandin, ses: Any) -> None:
    standin.entry_status_for("reject", "MESSAGE_REJECTED")
    standin.entry_status_next("ACCOUNT_THROTTLED", 2)
    addresses = ["n1@example.com", "n2@example.com", "reject@example.com", "ok@example.com"]
    results = ses.send_bulk_email(**bulk(addresses))["BulkEmailEntryResults"]
    assert [r["Status"] for r in results] == [
        "ACCOUNT_THROTTLED",
        "ACCOUNT_THROTTLED",
        "MESSAGE_REJECTED",
        "SUCCESS",
    ]
    assert all("MessageId" not in r and r["Error"] for r in results[:3])
    assert [r["to"] for r in standin.sent()] == [["ok@example.com"]]
    with pytest.raises(ValueError, match="BulkEmailStatus"):
        standin.entry_status_next("TEMPLATE_DOES_NOT_EXIST")


def test_get_account(standin: SesStandin, ses: Any) -> None:
    ses.send_email(**simple())
    account = ses.get_account()
    quota = account["SendQuota"]
    assert quota["SentLast24Hours"] == 1.0
    assert quota["MaxSendRate"] > 0
    assert quota["Max24HourSend"] > 0
    assert account["SendingEnabled"] is True
    assert account["ProductionAccessEnabled"] is True


def test_unknown_operation_is_not_found(standin: SesStandin, ses: Any) -> None:
    with pytest.raises(ClientError) as info:
        ses.get_email_identity(EmailIdentity="example.com")
    assert info.value.response["Error"]["Code"] == "NotFoundException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _http(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(url, data=data, timeout=2) as resp:  # noqa: S310 - local http
        return json.loads(resp.read())


def test_control_endpoints(standin: SesStandin, ses: Any) -> None:
    _http(standin.url + "/_standin/config", {"inject": {"kind": "throttle", "count": 1}})
    with pytest.raises(ses.exceptions.TooManyRequestsException):
        ses.send_email(**simple())
    ses.send_email(Content={"Raw": {"Data": b"From: r@x\r\nTo: t@x\r\n\r\nhello"}})
    [rec] = _http(standin.url + "/_standin/sent")
    assert base64.b64decode(rec["raw"]).endswith(b"hello")
    stats = _http(standin.url + "/_standin/stats")
    assert (stats["calls"], stats["sent"], stats["faults"]) == ({"SendEmail": 2}, 1, 0)
    _http(standin.url + "/_standin/config", {"latency_ms": 150})
    assert standin.latency == pytest.approx(0.15)
    _http(standin.url + "/_standin/reset", {})
    assert _http(standin.url + "/_standin/sent") == []
    with pytest.raises(urllib.error.HTTPError) as info:
        _http(standin.url + "/_standin/config", {"inject": {"kind": "nope"}})
    assert info.value.code == 400


def test_keep_alive_reuses_one_connection(standin: SesStandin, ses: Any) -> None:
    standin.inject("throttle")
    standin.inject("server_error")
    for _ in range(22):
        with contextlib.suppress(ClientError):
            ses.send_email(**simple())
    assert standin.connections() == 1  # error answers keep the connection open too
    assert len(standin.sent()) == 20


def test_standalone_process_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "sesv2_standin.py"), "--port", "0", "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        make_client(url).send_email(**simple())
        assert _http(url + "/_standin/stats")["sent"] == 1
    finally:
        proc.terminate()
        assert proc.wait(5) == 0
