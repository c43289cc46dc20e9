"""What the operator typed to find a customer's mail, as mailroom.outbox_recipients holds it
(sql/0029): pure, no I/O. ``find.find`` runs the search (query ``find_by_recipient``).

Three kinds, for ``mailroom find --to | --domain | --prefix`` and the console's one box
(where ``@`` first means a domain and ``*`` last a prefix):

- an address in any form it may have been enqueued in: ``"Alice Smith" <Alice@Example.com>``,
  `` alice@example.com `` pasted with spaces, ``ann@bücher.de`` (stored as punycode) all
  become the bare address, lower-cased, its domain in punycode: exactly what the database
  stored (``normalize_address(ses_address(...))`` on both sides, compared on generated
  input by tests/test_search.py);
- a domain, ``@example.com`` or ``example.com``: every recipient at that domain (not its
  subdomains), an IDN domain converted to punycode;
- a prefix, ``ali`` or ``alice@ex``: recipients whose normalised address starts with it
  (ASCII: a partial Unicode domain has no punycode prefix).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from mailroom.addresses import ascii_domain, holds_several_mailboxes, normalize_address, ses_address
from mailroom.text import CommandError

Kind = Literal["address", "domain", "prefix"]
KINDS: tuple[Kind, ...] = ("address", "domain", "prefix")
_SPACE = " \t\n\r\x0b\x0c"
_MAX = 320  # the longest address the outbox accepts (0008)


@dataclasses.dataclass(frozen=True, slots=True)
class Wanted:
    """One recipient search: its kind and the normalised text it compares."""

    kind: Kind
    value: str

    def params(self) -> dict[str, str | None]:
        """The query's three parameters, two of them NULL (find_by_recipient)."""
        like = _escape_like(self.value) + "%"
        return {
            "address": self.value if self.kind == "address" else None,
            "domain": self.value if self.kind == "domain" else None,
            "prefix": like if self.kind == "prefix" else None,
        }

    def shown(self) -> str:
        """As the operator would type it back (the console's box)."""
        return {"address": self.value, "domain": "@" + self.value, "prefix": self.value + "*"}[
            self.kind
        ]


def address_key(text: str) -> str:
    """The form outbox_recipients.address holds for ``text`` as enqueued."""
    return normalize_address(ses_address(text))


def parse(text: str, kind: Kind | None = None) -> Wanted:
    """``text`` as typed, of ``kind`` (None: ``@domain`` is a domain, ``prefix*`` a
    prefix, anything else an address). Raises CommandError (exit 2) in the operator's
    words when it cannot match anything stored."""
    typed = text.strip(_SPACE)
    if kind is None:
        kind = "domain" if typed.startswith("@") else "prefix" if typed.endswith("*") else "address"
    if not typed.strip("@*" + _SPACE):
        raise CommandError(
            f"nothing to search for in {text!r}: give an address, @domain or a prefix"
        )
    if len(typed) > _MAX:
        raise CommandError(f"{typed[:40]!r}...: longer than any address ({_MAX} characters)")
    if kind == "domain":
        return Wanted("domain", _domain(typed))
    if kind == "prefix":
        return Wanted("prefix", _prefix(typed))
    return Wanted("address", _address(typed))


def _address(typed: str) -> str:
    if holds_several_mailboxes(typed):
        raise CommandError(f"{typed!r} holds several addresses: search one at a time")
    key = address_key(typed)
    local, at, domain = key.rpartition("@")
    if not at or not local or not domain or not key.isascii() or " " in key:
        raise CommandError(
            f"{typed!r} is not an address (a@example.com, or Name <a@example.com>): "
            "for a domain give @example.com, for the start of an address ali*")  # fmt: skip
    return key


def _domain(typed: str) -> str:
    domain = typed.lstrip("@").strip(_SPACE)
    if "@" in domain or not domain or any(c in domain for c in _SPACE + '<>"*,;'):
        raise CommandError(f"{typed!r} is not a domain: give it as @example.com")
    converted = ascii_domain(domain)
    if converted is None:
        raise CommandError(f"the domain {domain!r} cannot be written in punycode (IDNA)")
    return converted.lower()


def _prefix(typed: str) -> str:
    prefix = typed.rstrip("*").strip(_SPACE).lower()
    if not prefix.isascii():
        raise CommandError(
            f"{typed!r}: a prefix must be ASCII (a partial international domain has no "
            "punycode prefix): type the whole address, or the domain as @domain")  # fmt: skip
    if any(c in prefix for c in _SPACE + '<>",;'):
        raise CommandError(f"{typed!r}: a prefix is the start of a bare address (ali, alice@ex)")
    return prefix


def _escape_like(text: str) -> str:
    # "_" is common in addresses and "%" legal: both literal, as is the escape itself
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
