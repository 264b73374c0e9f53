"""Maintenance: the purge of what has expired, one batch per unit of work.

Expired revocations leave the log, and ended sessions leave with their refresh tokens
once no access token of theirs can still validate. The maintenance loop
(:mod:`authority.app`) runs them on one replica at a time, under
:data:`authority.store.coordination.MAINTENANCE_LOCK`.
"""

from __future__ import annotations

import sqlalchemy as sa

from authority.store.connections import Connections
from authority.store.schema import refresh_tokens, revocations, sessions


class Maintenance(Connections):
    """The store's purges (part of :class:`authority.store.Store`)."""

    async def purge_revocations(self, expired_before: float, batch_size: int) -> int:
        """Deletes one batch of expired revocations; returns how many."""
        async with self.transaction() as tx:
            batch = sa.select(revocations.c.sequence).where(revocations.c.expires_at < expired_before).limit(batch_size)
            result = await tx.conn.execute(sa.delete(revocations).where(revocations.c.sequence.in_(batch)))
            return int(result.rowcount)

    async def purge_sessions(self, ended_before: float, idle_cutoff: float | None, batch_size: int) -> int:
        """Deletes one batch of ended sessions, and their refresh tokens, whose access tokens have
        all expired; returns how many sessions."""
        ended = sa.or_(sessions.c.expires_at < ended_before, sessions.c.revoked_at.is_not(None))
        if idle_cutoff is not None:
            ended = sa.or_(ended, sessions.c.last_used_at < idle_cutoff)
        ended = sa.and_(ended, sessions.c.access_expires_at < ended_before)
        async with self.transaction() as tx:
            query = sa.select(sessions.c.session_id).where(ended).limit(batch_size)
            batch = list((await tx.conn.execute(query)).scalars())
            if not batch:
                return 0
            # The condition is checked again as rows are deleted: a session refreshed since
            # the select (the refresh holds its row) is no longer ended and stays.
            purged = list(
                (
                    await tx.conn.execute(
                        sa.delete(sessions)
                        .where(sessions.c.session_id.in_(batch), ended)
                        .returning(sessions.c.session_id)
                    )
                ).scalars()
            )
            if purged:
                await tx.conn.execute(sa.delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(purged)))
            return len(purged)
