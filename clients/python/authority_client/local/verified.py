"""Tokens the local verifier has checked in full, remembered so the same token again
skips the signature check (local mode; the authority's own validator does the same).

Keyed by the exact token string: a token that differs in any character, a tampered one
included, is a miss and is verified in full. A token verifies for one audience only (its
``aud`` string), so an entry answers only for that audience; asked for another, it is a
miss and the full check refuses it. An entry lives until its token expires (with the
verifier's leeway, as verification counts it) and only as long as the key set it was
verified with is the current one: a new key set (a rotation, a key withdrawn) forgets
every entry at once. Revocation is not remembered: the caller checks the mirror on every
call, hit or miss. Nor is a proof of possession: a proof is single-use, so
:meth:`VerifiedTokens.verify` checks a device-bound token's proof
(:meth:`~authority_client.verify.TokenVerifier.check_binding`) on every call, hit or miss,
and :meth:`~VerifiedTokens.get` alone is never enough to admit a call. When the cache is full it is emptied and refills with the tokens in
use, so a flood of distinct tokens costs the full check it would have cost anyway and
memory stays bounded.

Thread-safe without a lock: the key set and the entries verified with it are swapped as
one tuple, so an entry is never read under a key set other than its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from authority_client.proof import Proof
from authority_client.types import AccessClaims
from authority_client.verify import Admit, KeySet, TokenVerifier

DEFAULT_SIZE = 10_000


class VerifiedTokens:
    """Claims of tokens verified with the current key set, until the tokens expire."""

    def __init__(self, max_entries: int = DEFAULT_SIZE, *, leeway: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        self._leeway = leeway
        self._clock = clock
        # (key set, token -> claims verified with that key set)
        self._state: tuple[KeySet | None, dict[str, AccessClaims]] = (None, {})

    def __len__(self) -> int:
        return len(self._state[1])

    def verify(
        self, verifier: TokenVerifier, token: str, audience: str, proof: Proof | None = None, *,
        admit: Admit | None = None,
    ) -> AccessClaims:
        """The claims of ``token`` for ``audience``, remembered or verified in full now, with
        its proof checked either way; :class:`~authority_client.verify.InvalidToken` (and
        :class:`~authority_client.proof.InvalidProof`) as the verifier raises them.
        Revocation is the caller's to check; ``admit`` goes to the proof check
        (:meth:`~authority_client.verify.TokenVerifier.check_binding`)."""
        # Read before verifying: if the set is replaced meanwhile, the entry is filed under
        # the older set and never served again.
        keys = verifier.keys
        claims = self.get(keys, token, audience)
        if claims is None:
            claims = verifier.verify(token, audience, proof, admit=admit)
            self.put(keys, token, claims)
        else:
            verifier.check_binding(claims, token, proof, admit=admit)
        return claims

    def get(self, keys: KeySet, token: str, audience: str) -> AccessClaims | None:
        """The claims of ``token`` if it was verified for ``audience`` with ``keys`` and has
        not expired since; None otherwise (then verify it in full). The proof is not
        checked here: admit a call with :meth:`verify`."""
        verified_with, entries = self._state
        if verified_with is not keys:
            return None
        claims = entries.get(token)
        if claims is None or claims.audience != audience:
            return None
        # Expired exactly when the verifier would say so: exp <= now - leeway.
        if claims.expires_at <= self._clock() - self._leeway:
            entries.pop(token, None)
            return None
        return claims

    def put(self, keys: KeySet, token: str, claims: AccessClaims) -> None:
        """Remembers ``claims``, just verified in full with ``keys`` (read before verifying)."""
        state = self._state
        if state[0] is not keys:
            state = (keys, {})
            self._state = state
        entries = state[1]
        if len(entries) >= self._max_entries:
            entries.clear()
        entries[token] = claims

    def clear(self) -> None:
        """Forgets everything."""
        self._state = (None, {})
