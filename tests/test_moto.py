"""SendEmail (simple and raw) against moto in server mode: a second, independent SES
implementation over real HTTP, checking that our requests are what SES accepts."""

from __future__ import annotations

import json
import urllib.request
from email.message import EmailMessage
from typing import Any

import boto3
import psycopg

import mailroom
from conftest import all_final, wait_for


def _moto_messages(url: str) -> dict[str, list[dict[str, Any]]]:
    with urllib.request.urlopen(f"{url}/moto-api/data.json") as response:  # noqa: S310 -- local
        data = json.load(response)["ses"]
    return {"simple": data["Message"], "raw": data["RawMessage"]}


def test_simple_and_raw_messages_through_moto(
    conn: psycopg.Connection[Any], moto_url: str, spawn: Any
) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))  # noqa: S310
    boto3.client(
        "ses", endpoint_url=moto_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).verify_email_identity(EmailAddress="sender@example.com")  # fmt: skip
    raw = EmailMessage()
    raw["From"] = "sender@example.com"
    raw["To"] = "raw@example.com"
    raw["Subject"] = "raw subject"
    raw.set_content("raw body")
    simple = mailroom.enqueue(conn, "simple@example.com", subject="Hello", text="plain",
                              html="<p>html</p>", from_address="sender@example.com")  # fmt: skip
    raw_id = mailroom.enqueue(conn, "raw@example.com", raw=raw.as_bytes(),
                              from_address="sender@example.com")  # fmt: skip
    unverified = mailroom.enqueue(conn, "x@example.com", subject="S", text="t",
                                  from_address="stranger@example.com")  # fmt: skip
    spawn(AWS_ENDPOINT_URL_SESV2=moto_url)
    wait_for(lambda: all_final(conn, 3))

    rows = {
        row_id: (status, provider_id, error)
        for row_id, status, provider_id, error in conn.execute(
            "SELECT id, status, provider_message_id, last_error FROM mailroom.outbox"
        ).fetchall()
    }
    messages = _moto_messages(moto_url)
    assert [m["id"] for m in messages["simple"]] == [rows[simple][1]]
    assert messages["simple"][0]["subject"] == "Hello"
    assert messages["simple"][0]["destinations"]["ToAddresses"] == ["simple@example.com"]
    assert [m["id"] for m in messages["raw"]] == [rows[raw_id][1]]
    assert "raw subject" in messages["raw"][0]["raw_data"]
    # moto, like SES, rejects an unverified sender: a permanent error, dead at once
    status, _, error = rows[unverified]
    assert status == "dead"
    assert error.startswith("MessageRejected")
