"""A bounded positive cache of remote validations, for remote mode.

Keyed by a digest of the whole token and the audience, not by the token's ``jti`` alone:
a forged token that copies a valid token's ``jti`` must not hit the valid one's entry.
An entry lives no longer than its token and ``ttl``, and a revocation of its session or
token (reported by the revocation stream) evicts it at once. The least recently used
entry goes first when the cache is full.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Callable

from authority_client.types import AccessClaims


def _key(token: str, audience: str) -> bytes:
    return hashlib.sha256(f"{audience}\x00{token}".encode()).digest()


class ClaimsCache:
    """Claims of tokens the authority said were valid, for a short while."""

    def __init__(self, max_entries: int = 10_000, ttl: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        if max_entries <= 0 or ttl <= 0:
            raise ValueError("max_entries and ttl must be positive")
        self._max_entries = max_entries
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[bytes, tuple[AccessClaims, float]] = collections.OrderedDict()
        # Which entries to evict when a session or a token is revoked.
        self._by_session: dict[str, set[bytes]] = {}
        self._by_token_id: dict[str, set[bytes]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, token: str, audience: str) -> AccessClaims | None:
        """The cached claims, or None when absent or expired."""
        key = _key(token, audience)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            claims, until = found
            if self._clock() >= until:
                self._drop_locked(key)
                return None
            self._entries.move_to_end(key)
            return claims

    def put(self, token: str, audience: str, claims: AccessClaims) -> None:
        """Remembers a valid token's claims until it expires or ``ttl`` passes."""
        until = min(self._clock() + self._ttl, float(claims.expires_at))
        key = _key(token, audience)
        with self._lock:
            if key in self._entries:
                self._drop_locked(key)
            self._entries[key] = (claims, until)
            self._by_session.setdefault(claims.session_id, set()).add(key)
            self._by_token_id.setdefault(claims.token_id, set()).add(key)
            while len(self._entries) > self._max_entries:
                self._drop_locked(next(iter(self._entries)))

    def evict(self, session_id: str, token_id: str = "") -> None:
        """Drops every entry of a revoked session or token."""
        with self._lock:
            keys = set(self._by_session.get(session_id, ())) | set(self._by_token_id.get(token_id, ()))
            for key in keys:
                self._drop_locked(key)

    def clear(self) -> None:
        """Drops everything."""
        with self._lock:
            self._entries.clear()
            self._by_session.clear()
            self._by_token_id.clear()

    def _drop_locked(self, key: bytes) -> None:
        claims, _ = self._entries.pop(key)
        for index, name in ((self._by_session, claims.session_id), (self._by_token_id, claims.token_id)):
            keys = index.get(name)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[name]
