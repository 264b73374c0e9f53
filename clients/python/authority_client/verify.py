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
   in a claim's name at any depth (``{"profile": {"a\\u0000b": 1}}`` is as malformed as a
   top-level one; the authority issues none; the values of application claims may hold
   one). No string anywhere holds a lone surrogate: it has no UTF-8 form, so it
   could not be passed on. ``cnf``, when present, is an object with exactly one member,
   ``jkt``: a 43-character canonical base64url RFC 7638 thumbprint (the key the token is
   bound to); any other confirmation is refused, never taken as a bearer token.
6. **Signature** (``BAD_SIGNATURE``), over the bytes of the first two segments; an
   ES256 signature must be low-S (``s <= n/2``), so ``(r, n - s)`` is not a second
   spelling of a valid signature.
7. **Time** (``EXPIRED``, ``NOT_YET_VALID``), with the leeway: expired when
   ``exp <= now - leeway``; not yet valid when ``nbf`` or ``iat`` is after ``now + leeway``.
8. **Issuer** (``WRONG_ISSUER``): ``iss`` equals the issuer exactly.
9. **Audience** (``WRONG_AUDIENCE``): ``aud`` is the expected audience, exactly. The
   authority always issues one string; a list is refused even when it holds the
   audience, as the token then serves several services at once.
10. **Binding** (``PROOF_REQUIRED``, ``BAD_PROOF``): a bound token needs a DPoP proof
    (RFC 9449) of its key for this token, checked by
    :class:`authority_client.proof.ProofChecker`; a bearer token must come without one.

The strict decoding of steps 1 and 2 is :mod:`authority_client.jws`, shared with the
proof checker. Steps 1 to 5 read only the token and the key set; nothing reaches the
network, a file or a database before the signature has passed. Revocation is not checked here: the
authority checks it after, and a consumer checks it against its mirror of revocations.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Union

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authority_client import jws
from authority_client.frozen import FrozenDict, frozen
from authority_client.jws import MAX_JSON_DEPTH as MAX_JSON_DEPTH

if TYPE_CHECKING:
    from authority_client.proof import Proof, ProofChecker

PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

# Tokens are small; anything near this size is an attack, refused before decoding.
MAX_TOKEN_BYTES = 8 * 1024
ACCESS_TOKEN_TYPE = "at+jwt"
# Claims with a meaning of their own (RFC 7519, 9068, 8693, 9449): never application claims.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "device_id", "typ", "cnf", "act", "azp", "client_id"}
)
# Headers that would let a token choose its own verification key, or add rules of its own.
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
# The latest second a protobuf Timestamp holds (9999-12-31T23:59:59Z).
_MAX_TIME = 253_402_300_799

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
    # Verified claims are read-only, nested values too (authority_client.frozen): they are
    # shared by every call that presents the token.
    extra: dict[str, Any]
    # The RFC 7638 thumbprint of the device key the token is bound to (cnf.jkt); "" for
    # a bearer token.
    key_thumbprint: str = ""


# Called with a token's verified claims before its proof is spent; raises to refuse it
# (TokenVerifier.check_binding).
Admit = Callable[[AccessClaims], object]

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
        return jws.verify_eddsa(self.public_key, signing_input, signature)


@dataclasses.dataclass(frozen=True, slots=True)
class _ES256Key(VerificationKey):
    algorithm: ClassVar[str] = "ES256"
    public_key: ec.EllipticCurvePublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        # Low S only: (r, n - s) verifies as well as (r, s), and a token has one spelling.
        return jws.verify_es256(self.public_key, signing_input, signature, low_s_only=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _RS256Key(VerificationKey):
    algorithm: ClassVar[str] = "RS256"
    public_key: rsa.RSAPublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return jws.verify_rs256(self.public_key, signing_input, signature)


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
            document = jws.STRICT_JSON.decode(jwks_json)
        except (OverflowError, RecursionError):
            raise ValueError("the JWK set is not well-formed JSON") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list) or not all(isinstance(jwk, dict) for jwk in keys):
            raise ValueError("a JWK set is an object with a list of keys")
        return cls(key for jwk in keys if (key := _from_jwk(jwk)) is not None)

    def get(self, kid: str) -> VerificationKey | None:
        """The key named ``kid``, or None."""
        return self._by_kid.get(kid)

    def without(self, kids: Iterable[str]) -> KeySet:
        """This set but the keys named in ``kids``."""
        left_out = frozenset(kids)
        return KeySet(key for kid, key in self._by_kid.items() if kid not in left_out)

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
    if jws.PRIVATE_JWK_MEMBERS & jwk.keys():
        raise ValueError("a JWK set of verification keys must not hold private keys")
    try:
        public_key = _JWK_PARSERS[kty](jwk)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"key {jwk.get('kid')!r} is not a valid {kty} JWK") from error
    return _verification_key(jwk.get("kid"), algorithm, public_key)  # type: ignore[arg-type]


