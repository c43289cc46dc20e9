"""`mailroom templates list | diff | push | pull | render`, in-process, against SES v2 over
real HTTP: the SES v2 stand-in answering the template operations from moto's server
(tests/sesv2_templates.py: moto has no SES v2 templates of its own), with its SigV4
signature check on, so the CLI's boto3 client is configured as the daemon's."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailroom.cli.commands import main
from sesv2_standin import SesStandin
from sesv2_templates import TemplateApi

SEED = Path(__file__).resolve().parent.parent / "templates"


@pytest.fixture(scope="module")
def ses(moto_url: str) -> Iterator[TemplateApi]:
    with SesStandin(credentials={"testing": "testing"}) as standin:
        api = TemplateApi(moto_url).install(standin)
        saved = dict(os.environ)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL_SESV2": standin.url,
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        for name in ("MAILROOM_TEMPLATES_DIR", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        try:
            yield api
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def tdir(tmp_path: Path, ses: TemplateApi) -> Path:
    ses.reset()
    directory = tmp_path / "templates"
    shutil.copytree(SEED, directory)
    return directory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def as_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_render_locally(capsys: pytest.CaptureFixture[str], tdir: Path) -> None:
    data = json.dumps({"login": "zoë", "secret": "TOKEN-123", "code": "00042"})
    code, doc = as_json(
        capsys, "templates", "render", "passwordrecoveryv1", "--dir", str(tdir), "--data", data
    )
    assert code == 0
    assert doc["source"] == "files"
    assert doc["subject"] == "Your password recovery code: 00042"
    assert "recover?token=TOKEN-123" in doc["text"]
    assert "Hello zoë," in doc["text"]
    assert "<strong>00042</strong>" in doc["html"]
    code, out, _ = run(
        capsys, "templates", "render", "activationv1", "--dir", str(tdir), "--part", "subject"
    )
    assert (code, out) == (0, "Activate your account, ann\n")  # example.json's data
    (tdir / "data.json").write_text('{"login": "bob", "secret": "s"}')
    code, out, _ = run(
        capsys,
        "templates",
        "render",
        "activationv1",
        "--dir",
        str(tdir),
        "--data",
        f"@{tdir / 'data.json'}",
    )
    assert code == 0
    assert "--- subject\nActivate your account, bob\n--- text\n" in out


def test_render_failures_in_the_users_words(capsys: pytest.CaptureFixture[str], tdir: Path) -> None:
    code, _, err = run(
        capsys,
        "templates",
        "render",
        "passwordrecoveryv1",
        "--dir",
        str(tdir),
        "--data",
        '{"login": "x", "secret": "y"}',
    )
    assert code == 1
    assert err == (
        "mailroom: render failed: passwordrecoveryv1 subject: Attribute 'code' is not present "
        "in the rendering data.\n"
    )
    for data, why in (("[1]", "must be a JSON object"), ("{", "not valid JSON")):
        code, _, err = run(
            capsys, "templates", "render", "activationv1", "--dir", str(tdir), "--data", data
        )
        assert code == 2
        assert why in err
        assert err.count("\n") == 1
    code, _, err = run(capsys, "templates", "render", "activationv1")
    assert (code, err) == (2, "mailroom: MAILROOM_TEMPLATES_DIR is not set (or give --dir)\n")
    code, _, err = run(capsys, "templates", "render", "../etc", "--dir", str(tdir))
    assert code == 2
    assert "is not a template name" in err
    (tdir / "activationv1" / "body.txt").write_text("{{#if login}}unclosed")
    code, _, err = run(capsys, "templates", "diff", "--dir", str(tdir))
    assert code == 2
    assert err == f"mailroom: {tdir}/activationv1/body.txt: line 1: '{{{{#if}}}}' is never closed\n"


def test_diff_push_pull_round_trip(
    capsys: pytest.CaptureFixture[str], tdir: Path, ses: TemplateApi, tmp_path: Path
) -> None:
    d = ["--dir", str(tdir)]
    code, doc = as_json(capsys, "templates", "diff", *d)
    assert code == 1
    assert doc["differs"] is True
    assert [(t["name"], t["action"]) for t in doc["templates"]] == [
        ("activationv1", "create"),
        ("passwordrecoveryv1", "create"),
    ]

    code, out, _ = run(capsys, "templates", "push", "--dry-run", *d)
    assert code == 0
    assert out == (
        "would create activationv1\nwould create passwordrecoveryv1\n"
        "2 template(s) would be pushed, 0 already up to date\n"
    )
    code, doc = as_json(capsys, "templates", "push", "--dry-run", *d)
    assert code == 0
    assert doc["created"] == ["activationv1", "passwordrecoveryv1"]
    assert ses.names() == []
    assert "CreateEmailTemplate" not in ses.calls

    code, out, _ = run(capsys, "templates", "push", *d)
    assert code == 0
    assert "created activationv1" in out
    assert ses.names() == ["activationv1", "passwordrecoveryv1"]
    assert ses.calls.count("CreateEmailTemplate") == 2

    code, out, _ = run(capsys, "templates", "diff", *d)
    assert code == 0
    assert "all 2 template(s) match SES" in out
    ses.calls.clear()
    code, doc = as_json(capsys, "templates", "push", *d)  # idempotent: nothing written
    assert code == 0
    assert doc["unchanged"] == ["activationv1", "passwordrecoveryv1"]
    assert not {"CreateEmailTemplate", "UpdateEmailTemplate"} & set(ses.calls)

    html = tdir / "activationv1" / "body.html"
    html.write_text(html.read_text().replace("Activate my account", "Activate it"))
    code, out, _ = run(capsys, "templates", "diff", *d)
    assert code == 1
    assert "differs  activationv1: html" in out
    assert "same     passwordrecoveryv1" in out
    assert '-  <p><a href="https://app.example.com/activate?token={{secret}}">Activate my' in out
    assert '+  <p><a href="https://app.example.com/activate?token={{secret}}">Activate it' in out
    code, out, _ = run(capsys, "templates", "push", "activationv1", *d)
    assert code == 0
    assert "updated activationv1 (html)" in out
    assert ses.calls.count("UpdateEmailTemplate") == 1
    assert run(capsys, "templates", "diff", *d)[0] == 0

    # a template made elsewhere (the AWS console, say) shows in list and comes back by pull
    ses.ses.create_template(
        Template={
            "TemplateName": "welcome",
            "SubjectPart": "Hi {{n}}",
            "TextPart": "t {{n}}\n",
            "HtmlPart": "<p>{{n}}</p>",
        }
    )
    code, doc = as_json(capsys, "templates", "list", *d)
    assert code == 0
    assert [(t["name"], t["ses"]) for t in doc["templates"]] == [
        ("activationv1", "same"),
        ("passwordrecoveryv1", "same"),
        ("welcome", "only in SES"),
    ]
    pulled = tmp_path / "pulled"
    code, doc = as_json(capsys, "templates", "pull", "--dir", str(pulled))
    assert code == 0
    assert doc["pulled"] == ["activationv1", "passwordrecoveryv1", "welcome"]
    for name in ("activationv1", "passwordrecoveryv1"):  # byte for byte what was pushed
        for part in ("subject.txt", "body.html", "body.txt"):
            assert (pulled / name / part).read_bytes() == (tdir / name / part).read_bytes()
    assert (pulled / "welcome" / "subject.txt").read_text() == "Hi {{n}}\n"
    assert run(capsys, "templates", "diff", "--dir", str(pulled))[0] == 0
    code, out, _ = run(capsys, "templates", "pull", "nosuch", "--dir", str(pulled))
    assert code == 1
    assert "not in SES: nosuch" in out


def test_render_remote_is_ses_rendering(capsys: pytest.CaptureFixture[str], tdir: Path) -> None:
    """--remote asks SES (here moto's renderer): for the seed templates, it and the local
    render agree part for part."""
    assert run(capsys, "templates", "push", "--dir", str(tdir))[0] == 0
    data = json.dumps({"login": "ann", "secret": "TOKEN", "code": "12345"})
    for name in ("activationv1", "passwordrecoveryv1"):
        code, there = as_json(capsys, "templates", "render", name, "--remote", "--data", data)
        assert code == 0
        assert there["source"] == "ses"
        code, here = as_json(
            capsys, "templates", "render", name, "--dir", str(tdir), "--data", data
        )
        for part in ("subject", "text", "html"):
            assert there[part].replace("\r\n", "\n").rstrip("\n") == here[part].rstrip("\n")
    code, _, err = run(capsys, "templates", "render", "activationv1", "--remote", "--data", "{}")
    assert code == 1
    assert "SES refused to render" in err
    assert "login" in err


def test_ses_unreachable_is_exit_3(
    capsys: pytest.CaptureFixture[str], tdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MAILROOM_SES_CONNECT_TIMEOUT", "500")
    code, _, err = run(capsys, "templates", "diff", "--dir", str(tdir))
    assert code == 3
    assert err.startswith("mailroom: SES: GetEmailTemplate failed: ")
    assert err.count("\n") == 1


def test_check_ses_reports_templates_that_differ_from_the_files(
    capsys: pytest.CaptureFixture[str], tdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILROOM_TEMPLATES_DIR", str(tdir))
    monkeypatch.delenv("MAILROOM_DATABASE_URL", raising=False)

    def findings() -> dict[str, tuple[str, str]]:
        _, doc = as_json(capsys, "check", "--ses")
        return {
            f["check"]: (f["status"], f["detail"])
            for f in doc["findings"]
            if f["check"].startswith("template_files")
        }

    before = findings()
    assert before["template_files:activationv1"] == (
        "fail",
        f"template activationv1 is in {tdir} but not in SES",
    )
    assert before["template_files:passwordrecoveryv1"][0] == "fail"
    assert run(capsys, "templates", "push")[0] == 0  # MAILROOM_TEMPLATES_DIR, no --dir
    assert findings() == {
        "template_files": ("pass", f"SES holds the 2 template(s) of {tdir} as they are")
    }
    (tdir / "passwordrecoveryv1" / "subject.txt").write_text("Code {{code}}\n")
    assert findings() == {
        "template_files:passwordrecoveryv1": (
            "warn",
            "template passwordrecoveryv1 in SES differs from the files (subject)",
        )
    }
    _, out, _ = run(capsys, "check", "--ses")
    assert "WARN  template_files:passwordrecoveryv1: template passwordrecoveryv1 in SES " in out


def test_hostile_files_and_names_are_refused(
    capsys: pytest.CaptureFixture[str], tdir: Path, ses: TemplateApi, tmp_path: Path
) -> None:
    d = ["--dir", str(tdir)]
    (tdir / "activationv1" / "subject.txt").write_text("two\nlines\n")
    code, _, err = run(capsys, "templates", "render", "activationv1", *d)
    assert (code, err) == (2, f"mailroom: {tdir}/activationv1/subject.txt: a subject is one line\n")
    (tdir / "activationv1" / "subject.txt").write_text("ok\n")
    (tdir / "activationv1" / "body.txt").write_bytes(b"\xff\xfe not utf-8")
    code, _, err = run(capsys, "templates", "render", "activationv1", *d)
    assert code == 2
    assert "body.txt: not UTF-8" in err
    deep = '{"a": ' + "[" * 100 + "]" * 100 + "}"
    code, _, err = run(capsys, "templates", "render", "passwordrecoveryv1", *d, "--data", deep)
    assert (code, err) == (2, "mailroom: --data: template data nested deeper than 64\n")
    # a name SES (here moto) hands back must not write outside the directory
    ses.ses.create_template(
        Template={"TemplateName": "../escape", "SubjectPart": "s", "TextPart": "t"}
    )
    target = tmp_path / "pulled"
    code, _, err = run(capsys, "templates", "pull", "--dir", str(target))
    assert code == 2
    assert "'../escape' is not a template name" in err
    assert not (tmp_path / "escape").exists()


def test_no_region_is_a_configuration_problem(
    capsys: pytest.CaptureFixture[str], tdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    code, _, err = run(capsys, "templates", "push", "--dir", str(tdir))
    assert (code, err) == (
        2,
        "mailroom: no AWS region: set AWS_REGION or AWS_DEFAULT_REGION (or a profile's region)\n",
    )


def test_list_follows_every_page_and_stops_on_a_looping_server(
    ses: TemplateApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailroom.config.settings import load  # noqa: PLC0415
    from mailroom.daemon.preflight import client  # noqa: PLC0415
    from mailroom.templates import remote  # noqa: PLC0415

    ses.reset()
    for n in range(5):
        ses.ses.create_template(
            Template={"TemplateName": f"t{n}", "SubjectPart": "s", "TextPart": "x"}
        )
    monkeypatch.setattr(remote, "PAGE_SIZE", 2)
    assert remote.list_names(client(load(require_database=False))) == [f"t{n}" for n in range(5)]
    assert ses.calls.count("ListEmailTemplates") == 3  # pages of 2, 2 and 1

    class Looping:  # a peer that hands back the same token for ever
        calls = 0

        def list_email_templates(self, **_: Any) -> dict[str, Any]:
            self.calls += 1
            return {"TemplatesMetadata": [{"TemplateName": "a"}], "NextToken": "again"}

    looping = Looping()
    monkeypatch.setattr(remote, "MAX_PAGES", 50)
    with pytest.raises(remote.RemoteError, match="TooManyPages: still paging after 50 pages"):
        remote.list_names(looping)
    assert looping.calls == 50
