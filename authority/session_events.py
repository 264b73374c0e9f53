"""The session event feed: passes the session event log on to WatchSessionEvents streams.

The :class:`~authority.revocations.LogFollower` that keeps the revocation mirror current
reads new session events too (:meth:`SessionEventFeed.catch_up`), so one stream contract
and one freshness serve both logs (:mod:`authority.feeds`). Nothing is held in memory
but the position and what open streams have not been sent yet, and with nobody watching
the follower reads nothing at all: the first stream to open finds the position.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from authority.errors import SequenceUnknown
from authority.feeds import PAGE, CaughtUp, Heartbeat, Watchers, backlog, tail
from authority.store import SessionEvent, Store
from authority.store.events import events_after, last_event_sequence

SessionFeedEvent = SessionEvent | CaughtUp | Heartbeat


def _sequence(event: SessionEvent) -> int:
    return event.sequence


class SessionEventFeed:
    """The session event log's position in this process, and its open streams."""

    def __init__(self, store: Store, follower_store: Store | None = None) -> None:
        self._store = store
        # New events are read where the follower reads the revocation log (connections of
        # its own), so that consumers' backlogs never hold up the process's view.
        self._follower_store = follower_store or store
        self._watchers: Watchers[SessionEvent] = Watchers()
        # Every event up to here has been passed on to the open streams; valid only while
        # ``_tracking`` (some stream is open and the position was found for it).
        self.sequence = 0
        self._tracking = False

    async def catch_up(self) -> None:
        """Reads the events committed since the last read and passes them on."""
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
        self, after_sequence: int, heartbeat_interval: float, is_fresh: Callable[[], bool]
    ) -> AsyncIterator[SessionFeedEvent]:
        """The stream of one watcher: every event after ``after_sequence`` still kept,
        :class:`CaughtUp`, then new events with heartbeats (see :func:`authority.feeds.tail`).

        Raises :class:`SequenceUnknown` for an ``after_sequence`` beyond the end of the log.
        """
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
                async for item in tail(watcher, position, _sequence, heartbeat_interval, is_fresh,
                                       lambda: self.sequence):
                    yield item
            finally:
                # The last stream to close stops the follower reading (this one is still
                # registered here, and leaves as the block ends).
                if len(self._watchers) == 1:
                    self._tracking = False

    async def _read(self, after: int, limit: int) -> list[SessionEvent]:
        return await events_after(self._store, after, limit)
