"""The signing keys a local verifier checks signatures with.

They come from GetSigningKeys at start and from every SIGNING_KEYS event of the
revocation stream, which replaces the whole set. A token naming a kid the set lacks
may be signed with a key newer than the set: it triggers a refetch, at most one per
``refetch_interval``, so a stream of made-up kids cannot turn into a stream of calls.
A set that fails to parse, or a fetch that fails, leaves the last good set in place.

The stream's sets are the authority's word: a key one leaves out is withdrawn (retired
after a compromise, or purged), and a fetched set cannot bring it back. GetSigningKeys
may be answered by a replica that has not seen the withdrawal yet (replicas reread their
keys about once a second), and a token naming the withdrawn key is exactly what makes a
consumer refetch: without this, such a token would reinstate its own key. Only a later
stream set may name the key again (a database restored from before the withdrawal).

Sets carry a version (``key_set_version``), which the database raises on every change to
the stored keys: a set of a lower version than one already taken is older, whichever
replica sends it, and is ignored, stream set or fetched alike. A stream resumed on a
replica that has not yet reread its keys would otherwise bring a retired key back, or
withdraw a new one, until that replica caught up. Versions are compared within one log
epoch: a stream of another epoch (a restored database, a failover to another timeline)
starts the count afresh. A set of version 0 (an authority older than versions) is taken
as before.

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
from authority_client.types import SigningKeySet
from authority_client.verify import KeySet, TokenVerifier

log = logging.getLogger(__name__)

# Withdrawn kids remembered at most: one a rotation, so years of them.
MAX_WITHDRAWN = 10_000


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
        # Kids the stream withdrew, oldest first (module docstring).
        self._withdrawn: dict[str, None] = {}
        # The verifier's; None: its own, with the checker's defaults.
        self._proofs = proofs
        # The highest version taken, and the epoch of the stream set that set the count
        # ("" until a stream set of a known epoch arrives).
        self._version = 0
        self._epoch = ""

    def replace_announced(self, jwks_json: str, version: int = 0, epoch: str = "") -> bool:
        """A stream's SIGNING_KEYS event (see :meth:`replace`)."""
        return self.replace(jwks_json, version=version, epoch=epoch)

    def replace_fetched(self, key_set: SigningKeySet) -> bool:
        """A GetSigningKeys answer (see :meth:`replace`)."""
        return self.replace(key_set.jwks_json, fetched=True, version=key_set.version)

    def replace(self, jwks_json: str, *, fetched: bool = False, version: int = 0, epoch: str = "") -> bool:
        """Swaps in a new key set; a malformed one, or one older than the set taken, is
        logged and ignored. Returns whether it took.

        ``fetched``: the set is a GetSigningKeys answer, not a stream event; the keys the
        stream withdrew are left out of it. ``version``: the set's; ``epoch``: the stream's,
        for a stream set (module docstring)."""
        if jwks_json == self._jwks_json:
            with self._lock:
                if not self._older_locked(fetched, version, epoch):
                    self._count_locked(fetched, version, epoch)
            return True
        try:
            keys = KeySet.from_jwks(jwks_json)
        except ValueError:
            log.warning("ignored a malformed signing key set; keeping the last good one")
            return False
        with self._lock:
            if self._older_locked(fetched, version, epoch):
                log.info("ignored an older signing key set (version %d, holding %d)", version, self._version)
                return False
            self._count_locked(fetched, version, epoch)
            if fetched:
                reinstated = keys.kids & self._withdrawn.keys()
                if reinstated:
                    log.warning("left withdrawn signing keys out of a fetched set: %s", ", ".join(sorted(reinstated)))
                    keys = keys.without(reinstated)
                    jwks_json = ""  # not the set installed: the same text again is filtered again
            else:
                current = frozenset() if self.verifier is None else self.verifier.keys.kids
                for kid in current - keys.kids:
                    self._withdrawn[kid] = None
                for kid in keys.kids & self._withdrawn.keys():
                    del self._withdrawn[kid]
                while len(self._withdrawn) > MAX_WITHDRAWN:
                    del self._withdrawn[next(iter(self._withdrawn))]
            # Installed under the lock too: a fetched set filtered before a withdrawal must
            # not be installed after it.
            if self.verifier is None:
                self.verifier = TokenVerifier(
                    keys, issuer=self._issuer, leeway=self._leeway, clock=self._clock, proofs=self._proofs
                )
            else:
                self.verifier.keys = keys  # one attribute store: readers see the old set or the new
            self._jwks_json = jwks_json
        log.info("signing keys now %s", ", ".join(sorted(keys.kids)))
        return True

    def _new_epoch(self, fetched: bool, epoch: str) -> bool:
        return not fetched and bool(epoch) and bool(self._epoch) and epoch != self._epoch

    def _older_locked(self, fetched: bool, version: int, epoch: str) -> bool:
        """Whether a set of ``version`` is older than the one taken (0: not known to be)."""
        return 0 < version < self._version and not self._new_epoch(fetched, epoch)

    def _count_locked(self, fetched: bool, version: int, epoch: str) -> None:
        """Counts a set taken (or the set taken announced again)."""
        if self._new_epoch(fetched, epoch):
            self._version = version  # another epoch's count: it starts afresh
        elif version:
            self._version = max(self._version, version)
        if not fetched and epoch:
            self._epoch = epoch

    def claim_refetch(self) -> bool:
        """Whether this caller may refetch now (at most one per ``refetch_interval``)."""
        with self._lock:
            now = self._monotonic()
            if self._last_refetch is not None and now - self._last_refetch < self._refetch_interval:
                return False
            self._last_refetch = now
            return True
