"""Validate an access token: the verification in tokens.py, then the revocation mirror.

This is the hot path of the authority. It touches no database and no file: the keys
and the live revocations are in memory.
"""

from __future__ import annotations

from authority.errors import StaleView
from authority.revocations import RevocationMirror
from authority.tokens import AccessClaims, InvalidReason, InvalidToken, TokenCodec


class Validator:
    """Answers whether a token is valid for an audience, and why not."""

    def __init__(
        self, codec: TokenCodec, mirror: RevocationMirror, default_audience: str, max_staleness: float
    ) -> None:
        self._codec = codec
        self._mirror = mirror
        self._default_audience = default_audience
        self._max_staleness = max_staleness

    def validate(self, token: str, audience: str = "") -> AccessClaims:
        """The token's claims, or :class:`InvalidToken` with the first failed step's reason.

        Raises :class:`StaleView` when the revocation mirror has not been confirmed
        current for longer than ``max_staleness``: no answer is better than a wrong one.
        """
        if self._mirror.age() > self._max_staleness:
            raise StaleView()
        claims = self._codec.verify(token, audience or self._default_audience)
        if self._mirror.is_revoked(claims.session_id):
            raise InvalidToken(InvalidReason.REVOKED)
        return claims
