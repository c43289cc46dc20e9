import base64
import hashlib
import hmac
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailroom.tokens import (
    Action,
    KeyRing,
    Reason,
    Rejected,
    Verified,
    new_code,
    new_secret,
    parse_key,
    parse_keys,
    sign,
    sign_v1,
    verify,
    verify_any,
    verify_v1,
)

KEY = bytes.fromhex("deadbeef" * 8)
OTHER_KEY = bytes.fromhex("0badc0de" * 8)
SECRET = bytes(range(32))
CODE = "01234"
EXPIRES = 1_700_000_000
REC = Action.PASSWORD_RECOVERY
ACT = Action.ACTIVATION
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Literals computed once from the independent reference below; both must keep agreeing.
SEED_ACTIVATION = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh_6nSHtQPxHcOGxB4n-lTJ33ia2qnzaGyWZbJr5ajT1Lw"
)
SEED_RECOVERY = (
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh91pcoCvA8FWDWisSk2YkawNO5s4aotZCfa7a1aW-3UHg"
)
V1_RECOVERY = (
    "v1.AYIAzwwCAAAAAGVT8QAAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH9trw_owTXKOGX7rouOUhsOE"
    "pMXnsDvXo3ZiRwFchoxI"
)


def reference_seed(key: bytes, message_prefix: bytes, secret: bytes, code: bytes = b"") -> str:
    mac = hmac.new(key, message_prefix + secret + code, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(secret + mac).decode().rstrip("=")


def reference_v1(key: bytes, action_byte: int, expires: int, secret: bytes, code: bytes) -> str:
    body = b"\x01" + hashlib.sha256(key).digest()[:4] + bytes([action_byte])
    body += expires.to_bytes(8, "big") + secret
    mac = hmac.new(key, body + code, hashlib.sha256).digest()
    return "v1." + base64.urlsafe_b64encode(body + mac).decode().rstrip("=")


def replace_char(token: str, index: int, char: str) -> str:
    return token[:index] + char + token[index + 1 :]


def flip(token: str, index: int) -> str:
    current = token[index]
    return replace_char(token, index, "B" if current == "A" else "A")


def v1_raw(token: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))


def v1_encode(raw: bytes) -> str:
    return "v1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def rejected(result: Verified | Rejected) -> Reason:
    assert isinstance(result, Rejected), result
    return result.reason


# Known answers --------------------------------------------------------------------------------


def test_known_answer_activation() -> None:
    expected = reference_seed(KEY, b"/activate", SECRET)
    assert len(expected) == 86
    assert sign(KEY, ACT, SECRET) == expected == SEED_ACTIVATION


def test_known_answer_recovery() -> None:
    expected = reference_seed(KEY, b"/recover", SECRET, b"01234")
    assert sign(KEY, REC, SECRET, CODE) == expected == SEED_RECOVERY


def test_known_answer_v1() -> None:
    expected = reference_v1(KEY, 2, EXPIRES, SECRET, b"01234")
    assert sign_v1(KEY, REC, SECRET, expires_at=EXPIRES, code=CODE) == expected == V1_RECOVERY


# Seed format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "code"), [(ACT, None), (REC, CODE)])
def test_roundtrip(action: Action, code: str | None) -> None:
    secret = new_secret()
    token = sign(KEY, action, secret, code)
    assert verify(token, action, [KEY], code) == Verified(secret, 0)
    assert verify_any(token, action, [KEY], now=0.0, code=code) == Verified(secret, 0)


@pytest.mark.parametrize("index", [0, 20, 43, 60, 84, 85])
def test_any_single_character_change_is_rejected(index: int) -> None:
    for token, action, code in [(SEED_ACTIVATION, ACT, None), (SEED_RECOVERY, REC, CODE)]:
        assert rejected(verify(flip(token, index), action, [KEY], code)) in {
            Reason.SIGNATURE,
            Reason.NON_CANONICAL,
        }


