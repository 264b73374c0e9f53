"""The session event feed: passes the session event log on to WatchSessionEvents streams.

The :class:`~authority.revocations.LogFollower` that keeps the revocation mirror current
reads new session events too (:meth:`SessionEventFeed.catch_up`), so one stream contract
and one freshness serve both logs (:mod:`authority.feeds`). Nothing is held in memory
but the position and what open streams have not been sent yet, and with nobody watching
the follower reads nothing at all: the first stream to open finds the position.

Both logs live in one database, so they share its epoch, which the follower reads with
the revocation log (:attr:`~authority.revocations.RevocationMirror.epoch`): when it
changes (a restore, a failover), every open stream ends with :class:`LogEpochChanged`,
and a consumer resuming with a position of another epoch starts again from 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from authority.errors import LogEpochChanged, SequenceUnknown
from authority.feeds import EPOCH_CHANGED, PAGE, CaughtUp, EpochChanged, Heartbeat, Watchers, backlog, tail
from authority.store import SessionEvent, Store
from authority.store.events import events_after, last_event_sequence

SessionFeedEvent = SessionEvent | CaughtUp | Heartbeat


def _sequence(event: SessionEvent) -> int:
    return event.sequence


def _queued_sequence(item: SessionEvent | EpochChanged) -> int | None:
    # The end of an epoch is no log entry (the tail ends the stream on it).
    return item.sequence if isinstance(item, SessionEvent) else None


class SessionEventFeed:
    """The session event log's position in this process, and its open streams."""

    def __init__(self, store: Store, follower_store: Store | None = None,
                 log_epoch: Callable[[], str] = lambda: "") -> None:
        self._store = store
        # The database's epoch as the follower last read it, and the epoch the open
        # streams' positions belong to.
        self._log_epoch = log_epoch
        self.epoch = log_epoch()
        # New events are read where the follower reads the revocation log (connections of
        # its own), so that consumers' backlogs never hold up the process's view.
        self._follower_store = follower_store or store
        self._watchers: Watchers[SessionEvent | EpochChanged] = Watchers()
        # Every event up to here has been passed on to the open streams; valid only while
        # ``_tracking`` (some stream is open and the position was found for it).
        self.sequence = 0
        self._tracking = False

    async def catch_up(self) -> None:
        """Reads the events committed since the last read and passes them on; ends every
        open stream first when the log changed epoch (their positions are of the old log)."""
        epoch = self._log_epoch()
        if epoch != self.epoch:
            self.epoch = epoch
            self._watchers.offer(EPOCH_CHANGED)
            # The next stream to open finds the position in the new log.
            self._tracking = False
        if not self._watchers or not self._tracking:
            return
        while True:
            page = await events_after(self._follower_store, self.sequence, PAGE)
            for event in page:
                self._watchers.offer(event)
            if page:
                self.sequence = page[-1].sequence
            if len(page) < PAGE:
                return

    async def follow(
        self, after_sequence: int, heartbeat_interval: float, is_fresh: Callable[[], bool], epoch: str = ""
    ) -> AsyncIterator[SessionFeedEvent]:
        """The stream of one watcher: every event after ``after_sequence`` still kept,
        :class:`CaughtUp`, then new events with heartbeats (see :func:`authority.feeds.tail`).

        Raises :class:`SequenceUnknown` for an ``after_sequence`` beyond the end of the log,
        and :class:`LogEpochChanged` for a position of another ``epoch`` than the log's (at
        the start, or when the log changes epoch while the consumer watches).
        """
        if after_sequence and epoch and epoch != self.epoch:
            raise LogEpochChanged("session event log")
        with self._watchers.watch() as watcher:
            try:
                if not self._tracking:
                    # The first stream: the follower passes on what commits after the end
                    # of the log as of now, and this stream's backlog, read after, has the rest.
                    start = await last_event_sequence(self._store)
                    if not self._tracking:  # another stream may have found it meanwhile
                        self.sequence, self._tracking = start, True
                position = after_sequence
                async for event in backlog(self._read, after_sequence, _sequence):
                    yield event
                    position = event.sequence
                if position == after_sequence > 0 and after_sequence > await last_event_sequence(self._store):
                    raise SequenceUnknown("session event log")
                yield CaughtUp(position)
                async for item in tail(watcher, position, _queued_sequence, heartbeat_interval, is_fresh,
                                       lambda: self.sequence):
                    # An EpochChanged never comes out of the tail: it ends the stream.
                    assert not isinstance(item, EpochChanged)
                    yield item
            finally:
                # The last stream to close stops the follower reading (this one is still
                # registered here, and leaves as the block ends).
                if len(self._watchers) == 1:
                    self._tracking = False

    async def _read(self, after: int, limit: int) -> list[SessionEvent]:
        return await events_after(self._store, after, limit)
