"""A consumer's copy of the authority's live revocations, and how fresh it is.

The copy is fed by the WatchRevocations stream (see :mod:`authority_client.local.follow`). It
can vouch for a token only while it is *fresh*: complete as of a moment no longer than
``max_staleness`` ago. It becomes complete when the stream says CAUGHT_UP after its
backlog, and stays so while HEARTBEATs and live revocations keep arriving; a consumer
that has heard nothing for longer must ask the authority instead (or refuse).

Freshness is measured on this process's monotonic clock when an event *arrives*, never
on the server's ``sent_at``, so clock skew between hosts cannot make a stale view look
fresh. Entries expire with the tokens they revoke (plus the verifier's leeway).

Thread-safe: a follower thread or task writes, any number of validating threads read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from authority_client.types import RevocationCause, RevocationEvent, RevocationEventKind
from authority_client.verify import InvalidReason, InvalidToken

# How often expired entries are dropped, in seconds.
_PURGE_EVERY = 10.0

RevocationListener = Callable[[str, str], object]
# Called with a set's JWK Set, its version and the stream's epoch.
KeysListener = Callable[[str, int, str], object]


class RevocationMirror:
    """Revoked sessions and tokens that can still matter, and when the copy was last complete."""

    def __init__(
        self,
        *,
        max_staleness: float = 5.0,
        leeway: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_staleness = max_staleness
        self._leeway = leeway
        self._monotonic = monotonic
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, float] = {}
        self._tokens: dict[str, float] = {}
        # Why a session was revoked, and the device that replaced it, beside the entry
        # (only when known) and purged with it: needed only to explain a refused token.
        self._causes: dict[str, RevocationCause] = {}
        self._replaced_by: dict[str, str] = {}
        self._last_sequence = 0
        # The epoch of the log _last_sequence is a position in ("" before any stream).
        self._epoch = ""
        self._complete_at: float | None = None  # monotonic time the copy was last known complete
        self._caught_up = False  # in the current stream
        self._last_event_at: float | None = None
        self._next_purge = 0.0
        self._revocation_listeners: list[RevocationListener] = []
        self._keys_listeners: list[KeysListener] = []

    def restart(self) -> None:
        """Resumes from the start of the log next time (the authority did not know our
        position, or its log is another epoch's): a full snapshot follows, and what is
        held stays held meanwhile. The copy vouches for nothing until that snapshot's
        CAUGHT_UP: the log went backwards or is another, so what it lacks is unknown."""
        with self._lock:
            self._last_sequence = 0
            self._epoch = ""
            self._caught_up = False
            self._complete_at = None

    @property
    def last_sequence(self) -> int:
        """The sequence to resume after: everything up to it has been applied."""
        with self._lock:
            return self._last_sequence

    @property
    def epoch(self) -> str:
        """The epoch :attr:`last_sequence` belongs to: send both when resuming."""
        with self._lock:
            return self._epoch

    def same_epoch(self, event: RevocationEvent) -> bool:
        """Takes the epoch a stream announces; False when it is not the one our position is
        of (a restored or failed-over log): then the position is dropped (:meth:`restart`)
        and the stream must be opened again from 0. What is held stays held meanwhile."""
        with self._lock:
            if not event.epoch or event.epoch == self._epoch:
                return True
            if not self._epoch or not self._last_sequence:
                self._epoch = event.epoch
                return True
        self.restart()
        return False

    def on_revocation(self, listener: RevocationListener) -> None:
        """Calls ``listener(session_id, token_id)`` for every revocation applied."""
        self._revocation_listeners.append(listener)

    def on_signing_keys(self, listener: KeysListener) -> None:
        """Calls ``listener(jwks_json, key_set_version, epoch)`` whenever the stream announces the signing keys."""
        self._keys_listeners.append(listener)

    def stream_started(self) -> None:
        """A new stream is open: it vouches for nothing until it has caught up."""
        with self._lock:
            self._caught_up = False
            self._last_event_at = self._monotonic()

    def stream_caught_up(self) -> bool:
        """Whether the current stream has sent its backlog."""
        with self._lock:
            return self._caught_up

    def idle_for(self) -> float:
        """Seconds since the current stream last sent anything."""
        with self._lock:
            return 0.0 if self._last_event_at is None else self._monotonic() - self._last_event_at

    def apply(self, event: RevocationEvent) -> None:
        """Applies one stream event."""
        now = self._monotonic()
        notify_revocation = False
        with self._lock:
            self._last_event_at = now
            if event.kind is RevocationEventKind.REVOCATION:
                if event.session_id:
                    self._sessions[event.session_id] = max(event.expires_at, self._sessions.get(event.session_id, 0.0))
                    if event.cause is not RevocationCause.UNSPECIFIED:
                        self._causes[event.session_id] = event.cause
                    if event.replaced_by_device_id:
                        self._replaced_by[event.session_id] = event.replaced_by_device_id
                if event.token_id:
                    self._tokens[event.token_id] = event.expires_at
                self._last_sequence = max(self._last_sequence, event.sequence)
                # Not a confirmation of completeness: a consumer that fell behind reads old
                # events. Only CAUGHT_UP and HEARTBEAT, sent with nothing left queued, are.
                notify_revocation = True
            elif event.kind is RevocationEventKind.CAUGHT_UP:
                self._caught_up = True
                self._last_sequence = max(self._last_sequence, event.sequence)
                self._complete_at = now
            elif event.kind is RevocationEventKind.HEARTBEAT and self._caught_up:
                self._last_sequence = max(self._last_sequence, event.sequence)
                self._complete_at = now
            if now >= self._next_purge:
                self._purge_locked()
                self._next_purge = now + _PURGE_EVERY
        # Listeners run outside the lock: they take locks of their own.
        if notify_revocation:
            for on_revocation in self._revocation_listeners:
                on_revocation(event.session_id, event.token_id)
        if event.kind is RevocationEventKind.SIGNING_KEYS and event.jwks_json:
            for on_keys in self._keys_listeners:
                on_keys(event.jwks_json, event.key_set_version, event.epoch)

    def staleness(self) -> float | None:
        """Seconds since the copy was last known complete; None if it never was."""
        with self._lock:
            return None if self._complete_at is None else self._monotonic() - self._complete_at

    def is_fresh(self) -> bool:
        """Whether the copy can vouch for a token now."""
        staleness = self.staleness()
        return staleness is not None and staleness <= self.max_staleness

    def is_revoked(self, session_id: str, token_id: str) -> bool:
        """Whether a token of ``session_id`` (or the token ``token_id`` itself) is revoked."""
        with self._lock:
            return session_id in self._sessions or token_id in self._tokens

    def refusal(self, session_id: str, token_id: str) -> InvalidToken | None:
        """The REVOKED refusal of a token of ``session_id`` (or of ``token_id``), with the
        cause and replacing device when the stream said them; None when not revoked."""
        with self._lock:
            if session_id not in self._sessions and token_id not in self._tokens:
                return None
            return InvalidToken(
                InvalidReason.REVOKED,
                self._causes.get(session_id),
                replaced_by_device_id=self._replaced_by.get(session_id, ""),
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions) + len(self._tokens)

    def _purge_locked(self) -> None:
        cutoff = self._clock() - self._leeway
        for entries in (self._sessions, self._tokens):
            for key in [key for key, expires_at in entries.items() if expires_at < cutoff]:
                del entries[key]
                self._causes.pop(key, None)
                self._replaced_by.pop(key, None)