def test_forged_signature_and_secret() -> None:
    assert rejected(verify(flip(SEED_ACTIVATION, 60), ACT, [KEY])) is Reason.SIGNATURE
    assert rejected(verify(flip(SEED_ACTIVATION, 0), ACT, [KEY])) is Reason.SIGNATURE


def test_non_canonical_final_character() -> None:
    # 86 chars carry 4 spare bits; "w" -> "x" changes only those, so decoding alone would accept.
    token = sign(KEY, ACT, SECRET)
    for char in ALPHABET:
        candidate = replace_char(token, 85, char)
        if candidate != token:
            assert isinstance(verify(candidate, ACT, [KEY]), Rejected)


@pytest.mark.parametrize(
    "mangle",
    [lambda t: t[:-1], lambda t: t[:-2], lambda t: t[1:], lambda t: t + "A", lambda t: t * 2],
)
def test_wrong_length(mangle: Callable[[str], str]) -> None:
    assert rejected(verify(mangle(SEED_ACTIVATION), ACT, [KEY])) is Reason.LENGTH


@pytest.mark.parametrize("suffix", ["=", "==", "==="])
def test_padding_rejected(suffix: str) -> None:
    assert rejected(verify(SEED_ACTIVATION + suffix, ACT, [KEY])) is Reason.PADDING
    assert rejected(verify(SEED_ACTIVATION[:-2] + "==", ACT, [KEY])) is Reason.PADDING


@pytest.mark.parametrize("char", ["+", "/", "!", " ", ".", "\n", "é", "\x00", "\ud800"])
def test_non_base64_characters(char: str) -> None:
    assert rejected(verify(replace_char(SEED_ACTIVATION, 10, char), ACT, [KEY])) is (
        Reason.CHARACTERS
    )


def test_wrong_action() -> None:
    assert rejected(verify(SEED_ACTIVATION, REC, [KEY], CODE)) is Reason.SIGNATURE
    assert rejected(verify(SEED_RECOVERY, ACT, [KEY])) is Reason.SIGNATURE


def test_wrong_code() -> None:
    assert rejected(verify(SEED_RECOVERY, REC, [KEY], "01235")) is Reason.SIGNATURE


@pytest.mark.parametrize(
    "code",
    [None, "", "1234", "123456", "abcde", "0123 ", "\uff11\uff12\uff13\uff14\uff15", "\u00b92345"],
)
def test_missing_or_invalid_code(code: str | None) -> None:
    assert rejected(verify(SEED_RECOVERY, REC, [KEY], code)) is Reason.CODE_REQUIRED


def test_code_given_for_activation() -> None:
    assert rejected(verify(SEED_ACTIVATION, ACT, [KEY], CODE)) is Reason.CODE_UNEXPECTED


def test_wrong_key_and_no_keys() -> None:
    assert rejected(verify(SEED_ACTIVATION, ACT, [OTHER_KEY])) is Reason.SIGNATURE
    assert rejected(verify(SEED_ACTIVATION, ACT, [])) is Reason.SIGNATURE


def test_rotation() -> None:
    old_token = sign(KEY, ACT, SECRET)
    rotated = KeyRing([OTHER_KEY, KEY])
    assert verify(old_token, ACT, rotated) == Verified(SECRET, 1)
    new_token = sign(rotated.signing_key, ACT, SECRET)
    assert new_token != old_token
    assert verify(new_token, ACT, rotated) == Verified(SECRET, 0)
    retired = KeyRing([OTHER_KEY])
    assert rejected(verify(old_token, ACT, retired)) is Reason.SIGNATURE
    assert verify(new_token, ACT, retired) == Verified(SECRET, 0)


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [(KEY[:31], SECRET, None), (KEY, SECRET + b"x", None), (KEY, SECRET, "12")],
)
def test_sign_rejects_bad_inputs(key: bytes, secret: bytes, code: str | None) -> None:
    with pytest.raises(ValueError, match=r"bytes|digits") as info:
        sign(key, REC, secret, code)
    assert KEY.hex() not in str(info.value)


def test_sign_rejects_code_for_activation() -> None:
    with pytest.raises(ValueError, match="only accepted for password recovery"):
        sign(KEY, ACT, SECRET, CODE)


