"""One open transaction: what every unit of work can do, whatever it queries.

:class:`UnitOfWork` holds the connection, the locks a writer takes, the notifications
sent when (and only if) it commits (or, for the logs, after it committed:
authority/store/log_notifier.py), and the session events it records; the queries are
mixed in by :mod:`authority.store.session_queries` and :mod:`authority.store.key_queries`
to make :class:`authority.store.Tx`.

Writers to one subject are serialised: on PostgreSQL by a transaction-scoped advisory
lock keyed by the subject, on SQLite because every transaction begins IMMEDIATE and
SQLite admits one writer at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from authority.store.coordination import KEYS_LOCK, REVOCATIONS_CHANNEL, subject_lock_id
from authority.store.records import SessionEvent
from authority.store.schema import session_events


class UnitOfWork:
    """One open transaction; every method runs inside it."""

    def __init__(
        self, conn: AsyncConnection, is_postgres: bool, notify_after_commit: Callable[[], None] | None = None
    ) -> None:
        self.conn = conn
        self.is_postgres = is_postgres
        self._notified: set[str] = set()
        # When set, a write to the logs does not notify in this transaction: the store
        # calls it once this commits (authority/store/log_notifier.py).
        self.notify_after_commit = notify_after_commit
        self.wrote_to_logs = False
        # Session events recorded in this transaction, written just before it commits.
        self._events: list[SessionEvent] = []

    async def _logged(self) -> None:
        # Both logs (revocations and session events) share one channel. No lock: entries
        # reach readers in order by their positions alone (authority/store/log_order.py).
        self.wrote_to_logs = True
        if self.notify_after_commit is None:
            await self._notify(REVOCATIONS_CHANNEL)

    def record(self, event: SessionEvent) -> None:
        """Appends ``event`` to the session event log when (and only if) this commits."""
        self._events.append(event)

    async def flush_events(self) -> None:
        """Writes the recorded session events, in one statement; the transaction does this
        just before it commits."""
        if not self._events:
            return
        await self._logged()
        rows = [
            {
                "kind": int(e.kind),
                "occurred_at": e.occurred_at,
                "subject": e.subject,
                "session_id": e.session_id,
                "device_id": e.device_id,
                "device_class": e.device_class,
                "device_name": e.device_name,
                "replaced_session_ids": " ".join(e.replaced_session_ids),
                "cause": int(e.cause),
                "caller": e.caller,
            }
            for e in self._events
        ]
        self._events = []
        await self.conn.execute(sa.insert(session_events), rows)

    async def lock_subject(self, subject: str) -> None:
        """Holds every other writer to ``subject`` off until this transaction ends."""
        if self.is_postgres:
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(subject_lock_id(subject))))

    async def lock_keys(self) -> None:
        """Holds every other key writer off until this transaction ends."""
        if self.is_postgres:
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(KEYS_LOCK)))

    async def _notify(self, channel: str) -> None:
        # NOTIFY is transactional: listeners hear it when, and only if, this commits; and
        # once per transaction is enough.
        if self.is_postgres and channel not in self._notified:
            self._notified.add(channel)
            await self.conn.execute(sa.select(sa.func.pg_notify(channel, "")))

