"""The commands ``templates list | diff | push | pull | render`` and their parser: SES
stored templates kept as files (mailroom.templates), compared with, pushed to and pulled
from SES v2 through the daemon's boto3 configuration (mailroom.daemon.preflight.client).

Exit codes: 0 ok (``diff``: nothing differs); 1 ``diff`` found a difference, a render
failed as SES would fail it, or ``pull`` named a template SES lacks; 2 bad usage,
configuration or template files; 3 SES unreachable or refused the call.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailroom.cli.args import command
from mailroom.cli.common import fail, load

if TYPE_CHECKING:  # the commands import it when they run: `mailroom run` builds this parser too
    from mailroom.templates import compare, files

EXIT_CODES = """
exit codes: 0 ok (diff: nothing differs); 1 diff found a difference, the render failed as
SES would fail it, or pull named a template SES lacks; 2 bad usage, configuration or
template files; 3 SES unreachable or refused the call
"""


def _directory(args: argparse.Namespace, *, required: bool = True) -> Path | None:
    from mailroom.templates import files  # noqa: PLC0415 -- as it runs

    if args.dir is not None:
        return Path(args.dir)
    cfg = load(require_database=False)
    if cfg.templates_dir is None and required:
        raise files.TemplateFileError("MAILROOM_TEMPLATES_DIR is not set (or give --dir)")
    return cfg.templates_dir


def _folder(args: argparse.Namespace) -> Path:
    from mailroom.templates import files  # noqa: PLC0415 -- as it runs

    directory = _directory(args)
    if directory is None:  # pragma: no cover -- _directory raised: it was required
        raise files.TemplateFileError("MAILROOM_TEMPLATES_DIR is not set (or give --dir)")
    return directory


class NoRegion(Exception):
    """No AWS region configured: a configuration problem (exit 2)."""


def _ses() -> Any:
    from mailroom.daemon.preflight import client  # noqa: PLC0415 -- boto3 only when asked
    from mailroom.templates import remote  # noqa: PLC0415 -- as it runs

    cfg = load(require_database=False)
    try:
        return client(cfg)
    except Exception as exc:  # botocore refuses to build a client: say why, in one line
        if type(exc).__name__ == "NoRegionError":
            raise NoRegion(
                "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION (or a profile's region)"
            ) from None
        raise remote.RemoteError("creating the SES client", type(exc).__name__, str(exc)) from None


def _names(args: argparse.Namespace, local: dict[str, files.Template]) -> list[str]:
    from mailroom.templates import files  # noqa: PLC0415 -- as it runs

    for name in args.names:
        files.check_name(name)
    return list(args.names) or sorted(local)


def _plan(
    args: argparse.Namespace, ses: Any
) -> tuple[dict[str, files.Template], list[compare.Change]]:
    from mailroom.templates import compare, files, remote  # noqa: PLC0415 -- as it runs

    directory = _folder(args)
    local = files.load_all(directory)
    names = _names(args, local)
    missing = [n for n in args.names if n not in local]
    if missing:
        raise files.TemplateFileError(f"no template folder {', '.join(missing)} in {directory}")
    remote_copies = {name: remote.get(ses, name) for name in names}
    return local, compare.plan({n: local[n] for n in names}, remote_copies)


def _guard(run: Any) -> Any:
    """A command's template-file and SES failures as one line and an exit code."""

    def guarded(args: argparse.Namespace) -> int:
        from mailroom.templates import files, remote  # noqa: PLC0415 -- when a command runs

        try:
            return int(run(args))
        except (files.TemplateFileError, NoRegion) as exc:
            return fail(str(exc), 2)
        except remote.RemoteError as exc:
            return fail(f"SES: {exc}", 3)

    return guarded


