"""The in-memory mirror of live revocations, the follower that keeps it current with the
revocation log, and the feed that passes the log on to consumers.

Validation asks the mirror, never the database. The mirror is loaded from the log at
start; every revocation this process commits is added to it before the RPC that made it
returns; and a :class:`LogFollower` reads the log after the mirror's position, woken by
PostgreSQL notifications, by this process's own commits, and by a poll that also works
where notifications are lost. Entries carry the expiry of what they revoke and are
purged after it, so the mirror holds only revocations that can still matter.

The mirror also knows when it was last confirmed complete (the start of the last read
of the log that succeeded): a view older than ``max_staleness`` cannot vouch for a
token, and validation refuses rather than answer on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from authority.errors import LogEpochChanged, SequenceUnknown, StoreUnavailable
from authority.feeds import EPOCH_CHANGED, CaughtUp, EpochChanged, Heartbeat, Watchers, backlog, tail
from authority.store import LogState, Revocation, RevocationCause, Store
from authority.store.store import KEYS_CHANNEL, REVOCATIONS_CHANNEL

log = logging.getLogger(__name__)

_PAGE = 1_000
# How often the listening connection is asked whether it is still there.
_LISTENER_PING_SECONDS = 15.0
# Without a notification, the keys are checked every this many polls.
_KEYS_CHECK_POLLS = 5
# How soon the log is read again while entries wait to become final.
_PENDING_RECHECK = 0.05


class KeysChanged:
    """The signing keys changed; send the new set."""


KEYS_CHANGED = KeysChanged()
FeedEvent = Revocation | CaughtUp | Heartbeat | KeysChanged
__all__ = ["KEYS_CHANGED", "CaughtUp", "FeedEvent", "Heartbeat", "KeysChanged", "LogFollower", "RevocationMirror"]


_Queued = Revocation | KeysChanged | EpochChanged


def _sequence_of(item: _Queued) -> int | None:
    # Key changes and the end of an epoch are no log entries: the tail passes them on as is.
    return item.sequence if isinstance(item, Revocation) else None


# An entry packs its expiry (whole seconds) and its cause in one int: second * 8 + cause.
_CAUSE_BITS = 3
_CAUSE_MASK = (1 << _CAUSE_BITS) - 1


class RevocationMirror:
    """Revoked sessions that can still matter, each with the time its last token expires
    and why it was revoked.

    Every log entry revokes a session (a logout names its token too): a revoked session
    rejects every token it ever issued, so sessions are all the mirror has to hold. Which
    device replaced a session is not held here: it is read from the store when a refused
    token is explained, the rare path, so that it costs no memory per entry.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        # Expiry and cause share one int, and those ints are shared between entries: one
        # int object per (second, cause) instead of a float per entry, about a fifth of
        # an entry's memory.
        self._sessions: dict[str, int] = {}
        self._seconds: dict[int, int] = {}
        self._watchers: Watchers[_Queued] = Watchers()
        self._monotonic = monotonic
        # The log position up to which every entry has been applied and passed on, and
        # the epoch of the log it is a position in ("" until the store is first read).
        self.sequence = 0
        self.epoch = ""
        self._confirmed_at = -math.inf
        # Set when the log is known to have moved past ``sequence``: the follower reads it.
        self.log_moved = asyncio.Event()

    def __len__(self) -> int:
        return len(self._sessions)

    def is_revoked(self, session_id: str) -> bool:
        """Whether the session that issued a token has been revoked."""
        return session_id in self._sessions

    def cause(self, session_id: str) -> RevocationCause | None:
        """Why the session was revoked; None when it is not (or no longer) in the mirror."""
        packed = self._sessions.get(session_id)
        return None if packed is None else RevocationCause(packed & _CAUSE_MASK)

    def add(self, entries: Iterable[Revocation]) -> None:
        """Adds entries this process just committed, so its next answer already knows them.

        They reach watchers when the follower reads them from the log, in log order.
        """
        self.hold(entries)
        self.log_moved.set()

    def hold(self, entries: Iterable[Revocation]) -> None:
        """Enforces committed entries the log cannot pass on yet (an older transaction may
        still commit entries before them): watchers get them once they are final."""
        for entry in entries:
            self._sessions[entry.session_id] = self._packed(entry.expires_at, entry.cause)

    def load(self, rows: Iterable[Sequence[Any]]) -> None:
        """Bulk-adds ``(sequence, session_id, expires_at, cause)`` rows read in log order
        after :attr:`sequence`, at start, before anyone watches: the fast path for millions.
        A row of sequence 0 is committed but not final yet: enforced, and no position."""
        sessions, seconds = self._sessions, self._seconds
        last = self.sequence
        for sequence, session_id, expires_at, cause in rows:
            packed = (math.ceil(expires_at) << _CAUSE_BITS) | cause
            sessions[session_id] = seconds.setdefault(packed, packed)
            last = max(last, sequence)
        self.sequence = last

    def advance(self, entries: Iterable[Revocation]) -> None:
        """Applies log entries read in order after :attr:`sequence` and passes them on."""
        for entry in entries:
            if entry.sequence <= self.sequence:
                continue
            self._sessions[entry.session_id] = self._packed(entry.expires_at, entry.cause)
            self.sequence = entry.sequence
            self._watchers.offer(entry)

    def begin_epoch(self, epoch: str) -> None:
        """The log is another one now (restored, or a new PostgreSQL timeline): read it
        again from 0, unconfirmed until then, and end every watcher's stream (their
        positions are of the old log). What the mirror holds stays held: a revocation
        the restored log lost still refuses its tokens here until they expire."""
        self.epoch = epoch
        self.sequence = 0
        self._confirmed_at = -math.inf
        self._watchers.offer(EPOCH_CHANGED)

    def _packed(self, expires_at: float, cause: RevocationCause) -> int:
        packed = (math.ceil(expires_at) << _CAUSE_BITS) | int(cause)
        return self._seconds.setdefault(packed, packed)

    def confirm(self, at: float) -> None:
        """Records that the mirror was complete as of ``at`` (a monotonic time)."""
        self._confirmed_at = max(self._confirmed_at, at)

    def age(self) -> float:
        """Seconds since the mirror was last confirmed complete."""
        return self._monotonic() - self._confirmed_at

    def watcher_backlog(self) -> int:
        """Events queued for the slowest watcher (0 with none). Safe to call from another
        thread (a metrics scrape): a watcher set changing meanwhile reads as 0."""
        return self._watchers.backlog()

    def announce_keys(self) -> None:
        """Tells every watcher that the signing keys changed."""
        self._watchers.offer(KEYS_CHANGED)

    def purge(self, expired_before: float) -> int:
        """Drops entries whose revoked tokens all expired before ``expired_before``."""
        # packed >> bits is the expiry second; second < t exactly when packed < ceil(t) << bits.
        limit = math.ceil(expired_before) << _CAUSE_BITS
        expired = [key for key, packed in self._sessions.items() if packed < limit]
        for key in expired:
            del self._sessions[key]
        for packed in [packed for packed in self._seconds if packed < limit]:
            del self._seconds[packed]
        return len(expired)

    async def follow(
        self, store: Store, after_sequence: int, heartbeat_interval: float, fresh_within: float, epoch: str = ""
    ) -> AsyncIterator[FeedEvent]:
        """The feed of one consumer: the signing keys (:data:`KEYS_CHANGED`), every log entry
        after ``after_sequence`` still in the store, :class:`CaughtUp`, then new entries and
        key changes as they happen, with a :class:`Heartbeat` after ``heartbeat_interval``
        of silence, but only while the mirror was confirmed within ``fresh_within`` seconds.

        Raises :class:`WatcherTooSlow` when the consumer falls too far behind,
        :class:`SequenceUnknown` for an ``after_sequence`` beyond the end of the log, and
        :class:`LogEpochChanged` for a position of another ``epoch`` than the log's (at
        the start, or when the log changes epoch while the consumer watches).
        """
        if after_sequence and epoch and epoch != self.epoch:
            raise LogEpochChanged()
        # Registered before the keys and the backlog are read: a key change or an entry the
        # follower passes on from now is queued, and every earlier one is in what is read.
        with self._watchers.watch() as watcher:
            yield KEYS_CHANGED
            position = after_sequence
            async for entry in backlog(store.backlog_after, after_sequence, lambda entry: entry.sequence):
                yield entry
                position = entry.sequence
            if position == after_sequence > self.sequence and after_sequence > await store.last_sequence():
                # A position from another log (a database restored or failed over to a
                # standby that had not seen it): the consumer must start again from 0.
                raise SequenceUnknown()
            # The store's final entries are a prefix of the log that no late commit can
            # extend before its end, so everything up to here has been sent.
            yield CaughtUp(position)
            async for item in tail(watcher, position, _sequence_of, heartbeat_interval,
                                   lambda: self.age() <= fresh_within, lambda: self.sequence):
                # An EpochChanged never comes out of the tail: it ends the stream.
                assert not isinstance(item, EpochChanged)
                yield item


