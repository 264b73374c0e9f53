"""The queries over the session event log, and the erasure of one subject's personal data.

Events are appended by :meth:`authority.store.Tx.record` inside the unit of work they
describe; here they are read in log order, purged after their retention, and erased for
one subject on request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from authority.store.log_order import FINAL_BELOW_SQL, LogPage, log_page_query, settled
from authority.store.records import RevocationCause, SessionEvent, SessionEventKind
from authority.store.schema import revocations, session_events, sessions
from authority.store.store import Store


def _event(row: Any) -> SessionEvent:
    return SessionEvent(
        kind=SessionEventKind(row.kind),
        occurred_at=row.occurred_at,
        subject=row.subject,
        session_id=row.session_id,
        device_id=row.device_id,
        device_class=row.device_class,
        device_name=row.device_name,
        replaced_session_ids=tuple(row.replaced_session_ids.split()),
        cause=RevocationCause(row.cause),
        caller=row.caller,
        sequence=row.sequence,
    )


async def events_after(store: Store, sequence: int, limit: int, subject: str | None = None) -> list[SessionEvent]:
    """Up to ``limit`` events after ``sequence``, in order (only ``subject``'s when given).

    Runs to the end even when the caller is cancelled, as the revocation log's reads do.
    """
    return await asyncio.shield(_events_after(store, sequence, limit, subject))


async def _events_after(store: Store, sequence: int, limit: int, subject: str | None) -> list[SessionEvent]:
    # Only the final part of the log: an event a late commit could still precede waits
    # for the next read (authority/store/log_order.py).
    async def read() -> LogPage[SessionEvent]:
        async with store.reading() as conn:
            query = log_page_query(session_events, sequence, limit, store.is_postgres)
            if subject is not None:
                query = query.where(session_events.c.subject == subject)
            rows = (await conn.execute(query)).all()
        return LogPage.of([_event(row) for row in rows], rows, lambda event: event.sequence)

    return await settled(read)


async def last_event_sequence(store: Store) -> int:
    """The highest sequence in the final part of the event log (0 when there is none): a
    stream that starts there misses no event that commits late."""
    async with store.transaction(read_only=True) as tx:
        query = sa.select(sa.func.coalesce(sa.func.max(session_events.c.sequence), 0))
        if store.is_postgres:
            query = query.where(session_events.c.sequence < sa.literal_column(FINAL_BELOW_SQL))
        return int((await tx.conn.execute(query)).scalar_one())


async def purge_events(store: Store, occurred_before: float, batch_size: int) -> int:
    """Deletes one batch of events older than the retention; returns how many."""
    async with store.transaction() as tx:
        batch = (
            sa.select(session_events.c.sequence)
            .where(session_events.c.occurred_at < occurred_before)
            .limit(batch_size)
        )
        result = await tx.conn.execute(sa.delete(session_events).where(session_events.c.sequence.in_(batch)))
        return int(result.rowcount)


async def erase_subject(store: Store, subject: str) -> int:
    """Deletes the subject's events and blanks the device names kept for them (in sessions
    and in the revocation log); returns how many events were deleted.

    What the revocation mirror needs (session ids and expiries) stays until it expires.
    """
    async with store.transaction() as tx:
        await tx.lock_subject(subject)
        deleted = await tx.conn.execute(sa.delete(session_events).where(session_events.c.subject == subject))
        await tx.conn.execute(sa.update(sessions).where(sessions.c.subject == subject).values(device_name=""))
        await tx.conn.execute(
            sa.update(revocations)
            .where(revocations.c.subject == subject, revocations.c.replaced_by_device_name.is_not(None))
            .values(replaced_by_device_name="")
        )
        return int(deleted.rowcount)
