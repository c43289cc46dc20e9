"""Signed one-time tokens for account activation and password recovery.

Two wire formats, both base64url without padding:

* seed (must match the existing system byte for byte), 86 characters::

      b64(secret[32] || HMAC-SHA256(key, path || secret [|| code]))

  with path ``b"/activate"`` or ``b"/recover"``. Only the HMAC binds the action; there is no
  expiry and no key id, so verification tries every configured key.

* v1, ``"v1."`` + 104 characters::

      b64(0x01 || key_id[4] || action[1] || expires_at[u64 BE] || secret[32]
          || HMAC-SHA256(key, every preceding byte [|| code]))

  key_id = SHA-256(key)[:4]: a fingerprint, not a list index, so prepending a new key during
  rotation does not renumber older ones, and only keys with a matching fingerprint are tried
  (normally one; a 32-bit collision just costs an extra HMAC).

The recovery code (5 ASCII digits) is not inside the token; callers pass it to sign and verify.
Pure: no I/O, no clock reads (v1 callers pass ``now``), no key/secret/token in reprs or errors.
"""

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Self

KEY_BYTES = 32
SECRET_BYTES = 32
CODE_DIGITS = 5
V1_PREFIX = "v1."

_MAC_BYTES = 32
_HEX = frozenset("0123456789abcdefABCDEF")
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_V1_VERSION = 1
_V1_HEADER = struct.Struct(">B4sBQ")  # version, key id, action, expires_at
_V1_BYTES = _V1_HEADER.size + SECRET_BYTES + _MAC_BYTES
_SEED_BYTES = SECRET_BYTES + _MAC_BYTES


class Action(StrEnum):
    """Values equal the seed's ``token_action`` column."""

    ACTIVATION = "activation"
    PASSWORD_RECOVERY = "password_recovery"  # noqa: S105 - an action name, not a password


_SEED_PATH = {Action.ACTIVATION: b"/activate", Action.PASSWORD_RECOVERY: b"/recover"}
_V1_ACTION = {Action.ACTIVATION: 1, Action.PASSWORD_RECOVERY: 2}


class Reason(StrEnum):
    """Why a token was rejected; safe to log (never contains the token)."""

    PADDING = "base64 padding is not allowed"
    LENGTH = "wrong token length"
    CHARACTERS = "token has characters outside the base64url alphabet"
    NON_CANONICAL = "token is not canonical base64url"
    CODE_REQUIRED = "password recovery needs a code of exactly 5 ASCII digits"
    CODE_UNEXPECTED = "a code is only accepted for password recovery"
    VERSION = "unsupported token version"
    ACTION = "token was issued for a different action"
    UNKNOWN_KEY = "token was signed with a key that is not configured"
    SIGNATURE = "signature does not match any configured key"
    EXPIRED = "token has expired"


@dataclass(frozen=True, slots=True)
class Verified:
    secret: bytes = field(repr=False)
    key_index: int  # position in the key list; > 0 means "signed with a retiring key"
    expires_at: int | None = None  # unix seconds for v1, None for seed tokens


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason


Result = Verified | Rejected


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:4]


class KeyRing(tuple[bytes, ...]):
    """Keys in rotation order: the first signs, all verify. repr shows fingerprints only."""

    __slots__ = ()

    def __new__(cls, keys: Iterable[bytes]) -> Self:
        ring = super().__new__(cls, keys)
        if not ring:
            raise ValueError("key ring needs at least one key")
        if any(not isinstance(key, bytes) or len(key) != KEY_BYTES for key in ring):
            raise ValueError(f"every key must be {KEY_BYTES} bytes")
        return ring

    @property
    def signing_key(self) -> bytes:
        return self[0]

    def __repr__(self) -> str:
        return f"KeyRing({', '.join(_key_id(key).hex() for key in self)})"


def parse_key(text: str, *, label: str = "MAILROOM_SECRET_KEY") -> bytes:
    """Decode one 64-hex-character key. Errors describe the problem, never the text."""
    text = text.strip()
    if len(text) != 2 * KEY_BYTES:
        raise ValueError(
            f"{label} must be {2 * KEY_BYTES} hex characters ({KEY_BYTES} bytes), "
            f"got {len(text)} characters"
        )
    # Checked by hand: bytes.fromhex would also accept embedded spaces.
    if not _HEX.issuperset(text):
        raise ValueError(f"{label} must contain only hex digits 0-9, a-f")
    return bytes.fromhex(text)


def parse_keys(text: str, *, label: str = "MAILROOM_SECRET_KEY") -> KeyRing:
    """Decode a comma-separated key list; the first key signs new tokens."""
    parts = text.split(",")
    return KeyRing(
        parse_key(part, label=f"{label} entry {i} of {len(parts)}")
        for i, part in enumerate(parts, start=1)
    )


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str, size: int) -> bytes | Reason:
    if "=" in text:
        return Reason.PADDING
    if len(text) != (4 * size + 2) // 3:  # checked first: bounds all later work
        return Reason.LENGTH
    # The stdlib decoder silently skips unknown characters, so whitelist them first.
    if not _B64URL.issuperset(text):
        return Reason.CHARACTERS
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Unused low bits of the last character must be zero, else one token has several spellings.
    if _b64encode(raw) != text:
        return Reason.NON_CANONICAL
    return raw


