"""Verify access tokens of the token authority, in process and without I/O.

The authority verifies with this module too, so a consumer service that verifies
locally rejects exactly the tokens the authority rejects, for the same reason.

A token is checked in this order, and the first failed step gives the reason:

1. **Shape** (``MALFORMED``): at most 8 KiB; three segments of canonical unpadded
   base64url (one spelling per token: no padding, no ``+`` or ``/``, no stray
   characters, no non-zero trailing bits); header and payload are UTF-8 JSON objects
   without duplicate names, NaN or Infinity, numbers a double cannot hold, or nesting
   deeper than :data:`MAX_JSON_DEPTH`.
2. **Header** (``MALFORMED``): ``typ`` is ``at+jwt`` (RFC 9068), ``kid`` and ``alg``
   are strings, and no header lets the token pick its own key or add rules
   (``jku``, ``x5u``, ``jwk``, ``x5c``, ``x5t``, ``x5t#S256``, ``crit``).
3. **Key** (``UNKNOWN_KEY``): ``kid`` names a key of the set.
4. **Algorithm** (``BAD_SIGNATURE``): ``alg`` is the algorithm of that key. The key
   decides, never the header, so ``none`` and HMAC keyed with a public key cannot verify.
5. **Claims** (``MALFORMED``): ``sub``, ``sid``, ``device_id``, ``jti`` and ``iss`` are
   strings; ``exp``, ``iat`` and ``nbf`` are integers (not booleans, not floats) that
   fit a protobuf Timestamp; ``aud`` is a string or a list. No NUL in those strings, in ``aud`` or
   in a claim's name (the authority issues none; the values of application claims may
   hold one). No string anywhere holds a lone surrogate: it has no UTF-8 form, so it
   could not be passed on. No ``cnf``: a device-bound token is only good with a proof
   of its key, which nothing checks yet, so it is refused rather than taken without one.
6. **Signature** (``BAD_SIGNATURE``), over the bytes of the first two segments; an
   ES256 signature must be low-S (``s <= n/2``), so ``(r, n - s)`` is not a second
   spelling of a valid signature.
7. **Time** (``EXPIRED``, ``NOT_YET_VALID``), with the leeway: expired when
   ``exp <= now - leeway``; not yet valid when ``nbf`` or ``iat`` is after ``now + leeway``.
8. **Issuer** (``WRONG_ISSUER``): ``iss`` equals the issuer exactly.
9. **Audience** (``WRONG_AUDIENCE``): ``aud`` is the expected audience, exactly. The
   authority always issues one string; a list is refused even when it holds the
   audience, as the token then serves several services at once.

Steps 1 to 5 read only the token and the key set; nothing reaches the network, a file or
a database before the signature has passed. Revocation is not checked here: the
authority checks it after, and a consumer checks it against its mirror of revocations.
"""

from __future__ import annotations

import abc
import binascii
import dataclasses
import enum
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Union

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

# Tokens are small; anything near this size is an attack, refused before decoding.
MAX_TOKEN_BYTES = 8 * 1024
# The payload object and 32 levels of claims in it: as deep as a protobuf Struct can
# carry any claim (an object costs it three message levels, and protobuf stops at 100),
# so every valid token's claims can be passed on. Far below the depth at which the JSON
# parser would recurse out of stack.
MAX_JSON_DEPTH = 33
ACCESS_TOKEN_TYPE = "at+jwt"
# Claims with a meaning of their own (RFC 7519, 9068, 8693, 9449): never application claims.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "device_id", "typ", "cnf", "act", "azp", "client_id"}
)
# Headers that would let a token choose its own verification key, or add rules of its own.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
# The latest second a protobuf Timestamp holds (9999-12-31T23:59:59Z).
_MAX_TIME = 253_402_300_799

_COMPACT_JWS = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
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


class InvalidReason(enum.IntEnum):
    """Why a token is not valid; the numbers are those of ``authority.v1.InvalidReason``."""

    MALFORMED = 1
    BAD_SIGNATURE = 2
    UNKNOWN_KEY = 3
    EXPIRED = 4
    NOT_YET_VALID = 5
    WRONG_AUDIENCE = 6
    WRONG_ISSUER = 7
    REVOKED = 8
    PROOF_REQUIRED = 9
    BAD_PROOF = 10


