"""The queries over sessions and refresh tokens inside a unit of work.

A session is signed in with its first refresh token, refreshed by trading a token for the
next, and ended by :meth:`SessionQueries.revoke`, which also appends it to the revocation
log with a SESSION_ENDED event. Which sessions to end, and why, the domain decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from authority.store.records import (
    RefreshRecord,
    Revocation,
    RevocationCause,
    SessionEvent,
    SessionEventKind,
    SessionRecord,
)
from authority.store.schema import refresh_tokens, revocations, sessions
from authority.store.unit_of_work import UnitOfWork


def session_of(row: Any) -> SessionRecord:
    """The session a ``sessions`` row holds."""
    return SessionRecord(**{column: row._mapping[column] for column in SessionRecord.__slots__})


def live_sessions_query(subject: str, now: float, idle_cutoff: float | None) -> sa.Select[Any]:
    """The subject's live sessions, oldest first."""
    return (
        sa.select(sessions)
        .where(sessions.c.subject == subject, live_condition(now, idle_cutoff))
        .order_by(sessions.c.created_at, sessions.c.session_id)
    )


def live_condition(now: float, idle_cutoff: float | None) -> sa.ColumnElement[bool]:
    """A ``sessions`` row is live: not revoked, not expired, and (with an idle timeout) used since."""
    condition = sa.and_(sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)
    if idle_cutoff is not None:
        condition = sa.and_(condition, sessions.c.last_used_at > idle_cutoff)
    return condition


class SessionQueries(UnitOfWork):
    """A unit of work's queries over sessions and refresh tokens (part of :class:`authority.store.Tx`)."""

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        return [session_of(row) for row in await self.conn.execute(live_sessions_query(subject, now, idle_cutoff))]

    async def session(self, session_id: str) -> SessionRecord | None:
        """One session, live or not."""
        row = (await self.conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id))).first()
        return None if row is None else session_of(row)

    async def insert_session(self, session: SessionRecord, refresh_hash: str) -> None:
        """Stores a new session with its first refresh token."""
        values = {column: getattr(session, column) for column in SessionRecord.__slots__}
        await self.conn.execute(sa.insert(sessions).values(**values))
        await self.insert_refresh_token(
            refresh_hash, session.session_id, session.created_at, key_thumbprint=session.key_thumbprint
        )

    async def insert_refresh_token(
        self, token_hash: str, session_id: str, now: float, rotated_from: str | None = None, *, key_thumbprint: str
    ) -> None:
        """Stores the hash of a newly issued refresh token (and of the one it was traded for),
        with its session's key thumbprint ("" for a bearer session), which must be the
        session's (see the column in authority/store/schema.py)."""
        await self.conn.execute(
            sa.insert(refresh_tokens).values(
                token_hash=token_hash, session_id=session_id, issued_at=now, rotated_from=rotated_from,
                key_thumbprint=key_thumbprint,
            )
        )

    async def refresh_token(self, token_hash: str, *, for_update: bool = False) -> RefreshRecord | None:
        """The refresh token with this hash and its session, or None; ``for_update`` locks
        the session's row (on PostgreSQL) until the transaction ends."""
        query = (
            sa.select(sessions, refresh_tokens.c.used_at)
            .join(refresh_tokens, refresh_tokens.c.session_id == sessions.c.session_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        )
        if for_update:
            query = query.with_for_update(of=sessions)
        row = (await self.conn.execute(query)).first()
        return None if row is None else RefreshRecord(session_of(row), row.used_at)

    async def use_refresh_token(self, token_hash: str, now: float) -> None:
        """Marks a refresh token traded."""
        await self.conn.execute(
            sa.update(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).values(used_at=now)
        )

    async def touch_session(self, session_id: str, now: float, access_expires_at: float) -> None:
        """Records a refresh: the session was used now, and its newest access token expires then."""
        await self.conn.execute(
            sa.update(sessions)
            .where(sessions.c.session_id == session_id)
            .values(last_used_at=now, access_expires_at=access_expires_at)
        )

    async def revoke(
        self,
        ended: Sequence[SessionRecord],
        now: float,
        reason: str,
        token_id: str | None = None,
        *,
        cause: RevocationCause = RevocationCause.UNSPECIFIED,
        replaced_by: tuple[str, str] | None = None,
        caller: str = "",
    ) -> list[Revocation]:
        """Revokes sessions not yet revoked and appends them to the log, each with a
        SESSION_ENDED event; returns the entries. ``replaced_by`` is the (device_id,
        device_name) that signed in, for a replacement.

        The entries reach followers in position order however the transactions writing
        them interleave (authority/store/log_order.py).
        """
        entries: list[Revocation] = []
        for session in ended:
            result = await self.conn.execute(
                sa.update(sessions)
                .where(sessions.c.session_id == session.session_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            if result.rowcount != 1:
                continue
            await self._logged()
            sequence = (
                await self.conn.execute(
                    sa.insert(revocations)
                    .values(
                        session_id=session.session_id,
                        token_id=token_id,
                        subject=session.subject,
                        reason=reason,
                        revoked_at=now,
                        expires_at=session.access_expires_at,
                        cause=int(cause),
                        replaced_by_device_id=None if replaced_by is None else replaced_by[0],
                        replaced_by_device_name=None if replaced_by is None else replaced_by[1],
                    )
                    .returning(revocations.c.sequence)
                )
            ).scalar_one()
            entries.append(
                Revocation(
                    sequence, session.session_id, token_id, session.access_expires_at, cause,
                    "" if replaced_by is None else replaced_by[0],
                )
            )
            self.record(
                SessionEvent(
                    SessionEventKind.SESSION_ENDED, now, session.subject, session.session_id, session.device_id,
                    session.device_class, session.device_name, cause=cause, caller=caller,
                )
            )
        return entries

    # --- the reuse grace period (authority/sessions.py) ---------------------------------

    async def unused_refresh_tokens_from(self, session_id: str) -> list[str | None]:
        """What each of the session's untraded refresh tokens was traded for (None for a
        sign-in's): normally one entry."""
        query = sa.select(refresh_tokens.c.rotated_from).where(
            refresh_tokens.c.session_id == session_id, refresh_tokens.c.used_at.is_(None)
        )
        return list((await self.conn.execute(query)).scalars())

    async def end_unused_refresh_tokens(self, session_id: str, now: float) -> None:
        """Marks every untraded refresh token of the session traded: presenting one again
        counts as reuse."""
        await self.conn.execute(
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.session_id == session_id, refresh_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