class LogFollower:
    """Keeps a mirror current with the store's revocation log, and notices key changes.

    Woken by PostgreSQL notifications (a listening connection kept open, reconnected
    when lost), by this process's own commits (:attr:`RevocationMirror.log_moved`), and
    every ``poll_interval`` in any case. Each read starts after the mirror's position, so
    after an outage the follower resynchronises from where it stopped and misses nothing.

    Two reads start at least ``min_read_interval`` apart: wake-ups in between are served
    by one read. Under a stream of revocations (one notification each, from every
    replica) that is one round trip for many entries rather than one for each, and it
    delays an entry by at most that interval.
    """

    def __init__(
        self,
        store: Store,
        mirror: RevocationMirror,
        poll_interval: float,
        keys_changed: Callable[[], Awaitable[None]],
        monotonic: Callable[[], float] = time.monotonic,
        also: Callable[[], Awaitable[None]] | None = None,
        min_read_interval: float = 0.0,
    ) -> None:
        self._store = store
        self._min_read_interval = min_read_interval
        # Another log read with the same confirmation (the session event feed's catch_up).
        self._also = also
        self._mirror = mirror
        self._poll_interval = poll_interval
        self._keys_changed = keys_changed
        self._monotonic = monotonic
        self._check_keys = True
        self._keys_checked_at = -math.inf
        self._listener: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        # For the metrics: the last log state read (None while the store is unreadable),
        # and when the log was last read to its end (monotonic).
        self.state: LogState | None = None
        self.last_read_at: float | None = None
        # Whether the last read left committed entries not yet final.
        self.pending = False

    @property
    def reading(self) -> bool:
        """Whether the last read of the log succeeded."""
        return self._down_since is None

    def _notified(self, channel: str) -> None:
        if channel == KEYS_CHANNEL:
            self._check_keys = True
        self._mirror.log_moved.set()

    async def catch_up(self) -> None:
        """Reads every new log entry into the mirror, then confirms it complete.

        The log's epoch is read with the entries (on PostgreSQL in the same statement):
        only when it is still the epoch the mirror's position belongs to are they the next
        entries of that log (an epoch never comes back). Otherwise the mirror starts that
        epoch, and reads it from 0.
        """
        while True:
            started = self._monotonic()
            self.state = await self._read_log()
            if self.state.epoch == self._mirror.epoch:
                break
            if self._mirror.epoch:
                log.warning(
                    "the revocation log changed epoch (%s to %s: a failover or a restore); reading it again from 0",
                    self._mirror.epoch, self.state.epoch,
                )
            self._mirror.begin_epoch(self.state.epoch)
        if self._also is not None:
            await self._also()
        # The view is complete now, whatever the keys check below makes of the keys.
        self._mirror.confirm(started)
        self.last_read_at = self._monotonic()
        # Notifications announce key changes; the slower check is for where they are lost.
        if self._check_keys or started - self._keys_checked_at >= _KEYS_CHECK_POLLS * self._poll_interval:
            await self._keys_changed()
            self._check_keys = False
            self._keys_checked_at = started

    async def _read_log(self) -> LogState:
        # Final entries move the position and reach watchers; committed entries past the
        # first pending one are enforced now and passed on by a later read, once final
        # (authority/store/log_order.py). So the mirror holds every committed entry. Each
        # page comes with the state of the log it was read from: a page of another epoch
        # is left for catch_up to read again from 0. Returns the state of the last page.
        after, self.pending = self._mirror.sequence, False
        while True:
            page, state = await self._store.followed_page(after, _PAGE)
            if state.epoch != self._mirror.epoch:
                return state
            if self.pending:
                self._mirror.hold(page.final)
            else:
                self._mirror.advance(page.final)
            self._mirror.hold(page.pending)
            self.pending = self.pending or bool(page.pending)
            if len(page) < _PAGE:
                return state
            after = (page.pending or page.final)[-1].sequence

    async def run(self, stopping: asyncio.Event) -> None:
        """Follows the log until ``stopping`` is set (between reads, never in the middle of one)."""
        try:
            while not stopping.is_set():
                if self._listener is None or self._listener.done():
                    self._listener = asyncio.create_task(self._listen(), name="revocation-listener")
                read_started = self._monotonic()
                try:
                    await self.catch_up()
                    self._recovered()
                except StoreUnavailable:
                    self._failed()
                except Exception:
                    # A bug must not stop the follower: the view would go stale for good.
                    log.exception("reading the revocation log failed")
                # Entries pending behind an open transaction are passed on soon after it ends,
                # which may write nothing to the log and so notify nobody.
                wait = min(self._poll_interval, _PENDING_RECHECK) if self.pending else self._poll_interval
                await _first_of(self._mirror.log_moved, stopping, timeout=wait)
                # At most the interval, whatever the clock did meanwhile.
                spacing = min(read_started + self._min_read_interval - self._monotonic(), self._min_read_interval)
                if spacing > 0:
                    await _first_of(stopping, timeout=spacing)
                # Cleared before the next read starts: that read sees whatever set it.
                self._mirror.log_moved.clear()
        finally:
            if self._listener is not None:
                self._listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._listener

    async def _listen(self) -> None:
        # One listening connection; when it is lost, the poll carries on alone until
        # run() starts a new listener after the next read that succeeds or fails.
        with contextlib.suppress(StoreUnavailable):
            async with self._store.notifications([REVOCATIONS_CHANNEL, KEYS_CHANNEL], self._notified) as listening:
                # Whatever committed while nobody listened is read now.
                self._notified(KEYS_CHANNEL)
                # A connection that died silently never says so: ask it now and then.
                while await listening.alive(_LISTENER_PING_SECONDS):
                    pass
        await asyncio.sleep(self._poll_interval)

    def _failed(self) -> None:
        self.state = None
        if self._down_since is None:
            self._down_since = self._monotonic()
            log.warning("cannot read the revocation log: the database is unavailable")
        if self._listener is not None and not self._listener.done():
            # A connection cut without a reset can hang unnoticed: start over once back.
            self._listener.cancel()

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info(
                "revocation log readable again after %.1f s; caught up to sequence %d",
                self._monotonic() - self._down_since,
                self._mirror.sequence,
            )
            self._down_since = None


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    """Waits until one of ``events`` is set, or ``timeout`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