class RevocationCause(enum.IntEnum):
    """Why a revoked token's session was revoked; the numbers are those of
    ``authority.v1.RevocationCause``."""

    UNSPECIFIED = 0
    REPLACED_BY_SIGN_IN = 1
    LOGGED_OUT = 2
    SIGNED_OUT_EVERYWHERE = 3
    SESSION_REVOKED = 4
    REFRESH_TOKEN_REUSED = 5
    OTHER_DEVICES_SIGNED_OUT = 6


class InvalidToken(Exception):
    """A token failed verification; ``reason`` says at which step. The message is the
    reason's name and never quotes the token."""

    def __init__(
        self,
        reason: InvalidReason,
        cause: RevocationCause | None = None,
        *,
        replaced_by_device_id: str = "",
        replaced_by_device_name: str = "",
    ) -> None:
        super().__init__(reason.name)
        self.reason = reason
        # For REVOKED, when known: why, and for a replacement the device that signed in.
        self.cause = cause
        self.replaced_by_device_id = replaced_by_device_id
        self.replaced_by_device_name = replaced_by_device_name


@dataclasses.dataclass(frozen=True, slots=True)
class AccessClaims:
    """What an access token says, once verified (or before it is signed)."""

    subject: str
    device_id: str
    session_id: str
    token_id: str
    issuer: str
    audience: str
    issued_at: int
    expires_at: int
    extra: dict[str, Any]


_MALFORMED = InvalidReason.MALFORMED
_BAD_SIGNATURE = InvalidReason.BAD_SIGNATURE


# --- keys ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class VerificationKey(abc.ABC):
    """A public key and the one algorithm it verifies."""

    kid: str
    public_key: PublicKey
    algorithm: ClassVar[str]

    @abc.abstractmethod
    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's over ``signing_input``."""


@dataclasses.dataclass(frozen=True, slots=True)
class _EdDSAKey(VerificationKey):
    algorithm: ClassVar[str] = "EdDSA"
    public_key: ed25519.Ed25519PublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


@dataclasses.dataclass(frozen=True, slots=True)
class _ES256Key(VerificationKey):
    algorithm: ClassVar[str] = "ES256"
    public_key: ec.EllipticCurvePublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        # Low S only: (r, n - s) verifies as well as (r, s), and a token has one spelling.
        if not (0 < r < _P256_ORDER and 0 < s <= _P256_ORDER >> 1):
            return False
        try:
            self.public_key.verify(encode_dss_signature(r, s), signing_input, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True


_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


@dataclasses.dataclass(frozen=True, slots=True)
class _RS256Key(VerificationKey):
    algorithm: ClassVar[str] = "RS256"
    public_key: rsa.RSAPublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, signing_input, _PKCS1V15, _SHA256)
        except InvalidSignature:
            return False
        return True


def _verification_key(kid: str, algorithm: str, public_key: object) -> VerificationKey:
    """Raises ValueError when the key is not one ``algorithm`` verifies with."""
    if not isinstance(kid, str) or not kid:
        raise ValueError("a key needs a kid")
    if algorithm == "EdDSA" and isinstance(public_key, ed25519.Ed25519PublicKey):
        return _EdDSAKey(kid, public_key)
    if algorithm == "ES256" and isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ValueError(f"key {kid}: ES256 needs a P-256 key")
        return _ES256Key(kid, public_key)
    if algorithm == "RS256" and isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise ValueError(f"key {kid}: an RS256 key needs at least 2048 bits")
        return _RS256Key(kid, public_key)
    raise ValueError(f"key {kid} is not a public {algorithm} key")


