"""Sign and verify access tokens: the one place PyJWT is called to sign.

Verification is :class:`authority_client.verify.TokenVerifier`, the same code a
consumer service runs locally, so the authority and its consumers reject the same
tokens for the same reasons; its module docstring gives the order of the checks.
Revocation is checked after it, by the caller. ES256 signatures are made low-S here,
as the verifier accepts no other. A token of a session bound to a device key carries
``cnf: {"jkt": <thumbprint>}`` (RFC 9449 section 6.1), and verifies only with a proof by
that key, checked by the process's one proof checker.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from authority_client import jws
from authority_client.proof import Proof, ProofChecker
from authority_client.verify import (
    ACCESS_TOKEN_TYPE,
    MAX_TOKEN_BYTES,
    RESERVED_CLAIMS,
    AccessClaims,
    Admit,
    InvalidReason,
    InvalidToken,
    KeySet,
    TokenVerifier,
)

from authority.claims import MAX_CLAIM_DEPTH
from authority.config import Algorithm
from authority.errors import InvalidArgument
from authority.keys import KeyRing

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEVICE_CLAIM",
    "MAX_TOKEN_BYTES",
    "RESERVED_CLAIMS",
    "SESSION_CLAIM",
    "AccessClaims",
    "InvalidReason",
    "InvalidToken",
    "Proof",
    "TokenCodec",
]

DEVICE_CLAIM = "device_id"
SESSION_CLAIM = "sid"
CONFIRMATION_CLAIM = "cnf"

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class TokenCodec:
    """Signs access tokens with the key ring's newest key and verifies them with any of its keys."""

    def __init__(
        self, keyring: KeyRing, issuer: str, leeway: int, clock: Callable[[], float] = time.time,
        proofs: ProofChecker | None = None,
    ) -> None:
        self.issuer = issuer
        self.leeway = leeway
        self._jwt = jwt.PyJWT()
        # ``clock`` is for tests that verify at a fixed time (the shared token corpus).
        # ``proofs`` is the process's one proof checker, shared with sign-in and refresh.
        self._verifier = TokenVerifier(_published(keyring), issuer=issuer, leeway=leeway, clock=clock, proofs=proofs)
        # Logout alone also accepts the retained public halves of purged keys.
        self._logout_verifier = TokenVerifier(_for_logout(keyring), issuer=issuer, leeway=leeway, clock=clock)
        self._keyring = keyring

    @property
    def keyring(self) -> KeyRing:
        """The keys signed and verified with; assigning a new ring rotates both at once."""
        return self._keyring

    @keyring.setter
    def keyring(self, keyring: KeyRing) -> None:
        self._verifier.keys = _published(keyring)
        self._logout_verifier.keys = _for_logout(keyring)
        self._keyring = keyring

    def sign(self, claims: AccessClaims) -> str:
        """The compact JWT for ``claims``, signed with the current signing key.

        Raises :class:`InvalidArgument` for claims nested deeper than a token may be, or
        with a NUL in a name: the authority never issues a token its verifier would refuse."""
        check_claims_depth(claims.extra)
        check_claim_names(claims.extra)
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
        if claims.key_thumbprint:
            payload[CONFIRMATION_CLAIM] = {"jkt": claims.key_thumbprint}
        headers = {"kid": key.kid, "typ": ACCESS_TOKEN_TYPE}
        token = self._jwt.encode(payload, key.private_key, algorithm=key.algorithm.value, headers=headers)
        if key.algorithm is Algorithm.ES256:
            token = _low_s(token)
        return token

    def verify(
        self, token: str, audience: str, proof: Proof | None = None, *, admit: Admit | None = None
    ) -> AccessClaims:
        """The claims of a valid token for ``audience``, or :class:`InvalidToken`; a bound
        token needs a valid ``proof`` by its key (PROOF_REQUIRED, BAD_PROOF). ``admit`` may
        refuse the token after its proof passed and before the proof is spent
        (:meth:`~authority_client.verify.TokenVerifier.check_binding`)."""
        return self._verifier.verify(token, audience, proof, admit=admit)

    def check_binding(
        self, claims: AccessClaims, token: str, proof: Proof | None, *, admit: Admit | None = None
    ) -> None:
        """The proof check of :meth:`verify` alone, for a token whose claims were verified
        before: a proof is good for one request, so it is checked on every one."""
        self._verifier.check_binding(claims, token, proof, admit=admit)

    def identify(self, token: str) -> AccessClaims:
        """The claims of a token this authority signed, expired or not, for any audience,
        also with a key purged since (its public half retained, see
        :mod:`authority.retained_keys`).

        Only for logout, where a token names the session to end and is not trusted.
        """
        return self._logout_verifier.identify(token)


def check_claims_depth(extra: Mapping[str, Any]) -> None:
    """Raises :class:`InvalidArgument` for extra claims nested deeper than a token may be
    (their object is the payload's, the first of MAX_JSON_DEPTH levels: each claim's
    value has MAX_CLAIM_DEPTH)."""
    if _depth(extra) > MAX_CLAIM_DEPTH + 1:
        raise InvalidArgument("claims", f"must not nest more than {MAX_CLAIM_DEPTH} levels deep")


def check_claim_names(extra: Mapping[str, Any]) -> None:
    """Raises :class:`InvalidArgument` for a NUL in the name of a claim or of a member of
    any object in one, at any depth: the verifiers refuse such a token as MALFORMED
    (:func:`authority_client.jws.has_nul_name`). Call it on claims whose depth is checked."""
    if jws.has_nul_name(dict(extra)):
        raise InvalidArgument("claims", "names must not contain NUL characters")


def _depth(value: Any) -> int:
    """How deep objects and lists nest in ``value`` (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _published(keyring: KeyRing) -> KeySet:
    # The authority verifies with the very JWK Set it publishes, read by the consumers'
    # code: a key that set could not carry fails here first, not only at a consumer.
    return KeySet.from_jwks(keyring.jwks_json)


def _for_logout(keyring: KeyRing) -> KeySet:
    published = [(key.kid, key.algorithm.value, key.public_key) for key in keyring]
    retained = [(key.kid, key.algorithm.value, key.public_key) for key in keyring.retained]
    return KeySet.of(published + retained)


def _low_s(token: str) -> str:
    """The token with its ES256 signature ``(r, s)`` spelled ``(r, n - s)`` when s > n/2:
    both verify, and the verifier takes only the low one, so a token has one spelling."""
    signing_input, _, encoded = token.rpartition(".")
    signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    s = int.from_bytes(signature[32:], "big")
    if s <= _P256_ORDER >> 1:
        return token
    low = signature[:32] + (_P256_ORDER - s).to_bytes(32, "big")
    return f"{signing_input}.{base64.urlsafe_b64encode(low).rstrip(b'=').decode()}"
