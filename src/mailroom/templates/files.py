"""Templates on disk: one folder per SES template under MAILROOM_TEMPLATES_DIR.

    templates/
      activationv1/
        subject.txt     the subject line (one line; a final newline is not part of it)
        body.html       the HTML part (optional if body.txt exists)
        body.txt        the text part (optional if body.html exists)
        example.json    sample template data for `mailroom templates render` (never pushed)

The folder's name is the template's name in SES. Body files are taken byte for byte, so a
pull followed by a push changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailroom.templates import handlebars

SUBJECT, HTML, TEXT, EXAMPLE = "subject.txt", "body.html", "body.txt", "example.json"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what SES accepts as a template name
MAX_FILE = handlebars.MAX_TEMPLATE


class TemplateFileError(ValueError):
    """A template folder that cannot be read as an SES template."""


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    subject: str
    html: str | None = None
    text: str | None = None

    def parts(self) -> dict[str, str | None]:
        return {"subject": self.subject, "html": self.html, "text": self.text}


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise TemplateFileError(
            f"{name!r} is not a template name: 1 to 64 letters, digits, '-' or '_'"
        )
    return name


def _read(path: Path) -> str | None:
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_FILE:
        raise TemplateFileError(f"{path}: larger than {MAX_FILE} bytes")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateFileError(f"{path}: not UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise TemplateFileError(f"{path}: {exc.strerror}") from None


def load(directory: Path, name: str) -> Template | None:
    """The template ``name`` in ``directory``, None if it has no folder there."""
    folder = directory / check_name(name)
    if not folder.is_dir():
        return None
    subject = _read(folder / SUBJECT)
    if subject is None:
        raise TemplateFileError(f"{folder}: {SUBJECT} is missing")
    subject = subject.removesuffix("\n").removesuffix("\r")
    if "\n" in subject or "\r" in subject:
        raise TemplateFileError(f"{folder / SUBJECT}: a subject is one line")
    html, text = _read(folder / HTML), _read(folder / TEXT)
    if html is None and text is None:
        raise TemplateFileError(f"{folder}: neither {HTML} nor {TEXT} exists")
    template = Template(name, subject, html, text)
    for part, source in template.parts().items():
        if source is not None:
            try:
                handlebars.parse(source)
            except handlebars.TemplateError as exc:
                raise TemplateFileError(f"{folder / _FILE_OF[part]}: {exc}") from None
    return template


_FILE_OF = {"subject": SUBJECT, "html": HTML, "text": TEXT}


def names(directory: Path) -> list[str]:
    """Template folders in ``directory`` (those whose names SES would take), sorted."""
    if not directory.is_dir():
        raise TemplateFileError(f"{directory}: not a directory")
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and NAME.match(p.name))


def load_all(directory: Path) -> dict[str, Template]:
    found = {}
    for name in names(directory):
        template = load(directory, name)
        if template is not None:
            found[name] = template
    return found


def example(directory: Path, name: str) -> dict[str, Any] | None:
    """The template's example.json, if any."""
    text = _read(directory / check_name(name) / EXAMPLE)
    if text is None:
        return None
    try:
        return handlebars.load_data(text)
    except handlebars.TemplateError as exc:
        raise TemplateFileError(f"{directory / name / EXAMPLE}: {exc}") from None


def write(directory: Path, template: Template) -> list[Path]:
    """Write the template's files (a part SES does not have is removed); the paths
    written. Each file is replaced whole: a reader never sees half of one."""
    folder = directory / check_name(template.name)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    contents = {SUBJECT: template.subject + "\n", HTML: template.html, TEXT: template.text}
    for filename, content in contents.items():
        path = folder / filename
        if content is None:
            path.unlink(missing_ok=True)
            continue
        tmp = folder / f".{filename}.tmp"
        tmp.write_text(content, encoding="utf-8", newline="")
        tmp.replace(path)
        written.append(path)
    return written