# Key types, curves and algorithms a JWK Set may hold; others are skipped, not refused.
_JWK_ALGORITHMS = {("OKP", "Ed25519", "EdDSA"), ("EC", "P-256", "ES256"), ("RSA", None, "RS256")}
_JWK_PARSERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "OKP": OKPAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "RSA": RSAAlgorithm.from_jwk,
}
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeySet:
    """An immutable set of public verification keys, by kid."""

    __slots__ = ("_by_kid", "kids")

    def __init__(self, keys: Iterable[VerificationKey] = ()) -> None:
        by_kid: dict[str, VerificationKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"two keys named {key.kid}")
            by_kid[key.kid] = key
        self._by_kid = by_kid
        self.kids: frozenset[str] = frozenset(by_kid)

    @classmethod
    def of(cls, keys: Iterable[tuple[str, str, PublicKey]]) -> KeySet:
        """The set of ``(kid, algorithm, public key)`` triples; ValueError when a key does
        not fit its algorithm."""
        return cls(_verification_key(kid, algorithm, public_key) for kid, algorithm, public_key in keys)

    @classmethod
    def from_jwks(cls, jwks_json: str) -> KeySet:
        """The keys of a JWK Set (``GetSigningKeys``). Keys of other types or algorithms, or
        not for signatures, are skipped; a set that is not well-formed is a ValueError."""
        try:
            document = _STRICT_JSON.decode(jwks_json)
        except (OverflowError, RecursionError):
            raise ValueError("the JWK set is not well-formed JSON") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list) or not all(isinstance(jwk, dict) for jwk in keys):
            raise ValueError("a JWK set is an object with a list of keys")
        return cls(key for jwk in keys if (key := _from_jwk(jwk)) is not None)

    def get(self, kid: str) -> VerificationKey | None:
        """The key named ``kid``, or None."""
        return self._by_kid.get(kid)

    def __len__(self) -> int:
        return len(self._by_kid)

    def __repr__(self) -> str:
        return f"KeySet({sorted(self.kids)!r})"


def _from_jwk(jwk: dict[str, Any]) -> VerificationKey | None:
    kind = (jwk.get("kty"), jwk.get("crv"), jwk.get("alg"))
    if not all(member is None or type(member) is str for member in kind):
        return None
    if kind not in _JWK_ALGORITHMS or jwk.get("use", "sig") != "sig":
        return None
    kty, _, algorithm = kind
    if _PRIVATE_JWK_MEMBERS & jwk.keys():
        raise ValueError("a JWK set of verification keys must not hold private keys")
    try:
        public_key = _JWK_PARSERS[kty](jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"key {jwk.get('kid')!r} is not a valid {kty} JWK") from error
    return _verification_key(jwk.get("kid"), algorithm, public_key)  # type: ignore[arg-type]


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


_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_unique_names,
    parse_constant=_no_constants,
    parse_int=_double_int,
    parse_float=_double_float,
)


def _json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object read strictly; MALFORMED otherwise."""
    # Each bracket adds at most one level, so counting them is a sound first check; the
    # exact check runs only for tokens with many brackets.
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and _too_deep(data):
        raise InvalidToken(_MALFORMED)
    try:
        text = data.decode("utf-8")
        value, end = _STRICT_JSON.raw_decode(text)
    except (ValueError, OverflowError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidToken(_MALFORMED) from None
    if end != len(text) or type(value) is not dict:
        raise InvalidToken(_MALFORMED)
    return value


def _too_deep(data: bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_JSON_DEPTH (or do not balance,
    which is broken JSON anyway); a few passes in C, whatever the input."""
    brackets = _JSON_STRING.sub(b"", data).translate(_BRACKETS_AS_PARENTHESES, _NOT_BRACKETS)
    return _AT_MOST_MAX_DEPTH.fullmatch(brackets) is None


def _lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


# --- the verifier ----------------------------------------------------------------------


