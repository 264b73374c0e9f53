"""The in-memory mirror of live revocations, and the feed that follows the revocation log.

Validation asks the mirror, never the database: the mirror is loaded from the log at
start and every revocation this process commits is applied to it before the RPC that
made it returns. Entries carry the expiry of what they revoke and are purged after it,
so the mirror holds only revocations that can still matter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator

from authority.errors import WatcherTooSlow
from authority.store import Revocation, Store

# A watcher this far behind is cut off; it resumes from its last sequence.
WATCHER_QUEUE_SIZE = 10_000
_BACKLOG_PAGE = 1_000
_DEDUPE_WINDOW = 10_000


class _Watcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Revocation] = asyncio.Queue(WATCHER_QUEUE_SIZE)
        # Only ever set while the queue is full, so a reader never waits on it.
        self.overflowed = False

    def offer(self, entry: Revocation) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.overflowed = True


class RevocationMirror:
    """Revoked sessions that can still matter, each with the time its last token expires.

    Every log entry revokes a session (a logout names its token too): a revoked session
    rejects every token it ever issued, so sessions are all the mirror has to hold.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, float] = {}
        self._watchers: set[_Watcher] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def is_revoked(self, session_id: str) -> bool:
        """Whether the session that issued a token has been revoked."""
        return session_id in self._sessions

    def apply(self, entries: Iterable[Revocation]) -> None:
        """Adds committed log entries and passes them on to every watcher."""
        for entry in entries:
            self._sessions[entry.session_id] = entry.expires_at
            for watcher in self._watchers:
                watcher.offer(entry)

    def purge(self, expired_before: float) -> int:
        """Drops entries whose revoked tokens all expired before ``expired_before``."""
        expired = [key for key, expires_at in self._sessions.items() if expires_at < expired_before]
        for key in expired:
            del self._sessions[key]
        return len(expired)

    @contextlib.contextmanager
    def _watch(self) -> Iterator[_Watcher]:
        watcher = _Watcher()
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)

    async def follow(self, store: Store, after_sequence: int) -> AsyncIterator[Revocation]:
        """Every log entry after ``after_sequence`` still in the store, then each new one.

        Raises :class:`WatcherTooSlow` when the caller falls too far behind.
        """
        with self._watch() as watcher:
            recent: dict[int, None] = {}  # insertion-ordered set of backlog sequences
            last = after_sequence
            while True:
                page = await store.revocations_after(last, _BACKLOG_PAGE)
                for entry in page:
                    recent[entry.sequence] = None
                    if len(recent) > _DEDUPE_WINDOW:
                        del recent[next(iter(recent))]
                    yield entry
                if len(page) < _BACKLOG_PAGE:
                    break
                last = page[-1].sequence
            while True:
                if watcher.overflowed:
                    raise WatcherTooSlow()
                entry = await watcher.queue.get()
                if entry.sequence in recent or entry.sequence <= after_sequence:
                    continue
                yield entry