def _json_object(data: bytes) -> dict[str, Any]:
    """A UTF-8 JSON object read strictly; MALFORMED otherwise."""
    try:
        return jws.json_object(data)
    except jws.MalformedJWS:
        raise InvalidToken(_MALFORMED) from None


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
        proofs: ProofChecker | None = None,
    ) -> None:
        # A plain attribute: assign a new KeySet to rotate keys, even while others verify.
        self.keys = keys
        self.issuer = issuer
        self.leeway = leeway
        self.clock = clock
        if proofs is None:
            # Imported here: proof.py builds on this module (InvalidToken, InvalidReason).
            from authority_client.proof import ProofChecker

            proofs = ProofChecker(clock=clock)
        self.proofs = proofs

    def verify(
        self, token: str, audience: str, proof: Proof | None = None, *, admit: Admit | None = None
    ) -> AccessClaims:
        """The claims of a valid token for ``audience``, or :class:`InvalidToken`: steps 1 to
        9, then the device binding (step 10, :meth:`check_binding`) with ``proof``, the DPoP
        proof that came with the token, if any.

        Revocation is the caller's to check. ``admit``, if given, is handed to
        :meth:`check_binding`."""
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
        claims = _claims(payload)
        self.check_binding(claims, token, proof, admit=admit)
        return claims

    def check_binding(
        self, claims: AccessClaims, token: str, proof: Proof | None, *, admit: Admit | None = None
    ) -> None:
        """Step 10, for the verified ``claims`` of ``token``: a token bound to a device key
        needs a valid proof of that key (``PROOF_REQUIRED`` without one, ``BAD_PROOF``,
        an :class:`~authority_client.proof.InvalidProof`, for a bad one); a bearer token
        must come without a proof (``BAD_PROOF``, check ``unbound``).

        A cache that skips the signature of a token it has seen must still call this on
        every hit: a proof is good once.

        ``admit``, if given, is called with ``claims`` once the proof passed every check
        but before its jti is spent, and may raise to refuse the token: a revocation check
        there keeps a revoked token's calls from spending their key's replay quota. The
        refusals keep their order (a bad proof is still BAD_PROOF)."""
        if claims.key_thumbprint:
            if proof is None:
                raise InvalidToken(InvalidReason.PROOF_REQUIRED)
            before_spending = None if admit is None else functools.partial(admit, claims)
            self.proofs.check(
                proof, access_token=token, key_thumbprint=claims.key_thumbprint, before_spending=before_spending
            )
        elif proof is not None:
            from authority_client.proof import InvalidProof

            raise InvalidProof("unbound")

    def identify(self, token: str) -> AccessClaims:
        """The claims of a token signed by a key of the set for this issuer, expired or not,
        for any audience (``aud`` must still be one string), bound or not, without a proof.

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
            segments = jws.split_compact(token)
            header = jws.json_object(segments.header_json)
            payload = jws.json_object(segments.payload_json)
        except jws.MalformedJWS:
            raise InvalidToken(_MALFORMED) from None

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
        _check_claims(payload, segments.payload_json)
        if not key.verify(segments.signing_input, segments.signature):
            raise InvalidToken(_BAD_SIGNATURE)
        return payload


_STRING_CLAIMS = ("sub", "sid", "device_id", "jti", "iss")
_TIME_CLAIMS = ("exp", "iat", "nbf")
# RFC 7638 SHA-256 thumbprint: 32 bytes, 43 characters of base64url.
_THUMBPRINT_BYTES = 32


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
    # A device-bound token (RFC 9449 cnf) names its key by thumbprint and nothing else:
    # any other confirmation is one no verifier here could check, so it is refused rather
    # than taken as a bearer token (no downgrade).
    if "cnf" in payload:
        cnf = payload["cnf"]
        if (
            type(cnf) is not dict
            or cnf.keys() != {"jkt"}
            or not jws.is_canonical_b64url(cnf["jkt"], _THUMBPRINT_BYTES)
        ):
            raise InvalidToken(_MALFORMED)
    # NUL and surrogates can only be written as \u escapes, so most tokens skip this.
    if b"\\u" in payload_json:
        if (
            any("\x00" in payload[name] for name in _STRING_CLAIMS)
            or (aud_type is str and "\x00" in payload["aud"])
            or jws.has_nul_name(payload)
            or jws.has_lone_surrogate(payload)
        ):
            raise InvalidToken(_MALFORMED)


def _claims(payload: dict[str, Any]) -> AccessClaims:
    cnf = payload.get("cnf")
    return AccessClaims(
        subject=payload["sub"],
        device_id=payload["device_id"],
        session_id=payload["sid"],
        token_id=payload["jti"],
        issuer=payload["iss"],
        audience=payload["aud"],
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        extra=FrozenDict({name: frozen(value) for name, value in payload.items() if name not in RESERVED_CLAIMS}),
        key_thumbprint="" if cnf is None else cnf["jkt"],
    )
