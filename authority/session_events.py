"""The session event feed: passes the session event log on to WatchSessionEvents streams.

The :class:`~authority.revocations.LogFollower` that keeps the revocation mirror current
reads new session events too (:meth:`SessionEventFeed.catch_up`), so one stream contract
and one freshness serve both logs (:mod:`authority.feeds`). Nothing is held in memory
but the position and what open streams have not been sent yet: with nobody watching, a
read is one ``max(sequence)``.
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

    def __init__(self, store: Store) -> None:
        self._store = store
        self._watchers: Watchers[SessionEvent] = Watchers()
        # Every event up to here has been passed on to the open streams.
        self.sequence = 0

    async def catch_up(self) -> None:
        """Reads the events committed since the last read and passes them on."""
        if not self._watchers:
            last = await last_event_sequence(self._store)
            # A stream that opened during the read reads its own backlog; the next read
            # starts from the old position, so it misses nothing either way.
            if not self._watchers:
                self.sequence = max(self.sequence, last)
                return
        while True:
            page = await events_after(self._store, self.sequence, PAGE)
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
            position = after_sequence
            async for event in backlog(self._read, after_sequence, _sequence):
                yield event
                position = event.sequence
            if position == after_sequence > 0 and after_sequence > await last_event_sequence(self._store):
                raise SequenceUnknown("session event log")
            yield CaughtUp(position)
            async for item in tail(watcher, position, _sequence, heartbeat_interval, is_fresh, lambda: self.sequence):
                yield item

    async def _read(self, after: int, limit: int) -> list[SessionEvent]:
        return await events_after(self._store, after, limit)
