"""The reads of the revocation log: followers' pages, consumers' backlogs, the start-up load.

Entries reach readers in position order however the transactions writing them
interleave (:mod:`authority.store.log_order`): a page holds only what is final. The log's
epoch, read here and renewed after a restore, says which log a position belongs to.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from authority.errors import StoreUnavailable
from authority.store.connections import Connections
from authority.store.engine import READ_ONLY
from authority.store.log_order import FINAL_BELOW_SQL, LogPage, log_page_query, settled
from authority.store.postgres import LOG_STATE_QUERY
from authority.store.records import LogState, Revocation, RevocationCause, RevocationDetail
from authority.store.schema import log_epoch, revocations
from authority.store.unavailable import RAW_UNAVAILABLE

# The start-up load stops where the log stops being final: the follower reads on from there.
# What committed after that point is loaded as pending (sequence 0: no position).
_PENDING_LIVE_ROWS = (
    "SELECT 0, session_id, expires_at, cause FROM revocation_log WHERE sequence > $1 AND expires_at > $2"
)
_LIVE_ROWS = (
    "SELECT sequence, session_id, expires_at, cause FROM revocation_log"
    f" WHERE sequence > $1 AND expires_at > $2 AND sequence < {FINAL_BELOW_SQL} ORDER BY sequence LIMIT $3"
)

# A follower's page on PostgreSQL, sent to the driver as it is (Connections.driver), and
# where the log stops being final, from the same snapshot.
_PAGE = (
    "SELECT sequence, session_id, token_id, expires_at, cause, replaced_by_device_id,"
    f" {FINAL_BELOW_SQL} FROM revocation_log WHERE sequence > $1 ORDER BY sequence LIMIT $2"
)
# The follower's page and the log's state in one statement, so in one snapshot and one
# round trip: a row for each entry (its first seven columns) with the state (the last
# four), or the state alone with nulls when there is no entry.
_FOLLOWED_PAGE = (
    f"SELECT page.*, state.* FROM ({LOG_STATE_QUERY}) AS state LEFT JOIN LATERAL ({_PAGE}) AS page ON true"
    " ORDER BY page.sequence"
)


def _log_state(epoch: str, in_recovery: bool, timeline: str | None, host: str) -> LogState:
    if in_recovery or timeline is None:
        # target_session_attrs keeps standbys out; one that slips through is not the log.
        raise StoreUnavailable("the database is a standby; waiting for the primary")
    return LogState(f"{epoch}-{int(timeline, 16)}", str(host), True)


def _page(records: Sequence[Any]) -> LogPage[Revocation]:
    entries = [Revocation(r[0], r[1], r[2], r[3], RevocationCause(r[4]), r[5] or "") for r in records]
    return LogPage.split(entries, records[0][6], _sequence) if records else LogPage(entries, [])


def _sequence(entry: Revocation) -> int:
    return entry.sequence


def _revocation(row: Any) -> Revocation:
    return Revocation(
        row.sequence, row.session_id, row.token_id, row.expires_at, RevocationCause(row.cause),
        row.replaced_by_device_id or "",
    )


class LogReads(Connections):
    """The store's reads of the revocation log (part of :class:`authority.store.Store`)."""

    async def backlog_after(self, sequence: int, limit: int) -> list[Revocation]:
        """:meth:`revocations_after` for a consumer's feed: on the backlog connections, at
        most :data:`~authority.store.connections.BACKLOG_READERS` at once."""
        async with self._backlog_reads:
            return await (self._backlog or self).revocations_after(sequence, limit)

    async def revocation_detail(self, session_id: str) -> RevocationDetail | None:
        """Why and when ``session_id`` was revoked (its latest log entry), or None."""
        async with self.transaction(read_only=True) as tx:
            query = (
                sa.select(revocations)
                .where(revocations.c.session_id == session_id)
                .order_by(revocations.c.sequence.desc())
                .limit(1)
            )
            row = (await tx.conn.execute(query)).first()
        if row is None:
            return None
        return RevocationDetail(
            RevocationCause(row.cause), row.revoked_at, row.replaced_by_device_id or "", row.replaced_by_device_name or ""
        )

    async def live_revocations(self, expires_after: float, batch_size: int = 10_000) -> AsyncIterator[list[Revocation]]:
        """Every revocation that has not expired, in batches in log order."""
        after = 0
        while True:
            async with self.transaction(read_only=True) as tx:
                query = (
                    sa.select(revocations)
                    .where(revocations.c.sequence > after, revocations.c.expires_at > expires_after)
                    .order_by(revocations.c.sequence)
                    .limit(batch_size)
                )
                rows = (await tx.conn.execute(query)).all()
            # Built after the transaction ends: a slow consumer (a memory measurement under
            # tracemalloc) must not hold it open past idle_in_transaction_session_timeout.
            batch = [_revocation(row) for row in rows]
            if not batch:
                return
            yield batch
            after = batch[-1].sequence

    async def last_sequence(self) -> int:
        """The highest sequence in the log (0 when it is empty)."""
        async with self.transaction(read_only=True) as tx:
            return int((await tx.conn.execute(sa.select(sa.func.coalesce(sa.func.max(revocations.c.sequence), 0)))).scalar_one())

    async def live_revocation_rows(
        self, expires_after: float, batch_size: int = 250_000
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """Every live revocation as ``(sequence, session_id, expires_at)`` rows, in large
        batches in log order: the start-up load, where a million rows must take seconds.
        On PostgreSQL the rows come straight from the driver, without building objects.

        On PostgreSQL the batches stop where the log stops being final; then come, with
        sequence 0 (no position), the live entries committed after that point, which the
        follower passes on later (authority/store/log_order.py): the mirror enforces every
        committed entry from the start."""
        after, pending = 0, False
        while True:
            try:
                async with self.engine.connect() as conn:
                    await conn.execution_options(**{READ_ONLY: True})
                    if self.is_postgres:
                        raw = await conn.get_raw_connection()
                        driver: Any = raw.driver_connection
                        rows: Sequence[Sequence[Any]] = await driver.fetch(_LIVE_ROWS, after, expires_after, batch_size)
                        if not rows:
                            rows, pending = await driver.fetch(_PENDING_LIVE_ROWS, after, expires_after), True
                    else:
                        query = (
                            sa.select(
                                revocations.c.sequence, revocations.c.session_id, revocations.c.expires_at,
                                revocations.c.cause,
                            )
                            .where(revocations.c.sequence > after, revocations.c.expires_at > expires_after)
                            .order_by(revocations.c.sequence)
                            .limit(batch_size)
                        )
                        rows = (await conn.execute(query)).all()
            except RAW_UNAVAILABLE as error:
                self._lost = True
                raise StoreUnavailable("the database is unavailable") from error
            except exc.DBAPIError as error:
                self._lost = True
                raise StoreUnavailable("the database connection was lost") from error
            if rows:
                yield rows
            if not rows or pending:
                return
            after = rows[-1][0]

    async def log_state(self) -> LogState:
        """Which log the store holds (its epoch) and the server it is read from.

        The epoch is the random id the schema was made with, and on PostgreSQL the
        timeline too, which every promotion and point-in-time recovery moves on: after
        either, a position read before may name another entry or none. The follower reads
        it after every page, so on PostgreSQL it goes to the driver as it is.
        """
        if not self.is_postgres:
            async with self.reading() as conn:
                epoch = (await conn.execute(sa.select(log_epoch.c.epoch).where(log_epoch.c.id == 1))).scalar_one()
            return LogState(str(epoch), "sqlite", True)
        if self.transaction_pooling:
            async with self.reading() as conn:
                row: Any = (await conn.exec_driver_sql(LOG_STATE_QUERY)).one()
        else:
            async with self.driver(writes=False) as driver:
                row = await driver.fetchrow(LOG_STATE_QUERY)
        return _log_state(row[0], row[1], row[2], row[3])

    async def renew_epoch(self) -> str:
        """Gives the log a new random epoch id (after a restore); returns it."""
        epoch = secrets.token_hex(8)
        async with self.transaction() as tx:
            await tx.conn.execute(sa.update(log_epoch).where(log_epoch.c.id == 1).values(epoch=epoch))
        return epoch

    async def revocations_after(self, sequence: int, limit: int) -> list[Revocation]:
        """Up to ``limit`` log entries after ``sequence``, in order: only those that are
        final, which no late commit can precede (:mod:`authority.store.log_order`).

        Runs to the end even when the caller is cancelled (a consumer hanging up, a
        server stopping): a query cut off midway can leave a connection unusable.
        """
        return await asyncio.shield(self._revocations_after(sequence, limit))

    async def _revocations_after(self, sequence: int, limit: int) -> list[Revocation]:
        return await settled(lambda: self._log_after(sequence, limit))

    async def log_after(self, sequence: int, limit: int) -> LogPage[Revocation]:
        """Up to ``limit`` log entries after ``sequence``, in order, split where the log
        stops being final (:mod:`authority.store.log_order`); runs to the end as
        :meth:`revocations_after` does."""
        return await asyncio.shield(self._log_after(sequence, limit))

    async def _log_after(self, sequence: int, limit: int) -> LogPage[Revocation]:
        if self.is_postgres and not self.transaction_pooling:
            async with self.driver(writes=False) as driver:
                return _page(await driver.fetch(_PAGE, sequence, limit))
        async with self.reading() as conn:
            rows = (await conn.execute(log_page_query(revocations, sequence, limit, self.is_postgres))).all()
        return LogPage.of([_revocation(row) for row in rows], rows, lambda entry: entry.sequence)

    async def followed_page(self, sequence: int, limit: int) -> tuple[LogPage[Revocation], LogState]:
        """:meth:`log_after`, then :meth:`log_state`: which log the page was read from.
        On PostgreSQL both come from one statement (the follower's read after every
        notification, one round trip instead of two), so from one snapshot of one server."""
        return await asyncio.shield(self._followed_page(sequence, limit))

    async def _followed_page(self, sequence: int, limit: int) -> tuple[LogPage[Revocation], LogState]:
        if not self.is_postgres or self.transaction_pooling:
            return await self._log_after(sequence, limit), await self.log_state()
        async with self.driver(writes=False) as driver:
            records = await driver.fetch(_FOLLOWED_PAGE, sequence, limit)
        state = _log_state(*records[0][7:11])
        return _page(records if records[0][0] is not None else []), state
