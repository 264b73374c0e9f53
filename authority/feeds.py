"""What every log stream shares: the watchers a follower passes new entries to, the
backlog read page by page, and the live tail with its heartbeats.

Both logs, revocations (:mod:`authority.revocations`) and session events
(:mod:`authority.session_events`), are streamed with one contract: the backlog after a
sequence, a :class:`CaughtUp` marker, then new entries as the follower reads them, with a
:class:`Heartbeat` after a quiet interval, but only while the process's view of the
store is fresh. A watcher that falls too far behind is cut off (:class:`WatcherTooSlow`)
and resumes from its last sequence. A log that changes epoch (a restore, a failover) ends
every stream with :class:`LogEpochChanged`: their positions are of the old log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Generic, TypeVar

from authority.errors import LogEpochChanged, WatcherTooSlow

# A watcher this far behind is cut off; it resumes from its last sequence.
WATCHER_QUEUE_SIZE = 10_000
PAGE = 1_000

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class CaughtUp:
    """Every entry up to ``sequence`` has been sent: the backlog is over."""

    sequence: int


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing new; the receiver is still complete up to ``sequence``."""

    sequence: int


class EpochChanged:
    """The log's epoch changed: positions of the old one mean nothing now."""


EPOCH_CHANGED = EpochChanged()


class Watcher(Generic[T]):
    """One stream's queue of what the follower passed on."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(WATCHER_QUEUE_SIZE)
        # Only ever set while the queue is full, so a reader never waits on it.
        self.overflowed = False

    def offer(self, item: T) -> None:
        """Queues ``item``, or marks the watcher overflowed when it is too far behind."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Watchers(Generic[T]):
    """The streams open on one log."""

    def __init__(self) -> None:
        self._watchers: set[Watcher[T]] = set()

    def __bool__(self) -> bool:
        return bool(self._watchers)

    def __len__(self) -> int:
        return len(self._watchers)

    def offer(self, item: T) -> None:
        """Passes ``item`` on to every watcher."""
        for watcher in self._watchers:
            watcher.offer(item)

    def backlog(self) -> int:
        """Items queued for the slowest watcher (0 with none). Safe to call from another
        thread (a metrics scrape): a set changing meanwhile reads as 0."""
        try:
            return max((watcher.queue.qsize() for watcher in tuple(self._watchers)), default=0)
        except RuntimeError:
            return 0

    @contextlib.contextmanager
    def watch(self) -> Iterator[Watcher[T]]:
        """A watcher registered for the block."""
        watcher: Watcher[T] = Watcher()
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)


async def backlog(read_after: Callable[[int, int], Awaitable[Sequence[T]]], after: int,
                  sequence_of: Callable[[T], int]) -> AsyncIterator[T]:
    """Every entry after ``after`` in the store, page by page."""
    position = after
    while True:
        page = await read_after(position, PAGE)
        for entry in page:
            yield entry
        if page:
            position = sequence_of(page[-1])
        if len(page) < PAGE:
            return


async def tail(
    watcher: Watcher[T],
    position: int,
    sequence_of: Callable[[T], int | None],
    heartbeat_interval: float,
    is_fresh: Callable[[], bool],
    applied: Callable[[], int],
) -> AsyncIterator[T | Heartbeat]:
    """The live part of a stream after its backlog (complete up to ``position``): new
    entries past ``position`` (an item whose ``sequence_of`` is None is passed as is), and
    a :class:`Heartbeat` at least every ``heartbeat_interval`` while ``is_fresh()``: after
    that long a silence, and under a steady flow of entries as soon as the queue is empty,
    so that a busy stream confirms its receiver complete as often as a quiet one.
    ``applied()`` is the position the follower has passed on. :data:`EPOCH_CHANGED`
    queued ends the stream with :class:`LogEpochChanged`."""
    beaten = time.monotonic()
    while True:
        if watcher.overflowed:
            raise WatcherTooSlow()
        try:
            item = await asyncio.wait_for(watcher.queue.get(), heartbeat_interval)
        except TimeoutError:
            item = None
        if isinstance(item, EpochChanged):
            raise LogEpochChanged()
        if item is not None:
            sequence = sequence_of(item)
            if sequence is None:
                yield item
            elif sequence > position:
                position = sequence
                yield item
            if time.monotonic() - beaten < heartbeat_interval:
                continue
        # Only with the queue empty has every entry the follower passed on been sent (an
        # entry may have arrived while the wait was cancelled).
        if watcher.queue.empty() and is_fresh():
            position = max(position, applied())
            beaten = time.monotonic()
            yield Heartbeat(position)