# v1 format ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "code"), [(ACT, None), (REC, CODE)])
def test_v1_roundtrip_and_expiry(action: Action, code: str | None) -> None:
    token = sign_v1(KEY, action, SECRET, expires_at=EXPIRES, code=code)
    assert len(token) == 107
    ok = Verified(SECRET, 0, EXPIRES)
    assert verify_v1(token, action, [KEY], now=EXPIRES - 1, code=code) == ok
    assert verify_v1(token, action, [KEY], now=EXPIRES - 0.001, code=code) == ok
    assert verify_any(token, action, [KEY], now=EXPIRES - 1, code=code) == ok
    for now in (EXPIRES, EXPIRES + 0.5, EXPIRES + 86400, float("nan")):
        assert rejected(verify_v1(token, action, [KEY], now=now, code=code)) is Reason.EXPIRED


def test_v1_tampered_expiry_is_rejected() -> None:
    raw = v1_raw(V1_RECOVERY)
    expiry_offset = 1 + 4 + 1
    assert struct.unpack(">Q", raw[expiry_offset : expiry_offset + 8])[0] == EXPIRES
    raw[expiry_offset + 4] ^= 0x01  # push the expiry ~136 years out
    forged = v1_encode(bytes(raw))
    assert rejected(verify_v1(forged, REC, [KEY], now=EXPIRES + 10, code=CODE)) is (
        Reason.SIGNATURE
    )


def test_v1_tampered_header_fields() -> None:
    def tampered(offset: int, value: int) -> str:
        raw = v1_raw(V1_RECOVERY)
        raw[offset] = value
        return v1_encode(bytes(raw))

    now = EXPIRES - 1
    assert rejected(verify_v1(tampered(0, 2), REC, [KEY], now=now, code=CODE)) is Reason.VERSION
    assert rejected(verify_v1(tampered(1, 0), REC, [KEY], now=now, code=CODE)) is (
        Reason.UNKNOWN_KEY
    )
    assert rejected(verify_v1(tampered(5, 1), ACT, [KEY], now=now)) is Reason.SIGNATURE
    assert rejected(verify_v1(tampered(5, 9), REC, [KEY], now=now, code=CODE)) is Reason.ACTION


def test_v1_wrong_action_code_and_key() -> None:
    now = EXPIRES - 1
    assert rejected(verify_v1(V1_RECOVERY, ACT, [KEY], now=now)) is Reason.ACTION
    assert rejected(verify_v1(V1_RECOVERY, REC, [KEY], now=now, code="99999")) is (Reason.SIGNATURE)
    assert rejected(verify_v1(V1_RECOVERY, REC, [KEY], now=now)) is Reason.CODE_REQUIRED
    assert rejected(verify_v1(V1_RECOVERY, REC, [OTHER_KEY], now=now, code=CODE)) is (
        Reason.UNKNOWN_KEY
    )


def test_v1_malformed() -> None:
    now = EXPIRES - 1
    assert rejected(verify_v1(SEED_RECOVERY, REC, [KEY], now=now, code=CODE)) is Reason.VERSION
    assert rejected(verify_v1(V1_RECOVERY + "A", REC, [KEY], now=now, code=CODE)) is (Reason.LENGTH)
    assert rejected(verify_v1(V1_RECOVERY[:-4] + "====", REC, [KEY], now=now, code=CODE)) is (
        Reason.PADDING
    )
    assert rejected(verify(V1_RECOVERY, REC, [KEY], CODE)) is Reason.LENGTH


def test_v1_rotation_uses_key_id() -> None:
    token = sign_v1(KEY, ACT, SECRET, expires_at=EXPIRES)
    now = EXPIRES - 1
    assert verify_v1(token, ACT, KeyRing([OTHER_KEY, KEY]), now=now) == Verified(SECRET, 1, EXPIRES)
    assert rejected(verify_v1(token, ACT, [OTHER_KEY], now=now)) is Reason.UNKNOWN_KEY


