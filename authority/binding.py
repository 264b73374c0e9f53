"""Device-bound sessions (RFC 9449, DPoP): which key a sign-in binds, and a refresh by it.

A sign-in that comes with a proof binds its session to the proof's key: the session
keeps the key's RFC 7638 thumbprint, its access tokens carry it as ``cnf.jkt``, and its
refresh token is traded only with a proof by the same key. The proofs themselves are
checked by the one :class:`~authority_client.proof.ProofChecker` of the process (the
validator shares it, so a jti used at sign-in cannot be replayed at validation). A
sign-in or refresh proof has no access token to hash, so ``ath`` is not checked.

Refusals say which check failed, in words, and never hold the proof: a sign-in's is
:class:`InvalidArgument` naming ``proof``, a refresh's :class:`RefreshTokenRejected`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authority_client.proof import InvalidProof, Proof, ProofChecker

from authority.config import Settings
from authority.errors import InvalidArgument, RefreshTokenRejected

BEARER = "Bearer"
DPOP = "DPoP"

# Each check of the proof checker, as a refusal says it.
_WORDS = {
    "size": "is larger than 8 KiB",
    "form": "is not a compact JWS of canonical base64url JSON",
    "typ": "typ must be dpop+jwt",
    "alg": "alg must be one of EdDSA, ES256 or RS256 (RS256 keys of 2048 bits or more)",
    "jwk": "jwk must be a public key of the type the alg needs, without private members",
    "signature": "the signature does not verify with the proof's jwk",
    "jti": "jti must be a string of 1 to 256 characters",
    "htm": "htm is not the method of the request",
    "htu": "htu is not the URI of the request",
    "iat": "iat is not within proof_max_age of now",
    "ath": "ath is not the hash of the access token",
    "key": "is signed by another key than the session is bound to",
    "replayed": "its jti was used already: a proof is good for one request",
    "replay-cache-full": "cannot be checked now: the replay cache is full of recent proofs; try again shortly",
    "replay-quota": "cannot be checked now: this device key has sent too many recent proofs; try again shortly",
    "unbound": "the session is not bound to a device key, so it takes no proof",
}


def proof_checker(settings: Settings, clock: Callable[[], float] = time.time) -> ProofChecker:
    """The process's one proof checker, as the settings configure it."""
    return ProofChecker(max_age=settings.proof_max_age, replay_cache_size=settings.proof_replay_cache_size, clock=clock)


def token_type(key_thumbprint: str) -> str:
    """The scheme tokens bound to ``key_thumbprint`` are sent with: DPoP, or Bearer for ""."""
    return DPOP if key_thumbprint else BEARER


def describe(refusal: InvalidProof) -> str:
    """Which check a proof failed, in words; never the proof itself."""
    return _WORDS.get(refusal.check, "is not a valid DPoP proof")


class Binding:
    """Checks the proofs of sign-ins and refreshes against the settings' requirement."""

    def __init__(self, proofs: ProofChecker, settings: Settings) -> None:
        self.proofs = proofs
        self._settings = settings

    def require(self, proof: Proof | None, audience: str) -> None:
        """Raises :class:`InvalidArgument` naming ``proof`` when a sign-in for ``audience``
        must come with one and did not (``require_proof_of_possession``)."""
        if proof is None and self._settings.proof_required_for(audience):
            raise InvalidArgument("proof", "is required: this authority binds sign-ins for this audience to a device key")

    def sign_in_key(self, proof: Proof | None, audience: str) -> str:
        """The thumbprint of the key a sign-in binds its session to ("" without a proof).

        Raises :class:`InvalidArgument` naming ``proof`` for a proof that is required
        and absent, or that fails a check."""
        self.require(proof, audience)
        if proof is None:
            return ""
        try:
            return self.proofs.check(proof)
        except InvalidProof as refusal:
            raise InvalidArgument("proof", describe(refusal)) from None

    def check_presented(self, proof: Proof | None, token: str, key_thumbprint: str, field: str) -> None:
        """Refuses (:class:`InvalidArgument` naming ``field``) an access token bound to
        ``key_thumbprint`` that comes without a valid proof by that key for it (``ath``
        checked), and a bearer token (``""``) that comes with a proof: for a call that a
        copy of the token must not be enough for, such as signing the other devices out."""
        if not key_thumbprint:
            if proof is not None:
                raise InvalidArgument(field, _WORDS["unbound"])
            return
        if proof is None:
            raise InvalidArgument(field, "is required: the token is bound to a device key")
        try:
            self.proofs.check(proof, access_token=token, key_thumbprint=key_thumbprint)
        except InvalidProof as refusal:
            raise InvalidArgument(field, describe(refusal)) from None

    def check_refresh(self, proof: Proof | None, key_thumbprint: str) -> None:
        """Refuses (:class:`RefreshTokenRejected`) a refresh of a session bound to
        ``key_thumbprint`` without a valid proof by that key, and a refresh of a bearer
        session (``""``) that comes with a proof: that proof binds nothing, and taking it
        would let a client believe its tokens were bound."""
        if not key_thumbprint:
            if proof is not None:
                raise RefreshTokenRejected(f"proof: {_WORDS['unbound']}")
            return
        if proof is None:
            raise RefreshTokenRejected("proof: is required: the session is bound to a device key")
        try:
            self.proofs.check(proof, key_thumbprint=key_thumbprint)
        except InvalidProof as refusal:
            raise RefreshTokenRejected(f"proof: {describe(refusal)}") from None
