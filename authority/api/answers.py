"""Messages built once per verified token, not once per call.

A warm ValidateToken (a token seen before) costs a dictionary lookup in the validator;
building its Claims message, two Timestamps and up to eight strings, cost more than
that. So the message built from a token's claims is kept beside them, keyed by the
token and tied to the very claims object the validator returned: when the validator
verifies the token again (expired from its cache, a new key ring, another audience) it
returns a new object, and the message is built anew. Bounded like the validator's
cache: when full it is emptied and refills with the tokens in use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from authority.tokens import AccessClaims
from authority.validation import DEFAULT_CACHE_SIZE

Message = TypeVar("Message")


class PerVerifiedToken(Generic[Message]):
    """``build(claims)`` for a token, built once for each claims object the validator returns."""

    def __init__(self, build: Callable[[AccessClaims], Message], size: int = DEFAULT_CACHE_SIZE) -> None:
        self._build = build
        self._size = size
        self._built: dict[str, tuple[AccessClaims, Message]] = {}

    def __len__(self) -> int:
        return len(self._built)

    def get(self, token: str, claims: AccessClaims) -> Message:
        """The message for ``claims``, the validator's answer for ``token``; callers never
        change it (it is shared by every call of the token)."""
        built = self._built.get(token)
        if built is not None and built[0] is claims:
            return built[1]
        message = self._build(claims)
        if len(self._built) >= self._size:
            self._built.clear()
        self._built[token] = (claims, message)
        return message