def test_v1_rejects_out_of_range_expiry() -> None:
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="64-bit"):
            sign_v1(KEY, ACT, SECRET, expires_at=bad)


def test_verify_any_dispatches() -> None:
    now = EXPIRES - 1
    assert verify_any(SEED_RECOVERY, REC, [KEY], now=now, code=CODE) == Verified(SECRET, 0)
    assert verify_any(V1_RECOVERY, REC, [KEY], now=now, code=CODE) == Verified(SECRET, 0, EXPIRES)


# Arbitrary input never raises ----------------------------------------------------------------

near_seed = st.text(alphabet=ALPHABET + "=.+/", min_size=84, max_size=88)
near_v1 = st.text(alphabet=ALPHABET + "=", min_size=102, max_size=106).map(lambda s: "v1." + s)
codes = st.none() | st.text(max_size=7) | st.from_regex(r"\A[0-9]{5}\Z")


@given(token=st.text() | near_seed | near_v1, code=codes, now=st.floats())
def test_arbitrary_input_is_rejected_without_raising(
    token: str, code: str | None, now: float
) -> None:
    for action in Action:
        assert isinstance(verify(token, action, [KEY, OTHER_KEY], code), Rejected)
        assert isinstance(verify_v1(token, action, [KEY], now=now, code=code), Rejected)
        assert isinstance(verify_any(token, action, [KEY], now=now, code=code), Rejected)


# Keys, secrets, codes, reprs -----------------------------------------------------------------


def test_parse_key_accepts_hex() -> None:
    assert parse_key("deadbeef" * 8) == KEY
    assert parse_key(" " + "DEADBEEF" * 8 + "\n") == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "64 hex characters .* got 0"),
        ("ab" * 31, "64 hex characters .* got 62"),
        ("ab" * 33, "64 hex characters .* got 66"),
        ("zq" * 32, "only hex digits"),
        ("de ad" + "be" * 29 + "e", "only hex digits"),
        ("0x" + "ab" * 31, "only hex digits"),
    ],
)
def test_parse_key_errors_name_the_problem_without_echoing(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_key(text)
    assert "MAILROOM_SECRET_KEY" in str(info.value)
    if text:
        assert text.strip() not in str(info.value)
    assert info.value.__cause__ is None


def test_parse_keys() -> None:
    ring = parse_keys(f"{KEY.hex()}, {OTHER_KEY.hex()}")
    assert ring.signing_key == KEY
    assert tuple(ring) == (KEY, OTHER_KEY)
    with pytest.raises(ValueError, match=r"entry 2 of 2 .* got 0") as info:
        parse_keys(KEY.hex() + ",")
    assert KEY.hex() not in str(info.value)
    with pytest.raises(ValueError, match="entry 1 of 1"):
        parse_keys("")


def test_keyring_validates() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyRing([])
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing([KEY, b"short"])


def test_reprs_hide_secrets() -> None:
    ring = KeyRing([KEY, OTHER_KEY])
    verified = verify(SEED_ACTIVATION, ACT, ring)
    assert isinstance(verified, Verified)
    for text in (repr(ring), str(ring), f"{ring}", repr(verified), str(verified)):
        for material in (KEY, OTHER_KEY, SECRET):
            assert material.hex() not in text
            assert repr(material) not in text
    assert repr(ring) == f"KeyRing({hashlib.sha256(KEY).hexdigest()[:8]}, " + (
        f"{hashlib.sha256(OTHER_KEY).hexdigest()[:8]})"
    )
    assert SEED_ACTIVATION[:20] not in repr(verify(flip(SEED_ACTIVATION, 60), ACT, ring))


def test_new_secret_and_code() -> None:
    assert len(new_secret()) == 32
    assert new_secret() != new_secret()
    codes_seen = {new_code() for _ in range(2000)}
    assert all(len(c) == 5 and c.isascii() and c.isdigit() for c in codes_seen)
    assert len(codes_seen) > 1900  # uniform over 100000 values: collisions are rare
    assert any(c.startswith("0") for c in codes_seen)  # leading zeros are kept
