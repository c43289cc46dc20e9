"""Debug mode (the file transport) writes each message beside its request as an .eml that
the standard library's email parser reads back: templated messages rendered from the
local templates, simple ones as they are; one that cannot be rendered is still written as
JSON, which says why it has no .eml."""

from __future__ import annotations

import json
from email import policy
from email.parser import BytesParser
from pathlib import Path

import anyio

from mailroom.transports import Defaults
from mailroom.transports.classify import Verdict
from mailroom.transports.file import FileTransport
from test_smtp_transport import SEED, message


def test_eml_beside_each_request(tmp_path: Path) -> None:
    out = tmp_path / "out"
    t = FileTransport(Defaults("noreply@example.com", "default"), out, SEED)
    data = json.dumps({"login": "ann", "secret": "TOKEN-1"})
    bulk = [
        message(id=1, template="activationv1", template_data=data, cc=["c@example.com"]),
        message(id=2, template="activationv1", template_data='{"login": "bob"}'),
    ]
    results = anyio.run(t.send_bulk, bulk)
    assert [r.verdict for r in results] == [Verdict.SENT, Verdict.SENT]  # debug sends all
    simple = message(id=3, subject="Héllo", body_text="plain ✓", body_html="<p>h</p>")
    assert anyio.run(t.send_one, simple).verdict is Verdict.SENT

    (bulk_json,) = out.glob("*-SendBulkEmail-1.json")
    document = json.loads(bulk_json.read_text())
    stem = bulk_json.name.removesuffix(".json")
    assert document["emails"] == [
        {"outbox_id": 1, "file": f"{stem}-1.eml"},
        {
            "outbox_id": 2,
            "error": "RenderingFailure: activationv1 html: Attribute 'secret' "
            "is not present in the rendering data.",
        },
    ]
    assert not (out / f"{stem}-2.eml").exists()

    mail = BytesParser(policy=policy.default).parsebytes((out / f"{stem}-1.eml").read_bytes())
    assert mail.get_content_type() == "multipart/alternative"
    assert mail["Subject"] == "Activate your account, ann"
    assert mail["From"] == "noreply@example.com"
    assert mail["Cc"] == "c@example.com"
    assert "activate?token=TOKEN-1" in mail.get_body(("plain",)).get_content()
    assert 'activate?token=TOKEN-1"' in mail.get_body(("html",)).get_content()

    (eml,) = out.glob("*-SendEmail-3-3.eml")
    mail = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    assert mail["Subject"] == "Héllo"
    assert mail.get_body(("plain",)).get_content().strip() == "plain ✓"
    assert not list(out.glob("*.tmp"))


def test_without_templates_dir_the_request_is_still_written(tmp_path: Path) -> None:
    t = FileTransport(Defaults("noreply@example.com", None), tmp_path, None)
    m = message(id=5, template="activationv1", template_data="{}")
    assert anyio.run(t.send_bulk, [m])[0].verdict is Verdict.SENT
    (written,) = tmp_path.glob("*.json")
    (entry,) = json.loads(written.read_text())["emails"]
    assert entry["error"].startswith("TemplateDoesNotExist: MAILROOM_TEMPLATES_DIR is not set")
    assert not list(tmp_path.glob("*.eml"))


def test_a_header_the_email_package_refuses_is_that_messages_problem(tmp_path: Path) -> None:
    t = FileTransport(Defaults("noreply@example.com", None), tmp_path, SEED)
    data = json.dumps({"login": "ann", "secret": "s"})
    bad = message(
        id=8,
        template="activationv1",
        template_data=data,
        to=["ann@example.com\r\nBcc: spy@example.com"],
    )
    good = message(id=9, template="activationv1", template_data=data)
    results = anyio.run(t.send_bulk, [bad, good])
    assert [r.verdict for r in results] == [Verdict.SENT, Verdict.SENT]
    (written,) = tmp_path.glob("*.json")
    bad_entry, good_entry = json.loads(written.read_text())["emails"]
    assert bad_entry == {
        "outbox_id": 8,
        "error": "MessageRejected: cannot build the email: ValueError",
    }
    assert "file" in good_entry
    (eml,) = tmp_path.glob("*.eml")
    assert b"spy@" not in eml.read_bytes()
