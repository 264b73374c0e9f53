"""Validate an access token: the verification in tokens.py, then the revocation mirror.

This is the hot path of the authority. It touches no database and no file: the keys
and the live revocations are in memory. When the revocation mirror has not been
confirmed current for longer than ``max_staleness`` it answers nothing at all
(:class:`StaleView`): no answer is better than a wrong one.

A token seen before skips the signature check: its claims are remembered, keyed by the
exact token string and the audience asked for, until the token expires (with the
leeway, as verification counts it). Everything that can change for a verified token is
still checked on every call: its expiry, and revocation, against the mirror. A change
of key ring (a new ``codec.keyring`` object) forgets every remembered token, so a
withdrawn key stops validating at once. When the cache is full it is emptied and
refills with the tokens in use; a flood of distinct tokens costs the full check it
would have cost anyway, and memory stays bounded (about 1 KiB per entry).

A token bound to a device key needs a proof by that key on every call, remembered or
not: a proof is good for one request (its jti is recorded), so the cache saves the
token's signature check, never the proof's. A token is remembered only once it passed
with its proof, so a bad proof costs the full check again next time. Revocation is
checked once more before the proof's jti is recorded: a signed-out device that keeps
calling is refused REVOKED and spends none of its key's replay quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authority.errors import StaleView
from authority.keys import KeyRing
from authority.revocations import RevocationMirror
from authority.store import RevocationCause
from authority.tokens import AccessClaims, InvalidReason, InvalidToken, Proof, TokenCodec

DEFAULT_CACHE_SIZE = 10_000


class Revoked(InvalidToken):
    """A well-signed token whose session is revoked; says which session, and why."""

    def __init__(self, session_id: str, cause: RevocationCause) -> None:
        super().__init__(InvalidReason.REVOKED)
        self.session_id = session_id
        self.cause = cause


class Validator:
    """Answers whether a token is valid for an audience, and why not."""

    def __init__(
        self,
        codec: TokenCodec,
        mirror: RevocationMirror,
        default_audience: str,
        max_staleness: float,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._codec = codec
        self._mirror = mirror
        self._default_audience = default_audience
        self._max_staleness = max_staleness
        self._cache_size = cache_size
        # The verification's own clock is the real one (PyJWT's); this one only decides
        # when a remembered token must be checked in full again.
        self._clock = clock
        self._keyring: KeyRing = codec.keyring
        # audience -> token -> claims; no tuple key to build per call.
        self._verified: dict[str, dict[str, AccessClaims]] = {}
        self._cached = 0

    @property
    def cached_tokens(self) -> int:
        """How many verified tokens are remembered now."""
        return self._cached

    def validate(self, token: str, audience: str = "", proof: Proof | None = None) -> AccessClaims:
        """The token's claims, or :class:`InvalidToken` with the first failed step's reason
        (the token's steps, then the proof's, then revocation); :class:`StaleView` when the
        revocation view is too old to vouch for any token."""
        if self._mirror.age() > self._max_staleness:
            raise StaleView()
        audience = audience or self._default_audience
        if self._codec.keyring is not self._keyring:
            self._forget(self._codec.keyring)
        by_token = self._verified.get(audience)
        claims = None if by_token is None else by_token.get(token)
        if claims is None or self._clock() >= claims.expires_at + self._codec.leeway:
            claims = self._verify(token, audience, proof)
        elif claims.key_thumbprint or proof is not None:
            self._codec.check_binding(claims, token, proof, admit=self._not_revoked)
        self._not_revoked(claims)
        return claims

    def _not_revoked(self, claims: AccessClaims) -> None:
        cause = self._mirror.cause(claims.session_id)
        if cause is not None:
            raise Revoked(claims.session_id, cause)

    def introspect(self, token: str, audience: str = "") -> AccessClaims:
        """The claims of a token active for ``audience``, bound or not, for introspection
        (RFC 9449 section 6.2): every check of :meth:`validate` but the proof's, which is
        the introspecting resource server's, against the answer's ``cnf.jkt``."""
        try:
            return self.validate(token, audience)
        except InvalidToken as invalid:
            if invalid.reason is not InvalidReason.PROOF_REQUIRED:
                raise
        # Refused only for the missing proof: the token's own steps, which come before the
        # proof's, all passed. Revocation comes after the proof, so it is checked here.
        claims = self._codec.identify(token)
        self._not_revoked(claims)
        return claims

    def _verify(self, token: str, audience: str, proof: Proof | None) -> AccessClaims:
        claims = self._codec.verify(token, audience, proof, admit=self._not_revoked)
        if self._cached >= self._cache_size:
            self._forget(self._keyring)
        by_token = self._verified.setdefault(audience, {})
        if token not in by_token:
            self._cached += 1
        by_token[token] = claims
        return claims

    def _forget(self, keyring: KeyRing) -> None:
        self._verified = {}
        self._cached = 0
        self._keyring = keyring