class TokenVerifier:
    """Verifies access tokens against a key set; see the module docstring for the steps."""

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        leeway: float = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # A plain attribute: assign a new KeySet to rotate keys, even while others verify.
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self.clock = clock

    def verify(self, token: str, audience: str) -> AccessClaims:
        """The claims of a valid token for ``audience``, or :class:`InvalidToken`.

        Revocation is the caller's to check."""
        payload = self._signed_payload(token)
        now = self.clock()
        leeway = self.leeway
        if payload["exp"] <= now - leeway:
            raise InvalidToken(InvalidReason.EXPIRED)
        if payload["nbf"] > now + leeway or payload["iat"] > now + leeway:
            raise InvalidToken(InvalidReason.NOT_YET_VALID)
        if payload["iss"] != self.issuer:
            raise InvalidToken(InvalidReason.WRONG_ISSUER)
        if payload["aud"] != audience:
            raise InvalidToken(InvalidReason.WRONG_AUDIENCE)
        return _claims(payload)

    def identify(self, token: str) -> AccessClaims:
        """The claims of a token signed by a key of the set for this issuer, expired or not,
        for any audience (``aud`` must still be one string).

        For logout only, where the token names the session to end and is not trusted."""
        payload = self._signed_payload(token)
        if payload["iss"] != self.issuer:
            raise InvalidToken(InvalidReason.WRONG_ISSUER)
        if type(payload["aud"]) is not str:
            raise InvalidToken(_MALFORMED)
        return _claims(payload)

    def _signed_payload(self, token: str) -> dict[str, Any]:
        """Steps 1 to 6: the payload of a well-formed token with a good signature."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken(_MALFORMED)
        try:
            raw = token.encode("ascii")
        except (UnicodeEncodeError, AttributeError):
            raise InvalidToken(_MALFORMED) from None
        if _COMPACT_JWS.fullmatch(raw) is None:
            raise InvalidToken(_MALFORMED)
        first = raw.index(b".")
        second = raw.index(b".", first + 1)
        header_json = _b64decode(raw, 0, first)
        payload_json = _b64decode(raw, first + 1, second)
        signature = _b64decode(raw, second + 1, len(raw))
        header = _json_object(header_json)
        payload = _json_object(payload_json)

        kid = header.get("kid")
        algorithm = header.get("alg")
        if (
            header.get("typ") != ACCESS_TOKEN_TYPE
            or type(kid) is not str
            or type(algorithm) is not str
            or not FORBIDDEN_HEADERS.isdisjoint(header)
        ):
            raise InvalidToken(_MALFORMED)
        key = self.keys.get(kid)
        if key is None:
            raise InvalidToken(InvalidReason.UNKNOWN_KEY)
        if algorithm != key.algorithm:
            raise InvalidToken(_BAD_SIGNATURE)
        _check_claims(payload, payload_json)
        if not key.verify(raw[:second], signature):
            raise InvalidToken(_BAD_SIGNATURE)
        return payload


def _b64decode(raw: bytes, start: int, end: int) -> bytes:
    """One segment of canonical unpadded base64url (the alphabet is already checked)."""
    size = end - start
    if size % 4 == 1 or (size % 4 > 1 and raw[end - 1] not in _CANONICAL_LAST[size % 4]):
        raise InvalidToken(_MALFORMED)
    try:
        return binascii.a2b_base64(raw[start:end].translate(_URLSAFE_TO_STANDARD) + _PADDING[size % 4])
    except binascii.Error:  # unreachable after the checks above; kept as a guard
        raise InvalidToken(_MALFORMED) from None


_STRING_CLAIMS = ("sub", "sid", "device_id", "jti", "iss")
_TIME_CLAIMS = ("exp", "iat", "nbf")


def _check_claims(payload: dict[str, Any], payload_json: bytes) -> None:
    """Step 5: the claims every access token has, with their exact types."""
    for name in _STRING_CLAIMS:
        if type(payload.get(name)) is not str:
            raise InvalidToken(_MALFORMED)
    for name in _TIME_CLAIMS:
        value = payload.get(name)
        # type(), not isinstance: True is an int to Python but not a time.
        if type(value) is not int or not 0 <= value <= _MAX_TIME:
            raise InvalidToken(_MALFORMED)
    # RFC 7519 lets aud be a string or a list; anything else is no audience at all.
    aud_type = type(payload.get("aud"))
    if aud_type is not str and aud_type is not list:
        raise InvalidToken(_MALFORMED)
    # A token bound to a device key (RFC 9449 ``cnf``) is good only with a proof of that
    # key. Proof checking arrives with device binding; until then such a token is refused
    # outright, never accepted as a plain bearer token (no downgrade).
    if "cnf" in payload:
        raise InvalidToken(_MALFORMED)
    # NUL and surrogates can only be written as \u escapes, so most tokens skip this.
    if b"\\u" in payload_json:
        if (
            any("\x00" in payload[name] for name in _STRING_CLAIMS)
            or (aud_type is str and "\x00" in payload["aud"])
            or any("\x00" in name for name in payload)
            or _lone_surrogate(payload)
        ):
            raise InvalidToken(_MALFORMED)


def _claims(payload: dict[str, Any]) -> AccessClaims:
    return AccessClaims(
        subject=payload["sub"],
        device_id=payload["device_id"],
        session_id=payload["sid"],
        token_id=payload["jti"],
        issuer=payload["iss"],
        audience=payload["aud"],
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        extra={name: value for name, value in payload.items() if name not in RESERVED_CLAIMS},
    )
