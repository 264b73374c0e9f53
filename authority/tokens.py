"""Sign and verify access tokens: the one place PyJWT is called.

Verification runs in the order the design asks for and stops at the first failure:
size and structure → the key named by ``kid`` (its algorithm, never the header's) →
signature → required claims → exp/nbf with leeway → iss/aud. Revocation is checked
after this, by the caller. Every failure is an :class:`InvalidToken` carrying an
:class:`InvalidReason`; PyJWT's own exceptions stop here.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import re
from typing import Any

import jwt

from authority.keys import KeyRing, SigningKey

# Tokens are small; anything near this size is an attack, refused before decoding.
MAX_TOKEN_BYTES = 8 * 1024
ACCESS_TOKEN_TYPE = "at+jwt"
DEVICE_CLAIM = "device_id"
SESSION_CLAIM = "sid"
# Claims the authority sets itself; a sign-in may not supply them.
RESERVED_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", DEVICE_CLAIM, "typ", "cnf", "act", "azp", "client_id"}
)
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "jti", "sub", "iss", "aud", SESSION_CLAIM, DEVICE_CLAIM]
# Headers that would let a token choose its own verification key.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"})
# Three segments of unpadded base64url: one spelling per token, so a token cannot be
# replayed under a second string (PyJWT itself tolerates padding on the signature).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


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


class InvalidToken(Exception):
    """A token failed verification; ``reason`` says at which step."""

    def __init__(self, reason: InvalidReason) -> None:
        super().__init__(reason.name)
        self.reason = reason


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


_OPTIONS: dict[str, Any] = {"require": _REQUIRED_CLAIMS, "strict_aud": True}
_IDENTIFY_OPTIONS: dict[str, Any] = {**_OPTIONS, "strict_aud": False, "verify_aud": False, "verify_exp": False}


# The first matching class decides the reason, so subclasses come before their bases.
_PYJWT_REASONS: tuple[tuple[type[Exception], InvalidReason], ...] = (
    (jwt.InvalidSignatureError, InvalidReason.BAD_SIGNATURE),
    (jwt.InvalidAlgorithmError, InvalidReason.BAD_SIGNATURE),
    (jwt.InvalidKeyError, InvalidReason.BAD_SIGNATURE),
    (jwt.ExpiredSignatureError, InvalidReason.EXPIRED),
    (jwt.ImmatureSignatureError, InvalidReason.NOT_YET_VALID),
    (jwt.InvalidAudienceError, InvalidReason.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, InvalidReason.WRONG_ISSUER),
)


class TokenCodec:
    """Signs access tokens with the key ring's newest key and verifies them with any of its keys."""

    def __init__(self, keyring: KeyRing, issuer: str, leeway: int) -> None:
        self.keyring = keyring
        self.issuer = issuer
        self.leeway = leeway
        self._jwt = jwt.PyJWT()

    def use(self, keyring: KeyRing) -> None:
        """Signs and verifies with ``keyring`` from now on (after a rotation)."""
        self.keyring = keyring

    def sign(self, claims: AccessClaims) -> str:
        """The compact JWT for ``claims``, signed with the current signing key."""
        key = self.keyring.signing_key_at(claims.issued_at)
        payload = {
            **claims.extra,
            "iss": claims.issuer,
            "sub": claims.subject,
            "aud": claims.audience,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.token_id,
            SESSION_CLAIM: claims.session_id,
            DEVICE_CLAIM: claims.device_id,
        }
        headers = {"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        return self._jwt.encode(payload, key.private_key, algorithm=key.algorithm.value, headers=headers)

    def verify(self, token: str, audience: str) -> AccessClaims:
        """The claims of a valid token for ``audience``, or :class:`InvalidToken`."""
        return self._decode(token, audience, _OPTIONS)

    def identify(self, token: str) -> AccessClaims:
        """The claims of a token this authority signed, expired or not, for any audience.

        Only for logout, where a token names the session to end and is not trusted.
        """
        return self._decode(token, None, _IDENTIFY_OPTIONS)

    def _decode(self, token: str, audience: str | None, options: dict[str, Any]) -> AccessClaims:
        key = self._key_for(token)
        try:
            payload = self._jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm.value],
                audience=audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,  # type: ignore[arg-type]
            )
            return _claims(payload)
        except jwt.PyJWTError as exc:
            for kind, reason in _PYJWT_REASONS:
                if isinstance(exc, kind):
                    raise InvalidToken(reason) from None
            raise InvalidToken(InvalidReason.MALFORMED) from None
        except (ValueError, TypeError, OverflowError, RecursionError, KeyError):
            raise InvalidToken(InvalidReason.MALFORMED) from None

    def _key_for(self, token: str) -> SigningKey:
        """Reads the header without trusting it and returns the key it names."""
        header = _read_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("typ") != ACCESS_TOKEN_TYPE or _FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken(InvalidReason.MALFORMED)
        key = self.keyring.get(kid)
        if key is None:
            raise InvalidToken(InvalidReason.UNKNOWN_KEY)
        if header.get("alg") != key.algorithm.value:
            raise InvalidToken(InvalidReason.BAD_SIGNATURE)
        return key


def _read_header(token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN_BYTES or not _COMPACT_JWS.fullmatch(token):
        raise InvalidToken(InvalidReason.MALFORMED)
    segment = token[: token.index(".")]
    if len(segment) % 4 == 1:
        raise InvalidToken(InvalidReason.MALFORMED)
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidToken(InvalidReason.MALFORMED) from None
    if not isinstance(header, dict):
        raise InvalidToken(InvalidReason.MALFORMED)
    return header


def _claims(payload: dict[str, Any]) -> AccessClaims:
    for name in ("sub", "jti", "iss", "aud", SESSION_CLAIM, DEVICE_CLAIM):
        if not isinstance(payload[name], str):
            raise InvalidToken(InvalidReason.MALFORMED)
    for name in ("iat", "exp"):
        if type(payload[name]) is not int:
            raise InvalidToken(InvalidReason.MALFORMED)
    return AccessClaims(
        subject=payload["sub"],
        device_id=payload[DEVICE_CLAIM],
        session_id=payload[SESSION_CLAIM],
        token_id=payload["jti"],
        issuer=payload["iss"],
        audience=payload["aud"],
        issued_at=payload["iat"],
        expires_at=payload["exp"],
        extra={name: value for name, value in payload.items() if name not in RESERVED_CLAIMS},
    )
