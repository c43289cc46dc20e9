"""A command line that is the same everywhere (issue 22, "What to build" 3), tested by a
walk of the parser so that a new command cannot forget it: --json on every command that
prints, --dsn before or after every command name (against a real database, and a bad DSN
answered the same one line either way without its password), --queue acted on, a filter
or refused, hostile values answered in one line naming the option, --help with a
description, examples that parse and exit codes. Also: `config --json`, `show` masking
the subject as the console does, and debug-mode sends recorded without an SES-like id."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import mailroom
from conftest import all_final, wait_for
from mailroom.cli import check
from mailroom.cli import commands as cli
from mailroom.config import variables
from mailroom.operator import content
from test_admin import mailroom_cli

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = str(ROOT / "templates")  # the seed templates the repository ships

KEY = "ab" * 32
DSN = "postgresql://oncall:hunter2-secret@db.internal:5432/app"
PYTHON_WORDS = ("invalid float value", "invalid int value", "could not convert", "Traceback")


def test_config_json_prints_every_setting_with_secrets_redacted() -> None:
    result = mailroom_cli("config", "--json", env={
        "MAILROOM_DATABASE_URL": DSN, "MAILROOM_SECRET_KEY": KEY,
        "MAILROOM_RETENTION_EVENTS": "90d", "MAILROOM_DEBUG": "yes",
    })  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == [s.variable for s in variables.SETTINGS]
    assert document["MAILROOM_DATABASE_URL"] == "postgresql://oncall:***@db.internal:5432/app"
    assert document["MAILROOM_SECRET_KEY"] == "(set: 1 key(s))"
    assert document["MAILROOM_RETENTION_EVENTS"] == str(90 * 86400 * 1000)
    assert document["MAILROOM_DEBUG"] == "true"
    assert "hunter2" not in result.stdout
    assert KEY not in result.stdout
    # the same values as the table
    table = mailroom_cli("config", env={"MAILROOM_DATABASE_URL": DSN}).stdout
    first = table.splitlines()[0].split(None, 1)
    assert first == ["MAILROOM_DATABASE_URL", document["MAILROOM_DATABASE_URL"]]


def test_config_json_with_bad_settings_exits_2_one_line_each() -> None:
    result = mailroom_cli("config", "--json", env={
        "MAILROOM_DATABASE_URL": DSN, "MAILROOM_RETENTION_EVENTS": "1h",
        "MAILROOM_BATCH_LIMIT": "x",
    })  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert any(line.startswith("mailroom: MAILROOM_RETENTION_EVENTS: ") for line in lines)
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("value", ["abc", "-1", "0", "nan", "inf", "", "1e999"])
def test_send_test_timeout_is_refused_in_the_operators_words(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILROOM_DATABASE_URL", DSN)
    argv = ["send-test", "--to", "a@example.com", "--wait", "--timeout", value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"argument --timeout: must be a number of seconds above 0 and at most 86400, got {value!r}"
        in err
    )
    assert not any(words in err for words in PYTHON_WORDS)


def test_send_test_timeout_takes_fractions() -> None:
    # parsed, then the database is unreachable (exit 3): the value itself was accepted
    unreachable = {"MAILROOM_DATABASE_URL": "postgresql://x@127.0.0.1:1/db"}
    result = mailroom_cli("send-test", "--to", "a@example.com", "--timeout", "0.5", env=unreachable)
    assert result.returncode == 3, result.stderr
    assert "cannot reach the database" in result.stderr


@pytest.mark.parametrize("value", ["abc", "-5", "0", "1.5", ""])
def test_token_sign_ttl_is_refused_in_the_operators_words(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILROOM_SECRET_KEY", KEY)
    assert cli.main(["token", "sign", "--action", "activation", "--v1", "--ttl", value]) == 2
    err = capsys.readouterr().err
    assert f"argument --ttl: must be a whole number from 1 to 2147483647, got {value!r}" in err
    assert not any(words in err for words in PYTHON_WORDS)


def test_token_sign_ttl_binds_the_expiry() -> None:
    result = mailroom_cli("token", "sign", "--action", "activation", "--v1", "--ttl", "60",
                          env={"MAILROOM_SECRET_KEY": KEY})  # fmt: skip
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    verified = mailroom_cli("token", "verify", token, "--action", "activation",
                            env={"MAILROOM_SECRET_KEY": KEY})  # fmt: skip
    assert verified.stdout.startswith("valid"), verified.stdout


# -- every command, by a walk of the parser (issue 22, "What to build" 3) ---------------------


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Any]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from _walk(child, (*path, name))


PARSERS = dict(_walk(cli.parser()))
GROUPS = {path for path in PARSERS if any(p[: len(path)] == path and p != path for p in PARSERS)}
LEAVES = sorted(set(PARSERS) - GROUPS)
# Commands that print nothing but their log: they run until stopped, and their log is
# JSON lines with MAILROOM_LOG_FORMAT=json. The test fails when one of them is gone too.
NO_JSON = {("run",): "the daemon: only its log",
           ("web",): "the console: one 'serving' line, then its log"}  # fmt: skip


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings}


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_walk_sees_every_command() -> None:
    names = {_name(p) for p in LEAVES}
    assert {"run", "migrate", "status", "dead retry", "suppression import", "queue pause",
            "token sign", "web", "send-now"} <= names  # fmt: skip
    assert {("dead",), ("suppression",), ("queue",), ("token",)} <= GROUPS


@pytest.mark.parametrize("path", LEAVES, ids=_name)
def test_every_command_that_prints_takes_json(path: tuple[str, ...]) -> None:
    has_json = "--json" in _options(PARSERS[path])
    assert has_json != (path in NO_JSON), f"mailroom {_name(path)}: --json missing (or listed)"


@pytest.mark.parametrize("path", sorted(PARSERS), ids=_name)
def test_every_command_has_a_description_examples_and_exit_codes(path: tuple[str, ...]) -> None:
    parser = PARSERS[path]
    assert parser.formatter_class is argparse.RawDescriptionHelpFormatter
    assert len(parser.description or "") > 40, parser.description
    text = parser.format_help()
    assert "\nexamples:\n" in text
    assert "\nexit codes: 0 " in text
    assert f"mailroom {_name(path)}" in text.split("examples:")[1]  # an example of itself
    assert "--dsn URL" in text  # after the command name too


def _examples(text: str) -> list[list[str]]:
    """The `mailroom ...` command lines of a help epilog or a docs block: continuation lines
    joined, leading VAR=value dropped, cut at a comment (3 spaces), a pipe or a redirection."""
    found = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = re.split(r"\s{3,}| \| | [12]?> ", raw.strip().removeprefix("$ "))[0]
        words = shlex.split(line) if line else []
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        if words[:1] == ["mailroom"]:
            found.append(words[1:])
    return found


def _parses(words: list[str]) -> None:
    try:
        cli.parser().parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"`mailroom {shlex.join(words)}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("path", sorted(PARSERS), ids=_name)
def test_the_help_examples_parse(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    examples = _examples(PARSERS[path].epilog or "")
    assert examples
    for words in examples:
        _parses(words)


def test_docs_cli_md_shows_every_command_and_its_examples_parse() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [_name(p) for p in LEAVES if f"mailroom {_name(p)}" not in text]
    assert not missing, f"docs/cli.md does not show: {missing}"
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    examples = [words for block in blocks for words in _examples(block)]
    assert len(examples) >= 20
    for words in examples:
        _parses([w if w not in ("ID", "TOKEN") else "1" for w in words])


# -- hostile values for every option that takes a number, a duration, a name or a choice ------

HOSTILE = ["nan", "inf", "-1", "1e99", "", "ünï©ødé ✉", "\x1b[2J\x1b[31mred\nline", "9" * 10240]
PYTHON_WORDING = ("invalid float value", "invalid int value", "invalid literal",
                  "could not convert", "Traceback", "invalid positive value",
                  "invalid when value")  # fmt: skip
TYPED = [
    (path, action)
    for path in LEAVES
    for action in PARSERS[path]._actions
    if (action.type is not None or action.choices) and action.nargs != 0
    and not isinstance(action, argparse._SubParsersAction)
]  # fmt: skip


def _accepts(action: argparse.Action, value: str) -> bool:
    try:
        converted = action.type(value) if callable(action.type) else value
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return not action.choices or converted in action.choices


def _base(path: tuple[str, ...]) -> list[str]:
    """The command with what it requires, valid: the hostile value is appended (argparse
    keeps the last), or replaces the positional."""
    return [*path, *SAMPLES.get(path, NO_SAMPLE).base]


@pytest.mark.parametrize(("path", "action"), TYPED,
                         ids=lambda v: _name(v) if isinstance(v, tuple) else v.dest)  # fmt: skip
def test_a_hostile_value_is_one_line_naming_the_option(
    path: tuple[str, ...], action: argparse.Action, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MAILROOM_DATABASE_URL", UNREACHABLE)  # nothing may get that far
    named = action.option_strings[0] if action.option_strings else action.metavar or action.dest
    refused = [v for v in HOSTILE if not _accepts(action, v)]
    assert refused, "no hostile value is refused"
    for value in refused:
        base = _base(path)
        if action.option_strings:
            argv = [*base, action.option_strings[0], value]
        else:  # a positional: it replaces the sample's own
            argv = [*path, value, *_base(path)[len(path) + 1 :]]
        assert cli.main(argv) == 2, (argv[:6], capsys.readouterr())
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, lines
        assert f"argument {named}" in lines[0], lines
        assert len(lines[0]) < 600
        assert "\x1b" not in err
        assert not any(words in err for words in PYTHON_WORDING), err


# -- every command against a real database, --dsn before or after its name --------------------


@dataclass(frozen=True)
class Sample:
    base: list[str]  # parses and needs nothing (ids are 1)
    real: list[str] | None = None  # against the test database ({pending}, {dead}, ...)
    code: int = 0  # its exit code there
    role: str = "operator"  # or "owner" (of the schema)


SAMPLES: dict[tuple[str, ...], Sample] = {
    ("run",): Sample([], code=3),  # against a database not migrated: it must say so
    ("config",): Sample([], role="owner"),
    ("migrate",): Sample([], role="owner"),
    ("demo",): Sample(["--output", "/nonexistent/c22"]),  # not run here: tests/test_cli.py
    ("check",): Sample(["--schema"], role="owner"),
    ("token", "verify"): Sample(["TOKEN", "--action", "activation"], code=1),
    ("token", "sign"): Sample(["--action", "activation", "--secret", "00" * 32]),
    ("status",): Sample([]),
    ("queues",): Sample([]),
    ("stats",): Sample([]),
    ("show",): Sample(["1"], ["{pending}"]),
    ("send-test",): Sample(["--to", "c22-test@example.com"]),
    ("find",): Sample([]),
    ("dead", "list"): Sample([]),
    ("dead", "retry"): Sample(["1", "--dry-run"], ["{dead}", "--dry-run"]),
    ("dead", "purge"): Sample(["1", "--dry-run"], ["{dead}", "--dry-run"]),
    ("cancel",): Sample(
        ["1", "--reason", "r", "--dry-run"], ["{pending}", "--reason", "r", "--dry-run"]
    ),
    ("send-now",): Sample(["1", "--dry-run"], ["{retrying}", "--dry-run"]),
    ("suppression", "list"): Sample([]),
    ("suppression", "add"): Sample(["c22-added@example.com"]),
    ("suppression", "remove"): Sample(["c22-never@example.com"], code=1),
    ("suppression", "import"): Sample([], code=1),  # no AWS region here: SES is not called
    ("queue", "pause"): Sample(["c22-paused"]),
    ("queue", "resume"): Sample(["c22-paused"]),
    ("web",): Sample(["--port", "0"], code=3),  # see test_web_takes_dsn_either_way
    ("templates", "list"): Sample(["--local", "--dir", TEMPLATES]),
    ("templates", "render"): Sample(["activationv1", "--dir", TEMPLATES]),
    # these ask SES; with no AWS region here they stop at it: tests/test_templates_cli.py
    # runs them against SES v2 over HTTP
    ("templates", "diff"): Sample(["--dir", TEMPLATES], code=2),
    ("templates", "push"): Sample(["--dir", TEMPLATES, "--dry-run"], code=2),
    ("templates", "pull"): Sample(["activationv1", "--dir", TEMPLATES], code=2),
}
SES_ONLY = {("templates", "diff"), ("templates", "push"), ("templates", "pull")}
NO_DATABASE = (
    {("config",), ("token", "verify"), ("token", "sign"), ("demo",)}
    | SES_ONLY
    | {("templates", "list"), ("templates", "render")}
)
UNREACHABLE = "postgresql://oncall:hunter2-secret@127.0.0.1:1/none"


NO_SAMPLE = Sample([])


def test_every_command_has_a_sample() -> None:
    # a new command: add how to run it above (the tests below leave it out until then)
    assert sorted(SAMPLES) == LEAVES


@dataclass(frozen=True)
class World:
    owner: str
    operator: str
    unmigrated: str
    ids: dict[str, int]


def _create(admin: psycopg.Connection[Any], name: str, template: str | None = None) -> None:
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    admin.execute(create)


@pytest.fixture(scope="module")
def world(pg_admin_dsn: str, template_db: str) -> Iterator[World]:
    """One database for the module (the commands run against it only read, or undo what
    they do), an operator login, and an empty database for `run`."""
    suffix = uuid.uuid4().hex[:10]
    name, empty, role = f"c22_{suffix}", f"c22_empty_{suffix}", f"c22_op_{suffix}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        _create(admin, name, template_db)
        _create(admin, empty)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE mailroom_operator").format(
            sql.Identifier(role)))  # fmt: skip
    owner = make_conninfo(pg_admin_dsn, dbname=name)
    with psycopg.connect(owner, autocommit=True) as conn:
        ids = {
            key: mailroom.enqueue(conn, f"{key}@example.com", subject="s", text="t", queue=queue)
            for key, queue in (("pending", "user_action_queue"), ("dead", "user_action_queue"),
                               ("retrying", "user_action_queue"), ("bulk_dead", "bulk"),
                               ("bulk_pending", "bulk"))
        }  # fmt: skip
        for key in ("dead", "bulk_dead"):
            conn.execute("UPDATE mailroom.outbox SET status = 'dead', attempts = 3, last_error = "
                         "'MessageRejected' WHERE id = %s", (ids[key],))  # fmt: skip
        conn.execute("UPDATE mailroom.outbox SET status = 'retrying', attempts = 1, "
                     "next_attempt_at = now() + interval '1 hour' WHERE id = %s",
                     (ids["retrying"],))  # fmt: skip
    yield World(owner, make_conninfo(owner, user=role), make_conninfo(owner, dbname=empty), ids)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        admin.execute(_drop_database(name))
        admin.execute(_drop_database(empty))
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _drop_database(name: str) -> sql.Composed:
    return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("MAILROOM_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILROOM_SECRET_KEY", KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential lookups
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("MAILROOM_HTTP_PORT", "0")
    return monkeypatch


def _positions(path: tuple[str, ...], rest: list[str], dsn: str) -> dict[str, list[str]]:
    """The same command with --dsn before its name, after it, and between a group's name
    and its action."""
    found = {"before": ["--dsn", dsn, *path, *rest], "after": [*path, *rest, "--dsn", dsn]}
    if len(path) > 1:
        found["between"] = [path[0], "--dsn", dsn, *path[1:], *rest]
    return found


def _in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _process(argv: list[str]) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    env.update(MAILROOM_DEBUG="true", MAILROOM_SES_OUTPUT_PATH="/nonexistent/c22-out",
               MAILROOM_HTTP_PORT="0", MAILROOM_LOG_FORMAT="console")  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mailroom", *argv], env=env, timeout=60,
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


RUNNABLE = [p for p in LEAVES if p in SAMPLES and p not in {("demo",), ("web",)}]


@pytest.mark.parametrize("path", RUNNABLE, ids=_name)
def test_every_command_works_with_dsn_before_or_after_its_name(
    path: tuple[str, ...], world: World, quiet_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    sample = SAMPLES[path]
    rest = [a.format(**world.ids) for a in (sample.real or sample.base)]
    rest += [] if path in NO_JSON else ["--json"]
    dsn = {"owner": world.owner, "operator": world.operator}[sample.role]
    if path == ("run",):
        results = {
            w: _process(argv) for w, argv in _positions(path, rest, world.unmigrated).items()
        }
    else:
        results = {w: _in_process(argv, capsys) for w, argv in _positions(path, rest, dsn).items()}
    shapes = set()
    for where, (code, out, err) in results.items():
        assert code == sample.code, (where, out, err)
        if path == ("run",):
            assert "mailroom migrate" in err, err  # it reached the database the DSN names
            continue
        document = json.loads(out) if out.strip() else None  # one JSON document, or nothing
        shapes.add(json.dumps(_shape(document)))
    assert len(shapes) <= 1, shapes  # the same answer wherever --dsn stands


def _shape(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _shape(v) for k, v in document.items() if k not in ("generated_at",)}
    if isinstance(document, list):  # how many rows: whatever the command found
        return "list"
    return type(document).__name__


@pytest.mark.parametrize("path", [p for p in LEAVES if p in SAMPLES and p != ("demo",)],
                         ids=_name)  # fmt: skip
def test_a_bad_dsn_is_the_same_one_line_either_way_without_the_password(
    path: tuple[str, ...], quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rest = SAMPLES[path].base
    runs = _positions(path, rest, UNREACHABLE)
    if path == ("run",):
        results = {w: _process(argv) for w, argv in runs.items()}
    else:
        results = {w: _in_process(argv, capsys) for w, argv in runs.items()}
    assert len(set(results.values())) == 1, results  # exit code, stdout and stderr alike
    code, out, err = results["after"]
    assert "hunter2" not in out + err
    if path in SES_ONLY:
        assert code == 2, err
        assert "no AWS region" in err, err
    elif path in NO_DATABASE:
        assert code in (0, 1), err
    else:
        assert code == 3, err
        assert err.count("\n") == 1, err
        assert err.startswith("mailroom: cannot reach the database: "), err


def test_web_takes_dsn_either_way_and_blames_its_options(
    world: World, quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a loopback port that is taken: the console connects (the DSN is used) and then
    # cannot bind; with a bad DSN it stops at the database
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        runs = _positions(("web",), ["--port", port], world.operator)
        results = {w: _in_process(argv, capsys) for w, argv in runs.items()}
    assert len(set(results.values())) == 1, results
    code, _out, err = results["after"]
    assert code == 2
    assert err.startswith(f"mailroom: --port: cannot listen on 127.0.0.1:{port}: "), err
    assert err.count("\n") == 1
    quiet_env.setenv("MAILROOM_DATABASE_URL", world.operator)
    for value, blamed in (("99999", "argument --port"), ("abc", "argument --port")):
        code, _, err = _in_process(["web", "--port", value], capsys)
        assert (code, err.count("\n")) == (2, 1), err
        assert blamed in err
        assert "MAILROOM_WEB_PORT" not in err
    code, _, err = _in_process(["web", "--host", "0.0.0.0"], capsys)  # noqa: S104 -- refused
    assert code == 2
    assert err.startswith("mailroom: --host: 0.0.0.0 is not a loopback address"), err
    quiet_env.setenv("MAILROOM_WEB_HOST", "0.0.0.0")  # noqa: S104 -- refused
    code, _, err = _in_process(["web"], capsys)
    assert code == 2
    assert err.startswith("mailroom: MAILROOM_WEB_HOST: 0.0.0.0 is not a loopback"), err


# -- --queue: acted on, a filter, or refused -------------------------------------------------


def _json(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 0) -> Any:
    got, out, err = _in_process(argv, capsys)
    assert got == code, err
    return json.loads(out)


def test_queue_is_acted_on_filtered_by_or_refused(
    world: World, quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_env.setenv("MAILROOM_DATABASE_URL", world.operator)
    ids = world.ids
    # find, queues and stats cover every queue unless --queue is given
    every = {m["id"] for m in _json(["find", "--json"], capsys)["messages"]}
    assert {ids["pending"], ids["bulk_pending"]} <= every
    bulk = {m["id"] for m in _json(["find", "--queue", "bulk", "--json"], capsys)["messages"]}
    assert bulk == {ids["bulk_pending"], ids["bulk_dead"]}
    assert {q["queue"] for q in _json(["queues", "--json"], capsys)} >= {
        "bulk",
        "user_action_queue",
    }
    assert [q["queue"] for q in _json(["queues", "--queue", "bulk", "--json"], capsys)] == ["bulk"]
    assert _json(["queues", "--queue", "nowhere", "--json"], capsys) == []
    for path in (("find",), ("queues",), ("stats",)):
        assert "default: every queue" in _options(PARSERS[path])["--queue"].help
    # status, send-test and dead act on one queue, MAILROOM_QUEUE_NAME unless --queue
    assert _json(["status", "--json"], capsys)["queue"] == "user_action_queue"
    assert _json(["status", "--queue", "bulk", "--json"], capsys)["queue"] == "bulk"
    dead = _json(["dead", "list", "--queue", "bulk", "--json"], capsys)
    assert [m["id"] for m in dead["messages"]] == [ids["bulk_dead"]]
    assert [m["id"] for m in _json(["dead", "list", "--json"], capsys)["messages"]] == [ids["dead"]]
    sent = _json(["send-test", "--to", "q@example.com", "--queue", "bulk", "--json"], capsys)
    with psycopg.connect(world.owner) as conn:
        row = conn.execute("SELECT queue FROM mailroom.outbox WHERE id = %s", (sent["id"],))
        assert row.fetchone() == ("bulk",)
        conn.execute("DELETE FROM mailroom.outbox WHERE id = %s", (sent["id"],))
    # a command given message ids, or acting on addresses, refuses it: exit 2, one line
    refusing = [p for p in LEAVES if "--queue" in _options(PARSERS[p])
                and _options(PARSERS[p])["--queue"].help == argparse.SUPPRESS]  # fmt: skip
    assert {("show",), ("cancel",), ("send-now",), ("suppression", "add")} <= set(refusing)
    for path in refusing:
        code, out, err = _in_process([*_base(path), "--queue", "bulk"], capsys)
        assert (code, out, err.count("\n")) == (2, "", 1), err
        assert "--queue does not apply: " in err


# -- --json documents of the commands that act -------------------------------------------------


def test_acting_commands_print_one_json_document(
    world: World, quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_env.setenv("MAILROOM_DATABASE_URL", world.operator)
    with psycopg.connect(world.owner, autocommit=True) as conn:
        target = mailroom.enqueue(conn, "act@example.com", subject="s", text="t", queue="c22act")
        dead = mailroom.enqueue(conn, "gone@example.com", subject="s", text="t", queue="c22act")
        conn.execute("UPDATE mailroom.outbox SET status = 'dead' WHERE id = %s", (dead,))
        dry = _json(["cancel", str(target), "--reason", "test", "--dry-run", "--json"], capsys)
        assert dry == {"dry_run": True, "ids": [target], "cancelled": [], "left_alone": []}
        done = _json(["cancel", str(target), "--reason", "test", "--json"], capsys)
        assert done == {"dry_run": False, "ids": [target], "cancelled": [target],
                        "left_alone": []}  # fmt: skip
        # refused: the error on stderr, nothing on stdout, exit 1 as before
        code, out, err = _in_process(["send-now", str(target), "--json"], capsys)
        assert (code, out) == (1, "")
        assert "nothing changed" in err
        selection = ["dead", "retry", "--queue", "c22act", "--all", "--yes", "--json"]
        assert _json([*selection[:-2], "--dry-run", "--json"], capsys) == {
            "dry_run": True, "matched": 1, "skipped_token_emails": 0, "would_retry": 1,
            "retried": 0, "left_alone": 0}  # fmt: skip
        assert _json(selection, capsys)["retried"] == 1
        conn.execute("UPDATE mailroom.outbox SET status = 'dead' WHERE id = %s", (dead,))
        purge = ["dead", "purge", str(dead), "--yes", "--json"]
        assert _json([*purge, "--dry-run"], capsys) == {
            "dry_run": True, "matched": 1, "deleted": 0, "declined": False}  # fmt: skip
        assert _json(purge, capsys)["deleted"] == 1
        sent = _json(
            [
                "send-test",
                "--to",
                "w@example.com",
                "--queue",
                "c22act",
                "--wait",
                "--timeout",
                "0.3",
                "--json",
            ],
            capsys,
            code=1,
        )  # no daemon: times out
        assert (sent["status"], sent["timed_out"], sent["waited"]) == ("pending", True, True)
        conn.execute("DELETE FROM mailroom.outbox WHERE queue = 'c22act'")
    assert _json(["migrate", "--dsn", world.owner, "--json"], capsys) == {
        "applied": [], "unowned_accounts": 0}  # fmt: skip


def test_check_json_reads_the_endpoint_or_says_why_not() -> None:
    ok = check.health_document(True, "/readyz", '{"database": "ok"}')
    assert ok == {"ok": True, "endpoint": "/readyz", "checks": {"database": "ok"}, "error": None}
    down = check.health_document(False, "/readyz", "cannot reach http://127.0.0.1:1/readyz: ...")
    assert down["ok"] is False
    assert down["checks"] is None
    assert down["error"].startswith("cannot reach")


def test_token_commands_print_json(
    quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = _json(["token", "sign", "--action", "activation", "--v1", "--json"], capsys)
    assert signed["action"] == "activation"
    assert signed["expires_at"] > 0
    verified = _json(["token", "verify", signed["token"], "--action", "activation", "--json"],
                     capsys)  # fmt: skip
    assert verified == {"valid": True, "reason": None, "key": 1, "keys": 1}
    wrong = _json(["token", "verify", signed["token"], "--action", "password_recovery",
                   "--code", "12345", "--json"], capsys, code=1)  # fmt: skip
    assert wrong["valid"] is False
    assert wrong["reason"]


# -- show: the subject masked as on the console's message page; debug sends have no SES id -----

SECRET = "Zx9" * 14
SECRET_LINK = "https://app.example.com/reset?t=" + SECRET


def test_show_masks_the_subject_as_the_console_does(
    world: World, quiet_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet_env.setenv("MAILROOM_DATABASE_URL", world.operator)
    with psycopg.connect(world.owner, autocommit=True) as conn:
        subject = f"Reset for alice@example.com: {SECRET_LINK}"
        message = mailroom.enqueue(conn, "alice@example.com", subject=subject, text="t",
                                   queue="c22show")  # fmt: skip
        try:
            code, text, _ = _in_process(["show", str(message)], capsys)
            document = _json(["show", str(message), "--json"], capsys)
            revealed = _json(["show", str(message), "--json", "--reveal"], capsys)
            with psycopg.connect(world.operator, autocommit=True) as operator:
                console = content.content(operator, message)
        finally:
            conn.execute("DELETE FROM mailroom.outbox WHERE id = %s", (message,))
    assert code == 0
    hidden = "https://app.example.com/reset?t=(hidden)"  # the token in the link
    assert f"subject          Reset for a***@example.com: {hidden}" in text
    assert "alice@" not in text
    assert SECRET not in text
    assert document["subject"] == f"Reset for a***@example.com: {hidden}"
    assert console is not None
    assert console["subject"] == document["subject"]
    # --reveal shows the address; a secret-looking link stays hidden, as on the console
    assert revealed["subject"] == f"Reset for alice@example.com: {hidden}"


def test_debug_sends_are_recorded_without_an_ses_like_id(
    spawn: Callable[..., Any], conn: psycopg.Connection[Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "debug-out"
    ids = [
        mailroom.enqueue(conn, "ann@example.com", subject="Hi", text="t"),
        mailroom.enqueue(conn, "bob@example.com", template="activationv1", data={"n": 1}),
    ]
    daemon = spawn(MAILROOM_DEBUG="true", MAILROOM_SES_OUTPUT_PATH=str(out))  # fmt: skip
    wait_for(lambda: all_final(conn, 2), timeout=60)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    rows = conn.execute("SELECT status, provider_message_id FROM mailroom.outbox").fetchall()
    assert rows == [("sent", None), ("sent", None)]
    tries = conn.execute("SELECT outcome, provider_message_id FROM mailroom.attempts").fetchall()
    assert tries == [("sent", None), ("sent", None)]
    written = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert written
    assert all(doc["response"] is None for doc in written)
    assert "debug-" not in "".join(p.read_text() for p in out.glob("*.json"))
    monkeypatch.setenv("MAILROOM_DATABASE_URL", conn.info.dsn)
    code, text, _ = _in_process(["show", str(ids[0])], capsys)
    assert code == 0
    assert "SES message id   none (debug)" in text
    assert "SES message id none (debug)" in text  # its attempt's line
    assert _json(["show", str(ids[0]), "--json"], capsys)["provider_message_id"] is None
