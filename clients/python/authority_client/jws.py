"""Strict decoding of compact JWS (RFC 7515) and of the JSON inside it, shared by the
access-token verifier (:mod:`authority_client.verify`) and the DPoP proof checker
(:mod:`authority_client.proof`), so both read a signed structure the same single way.

- Segments are canonical unpadded base64url: no padding, no ``+`` or ``/``, no stray
  characters, no non-zero trailing bits, so each structure has one spelling.
- JSON is UTF-8 without duplicate names, NaN or Infinity, numbers a double cannot hold,
  or nesting deeper than :data:`MAX_JSON_DEPTH`.
- Signatures are checked with ``cryptography``; ES256 takes the raw ``r || s`` form.

Every failure is :class:`MalformedJWS`; each caller turns it into its own error.
"""

from __future__ import annotations

import binascii
import dataclasses
import json
import math
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# The payload object and 32 levels of claims in it: as deep as a protobuf Struct can
# carry any claim (an object costs it three message levels, and protobuf stops at 100),
# so every valid token's claims can be passed on. Far below the depth at which the JSON
# parser would recurse out of stack.
MAX_JSON_DEPTH = 33
# JWK members of private or symmetric keys (RFC 7518 section 6): never in a public key.
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")  # by length % 4; 1 is never valid
# The last character of a segment whose length % 4 is 2 or 3 carries 4 or 2 unused bits,
# which must be zero: otherwise several strings decode to the same bytes.
_CANONICAL_LAST: tuple[frozenset[int], ...] = (
    frozenset(),
    frozenset(),
    frozenset(b"AQgw"),
    frozenset(b"AEIMQUYcgkosw048"),
)
# For the nesting check: strings go (their brackets are text), then everything but the
# brackets, which become parentheses; what is left must match a pattern of balanced
# parentheses at most MAX_JSON_DEPTH deep. Possessive loops: the regex never backtracks,
# and a bomb fails at the first level too many. UTF-8 continuation bytes are all >= 0x80,
# so working on the bytes is sound.
# A string left open runs to the end (even after a lone backslash): every match that
# starts succeeds, so no text is scanned twice.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKETS_AS_PARENTHESES = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _nesting_pattern(depth: int) -> re.Pattern[bytes]:
    level = rb"\(\)"
    for _ in range(depth - 1):
        level = rb"\((?:" + level + rb")*+\)"
    return re.compile(rb"(?:" + level + rb")*+")


_AT_MOST_MAX_DEPTH = _nesting_pattern(MAX_JSON_DEPTH)


class MalformedJWS(ValueError):
    """A compact JWS, a base64url segment or a JSON text is not in its one strict form."""


@dataclasses.dataclass(frozen=True, slots=True)
class CompactJWS:
    """The three decoded segments of a compact JWS and the bytes its signature covers."""

    signing_input: bytes
    header_json: bytes
    payload_json: bytes
    signature: bytes


def split_compact(text: str) -> CompactJWS:
    """The segments of ``text``, a compact JWS in canonical unpadded base64url; size limits
    are the caller's, checked before."""
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise MalformedJWS("not ASCII text") from None
    if _COMPACT_JWS.fullmatch(raw) is None:
        raise MalformedJWS("not three base64url segments")
    first = raw.index(b".")
    second = raw.index(b".", first + 1)
    return CompactJWS(
        signing_input=raw[:second],
        header_json=_b64decode(raw, 0, first),
        payload_json=_b64decode(raw, first + 1, second),
        signature=_b64decode(raw, second + 1, len(raw)),
    )


def b64url_decode(text: str) -> bytes:
    """One string of canonical unpadded base64url (empty allowed), e.g. a JWK member."""
    try:
        raw = text.encode("ascii")
    except (UnicodeEncodeError, AttributeError):
        raise MalformedJWS("not ASCII text") from None
    if _BASE64URL.fullmatch(raw) is None:
        raise MalformedJWS("not base64url")
    return _b64decode(raw, 0, len(raw))


def is_canonical_b64url(text: object, size: int) -> bool:
    """Whether ``text`` is the canonical unpadded base64url spelling of ``size`` bytes."""
    if type(text) is not str:
        return False
    try:
        return len(b64url_decode(text)) == size
    except MalformedJWS:
        return False


def _b64decode(raw: bytes, start: int, end: int) -> bytes:
    """One segment of canonical unpadded base64url (the alphabet is already checked)."""
    size = end - start
    if size % 4 == 1 or (size % 4 > 1 and raw[end - 1] not in _CANONICAL_LAST[size % 4]):
        raise MalformedJWS("not canonical base64url")
    try:
        return binascii.a2b_base64(raw[start:end].translate(_URLSAFE_TO_STANDARD) + _PADDING[size % 4])
    except binascii.Error:  # unreachable after the checks above; kept as a guard
        raise MalformedJWS("not base64url") from None


# --- strict JSON -----------------------------------------------------------------------


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one name: some readers take the first, some the last.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate name")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _double_int(text: str) -> int:
    value = int(text)
    float(value)  # OverflowError past a double's range: no consumer could hold it
    return value


def _double_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError("number out of range")
    return value


STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_unique_names,
    parse_constant=_no_constants,
    parse_int=_double_int,
    parse_float=_double_float,
)
"""A JSON decoder with the strict rules above, except the depth limit (see :func:`json_object`)."""


def json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object read strictly, or :class:`MalformedJWS`."""
    # Each bracket adds at most one level, so counting them is a sound first check; the
    # exact check runs only for texts with many brackets.
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and _too_deep(data):
        raise MalformedJWS("nested too deep")
    try:
        text = data.decode("utf-8")
        value, end = STRICT_JSON.raw_decode(text)
    except (ValueError, OverflowError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedJWS("not strict JSON") from None
    if end != len(text) or type(value) is not dict:
        raise MalformedJWS("not a JSON object")
    return value


def _too_deep(data: bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_JSON_DEPTH (or do not balance,
    which is broken JSON anyway); a few passes in C, whatever the input."""
    brackets = _JSON_STRING.sub(b"", data).translate(_BRACKETS_AS_PARENTHESES, _NOT_BRACKETS)
    return _AT_MOST_MAX_DEPTH.fullmatch(brackets) is None


def has_lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in ``value`` holds a lone surrogate (it has no UTF-8 form)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def has_nul_name(value: Any) -> bool:
    """Whether an object anywhere in ``value`` has a name holding NUL (U+0000): no claim's
    name at any depth may. ``value`` nests at most :data:`MAX_JSON_DEPTH` levels, as
    :func:`json_object` reads it."""
    if isinstance(value, dict):
        return any("\x00" in name or has_nul_name(item) for name, item in value.items())
    if isinstance(value, list):
        return any(map(has_nul_name, value))
    return False


# --- signatures --------------------------------------------------------------------------

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def verify_eddsa(key: ed25519.Ed25519PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature over ``signing_input``."""
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


def verify_es256(
    key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes, *, low_s_only: bool
) -> bool:
    """Whether ``signature`` (raw ``r || s``) is ``key``'s ES256 signature over
    ``signing_input``; with ``low_s_only``, ``s`` must be at most ``n / 2``."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_ORDER and 0 < s < P256_ORDER) or (low_s_only and s > P256_ORDER >> 1):
        return False
    try:
        key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def verify_rs256(key: rsa.RSAPublicKey, signing_input: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s RS256 (PKCS#1 v1.5, SHA-256) signature."""
    try:
        key.verify(signature, signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        return False
    return True