def _code_bytes(action: Action, code: str | None) -> bytes | Reason:
    if action == Action.PASSWORD_RECOVERY:
        # isascii: str.isdigit alone accepts e.g. fullwidth or superscript digits.
        if code is None or len(code) != CODE_DIGITS or not (code.isascii() and code.isdigit()):
            return Reason.CODE_REQUIRED
        return code.encode("ascii")
    return b"" if code is None else Reason.CODE_UNEXPECTED


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _check_signing_inputs(key: bytes, action: Action, secret: bytes, code: str | None) -> bytes:
    # Signing input comes from our own code, so mistakes raise instead of returning Rejected.
    if len(key) != KEY_BYTES:
        raise ValueError(f"signing key must be {KEY_BYTES} bytes")
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    code_bytes = _code_bytes(action, code)
    if isinstance(code_bytes, Reason):
        raise ValueError(code_bytes.value)
    return code_bytes


def _first_match(keys: Sequence[bytes], indices: Iterable[int], msg: bytes, mac: bytes) -> int:
    for i in indices:
        if hmac.compare_digest(_mac(keys[i], msg), mac):
            return i
    return -1


def sign(key: bytes, action: Action, secret: bytes, code: str | None = None) -> str:
    """Seed-format token (86 characters)."""
    code_bytes = _check_signing_inputs(key, action, secret, code)
    return _b64encode(secret + _mac(key, _SEED_PATH[action] + secret + code_bytes))


def verify(token: str, action: Action, keys: Sequence[bytes], code: str | None = None) -> Result:
    """Check a seed-format token against every key; never raises for bad ``token``/``code``."""
    raw = _b64decode(token, _SEED_BYTES)
    if isinstance(raw, Reason):
        return Rejected(raw)
    code_bytes = _code_bytes(action, code)
    if isinstance(code_bytes, Reason):
        return Rejected(code_bytes)
    secret, mac = raw[:SECRET_BYTES], raw[SECRET_BYTES:]
    index = _first_match(keys, range(len(keys)), _SEED_PATH[action] + secret + code_bytes, mac)
    return Rejected(Reason.SIGNATURE) if index < 0 else Verified(secret, index)


def sign_v1(
    key: bytes, action: Action, secret: bytes, *, expires_at: int, code: str | None = None
) -> str:
    """v1 token bound to ``action``, ``expires_at`` (unix seconds) and the key's fingerprint."""
    code_bytes = _check_signing_inputs(key, action, secret, code)
    if not 0 <= expires_at < 2**64:
        raise ValueError("expires_at must fit an unsigned 64-bit integer")
    body = _V1_HEADER.pack(_V1_VERSION, _key_id(key), _V1_ACTION[action], expires_at) + secret
    return V1_PREFIX + _b64encode(body + _mac(key, body + code_bytes))


def _open_v1(
    token: str, action: Action, code: str | None
) -> tuple[bytes, bytes, int, bytes] | Reason:
    """Checks before any HMAC; returns (decoded token, key id, expires_at, code bytes)."""
    if not token.startswith(V1_PREFIX):
        return Reason.VERSION
    raw = _b64decode(token[len(V1_PREFIX) :], _V1_BYTES)
    if isinstance(raw, Reason):
        return raw
    version, key_id, action_byte, expires_at = _V1_HEADER.unpack_from(raw)
    if version != _V1_VERSION:
        return Reason.VERSION
    if action_byte != _V1_ACTION[action]:
        return Reason.ACTION
    code_bytes = _code_bytes(action, code)
    return code_bytes if isinstance(code_bytes, Reason) else (raw, key_id, expires_at, code_bytes)


def verify_v1(
    token: str, action: Action, keys: Sequence[bytes], *, now: float, code: str | None = None
) -> Result:
    """Check a v1 token; ``now`` is unix seconds. Never raises for bad ``token``/``code``."""
    opened = _open_v1(token, action, code)
    if isinstance(opened, Reason):
        return Rejected(opened)
    raw, key_id, expires_at, code_bytes = opened
    candidates = [i for i, key in enumerate(keys) if _key_id(key) == key_id]
    if not candidates:
        return Rejected(Reason.UNKNOWN_KEY)
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    index = _first_match(keys, candidates, body + code_bytes, mac)
    if index < 0:
        return Rejected(Reason.SIGNATURE)
    # Expiry only after the MAC, so EXPIRED always means "genuine but too old".
    # Written as `not <` so a NaN clock fails closed.
    if not now < expires_at:
        return Rejected(Reason.EXPIRED)
    return Verified(body[_V1_HEADER.size :], index, expires_at)


def verify_any(
    token: str, action: Action, keys: Sequence[bytes], *, now: float, code: str | None = None
) -> Result:
    """Dispatch on the prefix: '.' is not base64url, so seed tokens never start with "v1."."""
    if token.startswith(V1_PREFIX):
        return verify_v1(token, action, keys, now=now, code=code)
    return verify(token, action, keys, code)
