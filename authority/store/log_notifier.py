"""Writers to the logs tell the other replicas after they commit, all at once, not each in its commit.

A PostgreSQL transaction that sends ``NOTIFY`` holds a lock from just before its commit
until the commit is on disk ("serialize writers by acquiring a special lock that we hold
till after commit", src/backend/commands/async.c): notifying commits run one at a time
across the whole cluster, each waiting for its own WAL flush. Every sign-in and every
revocation used to notify so, which put a ceiling on them that no number of replicas
could lift: commits queued behind each other's flushes instead of sharing them.

So a unit of work that writes to the logs (the revocation log or the session event log)
now commits without notifying, and the store calls :meth:`LogNotifier.written`. The
notifier sends one notification for everything written since its last, at most one per
``spacing`` (the followers' own least time between reads), in a transaction of its own
that does not wait for the disk (:meth:`authority.store.Store.notify_logs`): it holds the
lock only while it commits. A follower woken by it reads everything that committed
before it. Should this process stop or lose the database before it notifies, the
other replicas read the entries at their next poll, as they do whenever a notification
is lost. Key changes, which are rare, still notify in their own transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from authority.errors import StoreUnavailable
from authority.store.connections import Connections

log = logging.getLogger(__name__)


class LogNotifier:
    """Notifies the replicas once for every burst of this process's writes to the logs."""

    def __init__(self, store: Connections, spacing: float) -> None:
        self._store = store
        self._spacing = spacing
        self._written = asyncio.Event()
        self.sent = 0

    def written(self) -> None:
        """A write to the logs committed: the replicas hear of it soon."""
        self._written.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Notifies after every burst of :meth:`written` until ``stopping`` is set, and
        once more then if a write committed since the last notification."""
        store = self._store
        store.notify_after_commit = self.written
        try:
            while True:
                stop = asyncio.ensure_future(stopping.wait())
                written = asyncio.ensure_future(self._written.wait())
                try:
                    await asyncio.wait((stop, written), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    written.cancel()
                if not self._written.is_set():
                    return
                self._written.clear()
                started = time.monotonic()
                await self._notify()
                if stopping.is_set():
                    continue  # one last notification for what committed meanwhile, if anything did
                # Writes in between wait for the next notification together.
                pause = self._spacing - (time.monotonic() - started)
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), pause)
        finally:
            store.notify_after_commit = None

    async def _notify(self) -> None:
        try:
            await self._store.notify_logs()
        except StoreUnavailable:
            # The other replicas read the entries at their next poll.
            log.debug("could not notify the replicas; they read the log at their next poll")
        except Exception:
            # A bug must not stop the notifications: the replicas would wait for their polls.
            log.exception("notifying the replicas failed")
        else:
            self.sent += 1
