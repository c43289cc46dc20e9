"""Addresses in the form SES v2 takes them, computed exactly as the database computes them
(mailroom.ses_address() in sql/0012_applications.sql; tests/test_addresses.py compares the
two on generated input).

- ``ann@example.com`` stays as it is.
- A display name (``Ann Smith <ann@example.com>``, ``"Shop" <shop@example.com>`` or a
  ``(name, address)`` pair) becomes ``"Ann Smith" <ann@example.com>``: always quoted,
  ``"`` and ``\\`` escaped; a name with non-ASCII characters becomes RFC 2047 encoded words
  (``=?UTF-8?B?...?=``, at most 45 bytes of UTF-8 each, so every word stays under 75
  characters). A name with a control character (a line break: header injection) is not
  converted, so that the database refuses it.
- An internationalised domain is lowered character by character, NFC-normalised and each
  non-ASCII label written in punycode (``xn--``, RFC 3492). A domain that normalisation
  would change into another one (NFKC compatibility characters such as fullwidth letters)
  or that holds a character IDNA maps away or forbids (zero-width characters, soft hyphen,
  "ß", final sigma, spaces, symbols, private use) is not converted, and is refused.

- A text holding more than one mailbox (``A <a@example.com>, B <b@example.com>``: a comma,
  a semicolon or a second ``<`` outside double quotes) is not converted: the outbox refuses
  it with ``outbox_address_is_one_mailbox`` (sql/0028), as Django's own address check does.
  A quoted display name may hold them (``"Smith, Ann" <ann@example.com>``).

Anything that cannot be converted is returned unchanged: the validation trigger then
refuses it with ``outbox_addresses_must_be_ascii_user_at_domain``.

:func:`normalize_address` is the form the suppression list compares (the daemon's plan
step, the event parser and the operator's suppression verbs all use this one).
"""

from __future__ import annotations

import base64
import re
import unicodedata

_NAMED = re.compile(r"(.*)<([^<>]*)>", re.DOTALL)
_SPACE = " \t\n\r\x0b\x0c"  # trimmed as PostgreSQL's btrim() is told to
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters no label may hold once lowered: ASCII other than letters, digits and "-";
# what IDNA 2003 maps to nothing or folds to other letters (soft hyphen, zero-width and
# joiners, variation selectors, "ß", final sigma, dotted capital I); spaces, controls,
# bidi and formatting marks; private use; non-characters; surrogates.
_DENIED = re.compile(
    "[\x00-\x2c\x2f\x3a-\x60\x7b-\xa0\xad\xdf\u0130\u034f\u03c2\u061c\u115f\u1160\u1680"
    "\u1806\u180b-\u180f\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164"
    "\ud800-\uf8ff\ufe00-\ufe0f\ufeff\ufff0-\uffff\U000e0000-\U0010ffff]"
)
# Encoded words as encoded_words() writes them: a name already in this form is kept, so that
# converting twice (the helper, then the database's trigger) changes nothing.
_WORDS = re.compile(r"=\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=( =\?UTF-8\?B\?[A-Za-z0-9+/]+={0,2}\?=)*")
_QUOTED_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_WORD_BYTES = 45  # base64 of 45 bytes is 60 characters; "=?UTF-8?B?" + "?=" adds 12


def _lower(text: str) -> str:
    # one character at a time: no context rules (a final capital sigma lowers to a plain sigma as in
    # PostgreSQL), and a character whose lower case is two characters stays as written
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def ascii_domain(domain: str) -> str | None:
    """The domain as DNS and SES take it, or None if it cannot be converted faithfully."""
    if domain.isascii():
        return domain
    lowered = unicodedata.normalize("NFC", _lower(domain))
    if (
        "\u0130" in domain  # lowers to "i" + a combining dot, or to "i": either changes it
        or unicodedata.normalize("NFKC", lowered) != lowered
        or _DENIED.search(lowered)
    ):
        return None
    labels = []
    for label in lowered.split("."):
        if label.isascii():
            labels.append(label)
        else:
            labels.append("xn--" + label.encode("punycode").decode("ascii"))
    return ".".join(labels)


def encoded_words(name: str) -> str:
    """RFC 2047 "B" encoded words for a display name, split on character boundaries."""
    words, chunk = [], b""
    for char in name:
        data = char.encode("utf-8")
        if chunk and len(chunk) + len(data) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += data
    words.append(chunk)
    return " ".join(f"=?UTF-8?B?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _spec(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    converted = ascii_domain(domain)
    return address if converted is None else f"{local}@{converted}"


def _named(name: str, spec: str, original: str) -> str:
    if _CONTROL.search(name):
        return original  # refused: a line break in a header is an injection
    if not name:
        return _spec(spec)
    if _WORDS.fullmatch(name):
        return f"{name} <{_spec(spec)}>"
    if name.isascii():
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{_spec(spec)}>'
    return f"{encoded_words(unicodedata.normalize('NFC', name))} <{_spec(spec)}>"


def holds_several_mailboxes(address: str) -> bool:
    """Whether ``address`` is a list of mailboxes rather than one: outside quoted strings,
    a comma, a semicolon or a second "<" (mailroom.holds_several_mailboxes in SQL)."""
    bare_text = _QUOTED_STRING.sub("", address)
    return "," in bare_text or ";" in bare_text or bare_text.count("<") > 1


def ses_address(address: str | tuple[str, str]) -> str:
    """``address`` (a string, or a ``(display name, address)`` pair) as SES takes it."""
    if isinstance(address, tuple):
        name, spec = address
        text = f"{name} <{spec}>"
        return _named(name.strip(_SPACE), spec.strip(_SPACE), text)
    text = address.strip(_SPACE)
    if holds_several_mailboxes(text):
        return text  # one recipient per element: refused, not merged into a display name
    match = _NAMED.fullmatch(text)
    if match is None:
        return _spec(text)
    name, spec = match[1].strip(_SPACE), match[2].strip(_SPACE)
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        name = _ESCAPED.sub(r"\1", name[1:-1]).strip(_SPACE)
    return _named(name, spec, text)


def bare(address: str) -> str:
    """The address without its display name (for suppression lists, logs, comparisons)."""
    match = _NAMED.fullmatch(address.strip())
    return (match[2] if match else address).strip(_SPACE)


def normalize_address(address: str) -> str:
    """The form suppression compares: the addr-spec of ``"Ann" <Ann@Example.com>`` (or
    of a bare address), trimmed and lower-cased. The SQL twin is
    ``mailroom.normalize_address``.

    Lower-casing the local part is not what RFC 5321 promises, but it is what every
    mailbox provider does, and what SES's own suppression list does: a bounce for
    ``Ann@`` must stop mail to ``ann@``.
    """
    return bare(address).lower()


_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SPEC = re.compile(rf"{_LOCAL}@{_LABEL}(?:\.{_LABEL})+")
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
_DISPLAY = re.compile(rf"(?:{_QUOTED}|{_WORDS.pattern}) <(?P<spec>[^<>]*)>")


def is_valid(address: str) -> bool:
    """mailroom.is_valid_address() of the database, for an address in SES form."""
    match = _DISPLAY.fullmatch(address) if "<" in address else None
    if "<" in address and (match is None or len(address.encode()) > 998):
        return False
    spec = match["spec"] if match else address
    return (
        len(spec.encode()) <= 320
        and len(spec.split("@")[0].encode()) <= 64
        and _SPEC.fullmatch(spec) is not None
    )
