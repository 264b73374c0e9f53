"""The signing keys a local verifier checks signatures with.

They come from GetSigningKeys at start and from every SIGNING_KEYS event of the
revocation stream, which replaces the whole set. A token naming a kid the set lacks
may be signed with a key newer than the set: it triggers a refetch, at most one per
``refetch_interval``, so a stream of made-up kids cannot turn into a stream of calls.
A set that fails to parse, or a fetch that fails, leaves the last good set in place.

There is one verifier, whose key set is replaced, so its DPoP proof checker (and the
replay cache in it) outlives every key set: a proof seen before a rotation is still
seen after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from authority_client.proof import ProofChecker
from authority_client.verify import KeySet, TokenVerifier

log = logging.getLogger(__name__)


class SigningKeys:
    """The verifier and the key set in it, replaced as the authority announces new ones."""

    def __init__(
        self,
        *,
        issuer: str,
        leeway: float = 30.0,
        refetch_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        proofs: ProofChecker | None = None,
    ) -> None:
        # None until the first key set arrives.
        self.verifier: TokenVerifier | None = None
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._last_refetch: float | None = None
        self._jwks_json = ""
        # The verifier's; None: its own, with the checker's defaults.
        self._proofs = proofs

    def replace(self, jwks_json: str) -> bool:
        """Swaps in a new key set; a malformed one is logged and ignored. Returns whether it took."""
        if jwks_json == self._jwks_json:
            return True
        try:
            keys = KeySet.from_jwks(jwks_json)
        except ValueError:
            log.warning("ignored a malformed signing key set; keeping the last good one")
            return False
        if self.verifier is None:
            self.verifier = TokenVerifier(
                keys, issuer=self._issuer, leeway=self._leeway, clock=self._clock, proofs=self._proofs
            )
        else:
            self.verifier.keys = keys  # one attribute store: readers see the old set or the new
        self._jwks_json = jwks_json
        log.info("signing keys now %s", ", ".join(sorted(keys.kids)))
        return True

    def claim_refetch(self) -> bool:
        """Whether this caller may refetch now (at most one per ``refetch_interval``)."""
        with self._lock:
            now = self._monotonic()
            if self._last_refetch is not None and now - self._last_refetch < self._refetch_interval:
                return False
            self._last_refetch = now
            return True