def cmd_list(args: argparse.Namespace) -> int:
    from mailroom.templates import compare, files, remote  # noqa: PLC0415 -- as it runs

    directory = _folder(args)
    local = files.load_all(directory)
    rows: list[dict[str, Any]] = [
        {"name": n, "files": True, "parts": [p for p, v in t.parts().items() if v is not None]}
        for n, t in local.items()
    ]
    if not args.local:
        ses = _ses()
        in_ses = set(remote.list_names(ses))
        states = {
            c.name: c.action for c in compare.plan(local, {n: remote.get(ses, n) for n in local})
        }
        for row in rows:
            row["ses"] = {compare.SAME: "same", compare.UPDATE: "differs"}.get(
                states[row["name"]], "missing"
            )
        rows += [
            {"name": n, "files": False, "parts": [], "ses": "only in SES"}
            for n in sorted(in_ses - set(local))
        ]
    if args.json:
        print(json.dumps({"directory": str(directory), "templates": rows}, indent=2))
        return 0
    print(f"{len(local)} template(s) in {directory}")
    for row in rows:
        state = f"  SES: {row['ses']}" if "ses" in row else ""
        print(f"  {row['name']:<32} {'+'.join(row['parts']) or '-':<18}{state}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from mailroom.templates import compare  # noqa: PLC0415 -- as it runs

    _, changes = _plan(args, _ses())
    differs = [c for c in changes if c.pushes]
    if args.json:
        document = {"differs": bool(differs), "templates": [c.as_dict() for c in changes]}
        print(json.dumps(document, indent=2))
        return 1 if differs else 0
    for c in changes:
        if c.action == compare.SAME:
            print(f"same     {c.name}")
        elif c.action == compare.CREATE:
            print(f"missing  {c.name}: not in SES (push creates it)")
        else:
            print(f"differs  {c.name}: {', '.join(c.parts)}")
        for line in c.diff:
            print(f"    {line}")
    print(
        f"{len(differs)} of {len(changes)} template(s) differ from SES"
        if differs
        else f"all {len(changes)} template(s) match SES"
    )
    return 1 if differs else 0


def cmd_push(args: argparse.Namespace) -> int:
    from mailroom.templates import compare, remote  # noqa: PLC0415 -- as it runs

    ses = _ses()
    local, changes = _plan(args, ses)
    done = []
    for c in changes:
        if not c.pushes:
            continue
        if not args.dry_run:
            remote.put(ses, local[c.name], exists=c.action == compare.UPDATE)
        done.append(c)
    verb = "would " if args.dry_run else ""
    if args.json:
        document = {
            "dry_run": args.dry_run,
            "created": [c.name for c in done if c.action == compare.CREATE],
            "updated": [c.name for c in done if c.action == compare.UPDATE],
            "unchanged": [c.name for c in changes if c.action == compare.SAME],
        }
        print(json.dumps(document, indent=2))
        return 0
    for c in done:
        created = c.action == compare.CREATE
        what = (
            ("create" if created else "update") if verb else ("created" if created else "updated")
        )
        print(f"{verb}{what} {c.name}" + ("" if created else f" ({', '.join(c.parts)})"))
    unchanged = sum(1 for c in changes if c.action == compare.SAME)
    pushed = "would be pushed" if args.dry_run else "pushed"
    print(f"{len(done)} template(s) {pushed}, {unchanged} already up to date")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from mailroom.templates import files, remote  # noqa: PLC0415 -- as it runs

    directory = _folder(args)
    ses = _ses()
    for name in args.names:
        files.check_name(name)
    names = list(args.names) or remote.list_names(ses)
    written: list[str] = []
    missing: list[str] = []
    for name in names:
        copy = remote.get(ses, name)
        if copy is None:
            missing.append(name)
            continue
        if not args.dry_run:
            files.write(directory, copy)
        written.append(name)
    if args.json:
        print(
            json.dumps(
                {
                    "directory": str(directory),
                    "dry_run": args.dry_run,
                    "pulled": written,
                    "not_in_ses": missing,
                },
                indent=2,
            )
        )
    else:
        verb = "would write" if args.dry_run else "wrote"
        for name in written:
            print(f"{verb} {directory / name}/")
        for name in missing:
            print(f"not in SES: {name}")
        print(f"{len(written)} template(s) pulled into {directory}")
    return 1 if missing else 0


def _data(args: argparse.Namespace, directory: Path | None) -> dict[str, Any]:
    from mailroom.templates import files, handlebars  # noqa: PLC0415 -- as it runs

    text = args.data
    if text is None:
        found = files.example(directory, args.name) if directory is not None else None
        return found or {}
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise files.TemplateFileError(f"--data {text}: cannot read: {exc}") from None
    try:
        return handlebars.load_data(text)
    except handlebars.TemplateError as exc:
        raise files.TemplateFileError(f"--data: {exc}") from None


def cmd_render(args: argparse.Namespace) -> int:
    from mailroom.templates import files, handlebars, mime, remote  # noqa: PLC0415 -- as it runs

    files.check_name(args.name)
    directory = _directory(args, required=not args.remote)
    data = _data(args, directory)
    try:
        if args.remote:
            text = remote.test_render(_ses(), args.name, json.dumps(data))
            rendered = mime.parse_rendered(text)
        else:
            directory = _folder(args)
            template = files.load(directory, args.name)
            if template is None:
                raise files.TemplateFileError(f"no template folder {args.name} in {directory}")
            rendered = mime.render(template, data)
    except handlebars.TemplateError as exc:
        return fail(f"render failed: {exc}", 1)
    except remote.RemoteError as exc:
        if exc.code in ("BadRequestException", "NotFoundException"):
            return fail(f"SES refused to render: {exc}", 1)
        raise
    shown = rendered.as_dict()
    if args.part:
        shown = {args.part: shown[args.part]}
    if args.json:
        print(
            json.dumps(
                {"name": args.name, "source": "ses" if args.remote else "files", **shown},
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    if args.part:
        print(shown[args.part] or "", end="" if (shown[args.part] or "").endswith("\n") else "\n")
        return 0
    for part, value in shown.items():
        print(f"--- {part}")
        text = value if value is not None else "(none)"
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def add_commands(sub: Any) -> None:
    """The ``templates`` command group, for cli/commands.py."""
    group = command(
        sub,
        "templates",
        "SES stored templates kept as files: list, diff, push, pull, render",
        description="SES stored templates as files in MAILROOM_TEMPLATES_DIR (or --dir): one "
        "folder per template with subject.txt, body.html, body.txt (docs/templates.md). "
        "Rendered locally as SES renders them; compared with, pushed to and pulled from "
        "SES v2 with the daemon's AWS settings.",
        examples='  mailroom templates render activationv1 --data \'{"login": "ann", '
        '"secret": "x"}\'\n  mailroom templates diff          # in CI: exit 1 when SES '
        "differs\n  mailroom templates push --dry-run\n  mailroom templates push\n"
        "  mailroom templates pull welcome\n",
        parents=[],
        exit_codes=EXIT_CODES,
    )
    actions = group.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="templates directory (default MAILROOM_TEMPLATES_DIR)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    names = argparse.ArgumentParser(add_help=False)
    names.add_argument("names", nargs="*", metavar="NAME", help="templates (default: all)")

    listing = command(
        actions,
        "list",
        "the templates in the files and whether SES has the same",
        description="Each template folder with its parts and, unless --local, whether SES "
        "holds the same (same, differs, missing), then templates only in SES.",
        examples="  mailroom templates list\n  mailroom templates list --local --json\n",
        parents=[common],
        exit_codes=EXIT_CODES,
    )
    listing.add_argument("--local", action="store_true", help="the files only, no SES call")
    listing.set_defaults(handler=_guard(cmd_list))

    diff = command(
        actions,
        "diff",
        "what push would change in SES; exit 1 when anything differs",
        description="Compares each template folder with SES's copy (GetEmailTemplate) and "
        "prints a unified diff per part (SES -, files +). Exit 1 when a push would create "
        "or update anything: run it in CI. Templates only in SES are not push's business.",
        examples="  mailroom templates diff\n  mailroom templates diff activationv1 --json\n",
        parents=[common, names],
        exit_codes=EXIT_CODES,
    )
    diff.set_defaults(handler=_guard(cmd_diff))

    push = command(
        actions,
        "push",
        "create or update SES's templates from the files (idempotent)",
        description="Creates (CreateEmailTemplate) the templates SES lacks and updates "
        "(UpdateEmailTemplate) those that differ; a template already equal is not written. "
        "Never deletes.",
        examples="  mailroom templates push --dry-run\n  mailroom templates push activationv1\n",
        parents=[common, names],
        exit_codes=EXIT_CODES,
    )
    push.add_argument("--dry-run", action="store_true", help="say what would change only")
    push.set_defaults(handler=_guard(cmd_push))

    pull = command(
        actions,
        "pull",
        "write SES's templates into the files",
        description="Writes each named template (default: every template SES lists) as "
        "files, replacing the folder's subject.txt, body.html and body.txt. Exit 1 when a "
        "named template is not in SES.",
        examples="  mailroom templates pull\n  mailroom templates pull welcome --dir ./templates\n",
        parents=[common, names],
        exit_codes=EXIT_CODES,
    )
    pull.add_argument("--dry-run", action="store_true", help="say what would be written only")
    pull.set_defaults(handler=_guard(cmd_pull))

    render = command(
        actions,
        "render",
        "a template rendered with data: subject, text and HTML",
        description="Renders the template from the files as SES would (docs/templates.md, "
        "'The syntax SES supports'), or with --remote asks SES (TestRenderEmailTemplate) "
        "to render its stored copy. Data: --data JSON, --data @file.json, else the "
        "folder's example.json, else {}. Exit 1 when the render fails as SES would fail "
        "it (a missing attribute).",
        examples="  mailroom templates render activationv1\n"
        "  mailroom templates render passwordrecoveryv1 --data @ann.json --part html > p.html\n"
        "  mailroom templates render activationv1 --remote --json\n",
        parents=[common],
        exit_codes=EXIT_CODES,
    )
    render.add_argument("name", metavar="NAME", help="template name")
    render.add_argument("--data", help="template data: a JSON object, or @file")
    render.add_argument("--remote", action="store_true", help="ask SES to render its copy")
    render.add_argument("--part", choices=["subject", "text", "html"], help="print one part")
    render.set_defaults(handler=_guard(cmd_render))
