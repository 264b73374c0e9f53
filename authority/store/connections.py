"""The store's connections: its engines, its units of work, and the connections it holds longer.

:class:`Connections` owns the engines, opens units of work (a :class:`Tx` is one
transaction), and holds a connection of its own where a transaction is too short:
LISTEN, and the session-level lock of :meth:`Connections.exclusive`. Database and driver
exceptions stop here: anything that means the database cannot be reached, or that a
change did not commit, leaves as :class:`~authority.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from authority.errors import AuthorityError, StoreUnavailable
from authority.store.coordination import REVOCATIONS_CHANNEL, Listening
from authority.store.engine import READ_ONLY, url_of
from authority.store.file_lock import held_beside
from authority.store.key_queries import KeyQueries
from authority.store.reach import sqlite_path
from authority.store.session_queries import SessionQueries
from authority.store.unavailable import (
    DRIVER_ERRORS,
    RAW_UNAVAILABLE,
    UNAVAILABLE_OR_FAILED,
    connection_lost,
    translated,
)

# Consumers' backlog reads that run at once (see Store.backlog_after).
BACKLOG_READERS = 2
# That the logs moved, committed without waiting for its WAL flush: it only wakes
# followers, which then read whatever committed before it (authority/store/log_notifier.py).
_NOTIFY_LOGS = f"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{REVOCATIONS_CHANNEL}', '')"


class Tx(SessionQueries, KeyQueries):
    """One open transaction; every method runs inside it."""


class Connections:
    """The database behind the authority: its engines and units of work.

    ``session_engine`` serves what needs a connection of its own for longer than a
    transaction (LISTEN, the session-level maintenance lock): the main engine, unless
    the main pool runs through a transaction pooler.
    """

    def __init__(
        self, engine: AsyncEngine, session_engine: AsyncEngine | None = None, backlog: Self | None = None,
        *, transaction_pooling: bool = False,
    ) -> None:
        self.engine = engine
        self.session_engine = session_engine or engine
        self.is_postgres = engine.dialect.name == "postgresql"
        # For the metrics: connections opened again after the database was lost, and
        # when a write last committed (monotonic).
        self.reconnects = 0
        self.last_write_at: float | None = None
        self._lost = False
        for each in {id(e): e for e in (self.engine, self.session_engine)}.values():
            event.listen(each.sync_engine, "connect", self._connected)
        # Consumers' backlogs (snapshots) are read by at most BACKLOG_READERS at once, the
        # others waiting their turn: any number of consumers takes a bounded share of the
        # database, and never the connections sign-ins and the log follower need.
        self._backlog = backlog
        self._backlog_reads = asyncio.Semaphore(BACKLOG_READERS)
        self._transaction_pooling = transaction_pooling
        # Called with whether the connection was lost, for every error of the checkouts
        # and statements of :meth:`driver`, which SQLAlchemy neither makes nor sees (its
        # handle_error hook counts the rest): the metrics' store error counter.
        self.driver_errors: Callable[[bool], None] | None = None
        # Called after a unit of work that wrote to the logs committed, instead of it
        # notifying in its own commit, when this process notifies the replicas itself
        # (log_notifier.py).
        self.notify_after_commit: Callable[[], None] | None = None
        self._driver_error_types = (*DRIVER_ERRORS, engine.dialect.loaded_dbapi.Error)

    @property
    def transaction_pooling(self) -> bool:
        """Whether the main pool runs through a transaction pooler (PgBouncer ``pool_mode = transaction``)."""
        return self._transaction_pooling

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()
        if self.session_engine is not self.engine:
            await self.session_engine.dispose()
        if self._backlog is not None:
            await self._backlog.close()

    def _driver_error(self, error: BaseException, lost: bool) -> None:
        if isinstance(error, self._driver_error_types):
            self.report_driver_errors(lost)

    def report_driver_errors(self, lost: bool) -> None:
        """Passes a driver error on to :attr:`driver_errors`: for a store of the same
        database on connections of its own (:meth:`Store.dedicated`), counted as this one's."""
        if self.driver_errors is not None:
            self.driver_errors(lost)

    def _connected(self, _dbapi_connection: Any, _record: Any) -> None:
        if self._lost:
            self._lost = False
            self.reconnects += 1

    def _unavailable(self, error: BaseException) -> StoreUnavailable | None:
        unavailable = translated(error)
        if unavailable is not None:
            self._lost = True
        return unavailable

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Errors that mean the database cannot serve now leave the block as StoreUnavailable."""
        try:
            yield
        except Exception as error:
            if (unavailable := self._unavailable(error)) is not None:
                raise unavailable from error
            raise


    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[Tx]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        ``read_only`` transactions take no write lock on SQLite.
        """
        with self._translated():
            async with self.engine.connect() as conn:
                if read_only:
                    await conn.execution_options(**{READ_ONLY: True})
                async with conn.begin():
                    tx = Tx(conn, self.is_postgres, self.notify_after_commit)
                    yield tx
                    # One statement for every event the unit of work recorded.
                    await tx.flush_events()
        if not read_only:
            self.last_write_at = time.monotonic()
        if tx.wrote_to_logs and tx.notify_after_commit is not None:
            tx.notify_after_commit()

    @asynccontextmanager
    async def autocommit(self, *, writes: bool = True) -> AsyncIterator[AsyncConnection]:
        """A PostgreSQL connection on which every statement commits by itself, in its own
        round trip (no BEGIN, no COMMIT): for work that is one statement, or a
        compare-and-write.

        Through a transaction pooler the statements run in one transaction instead: the
        driver prepares a statement, then executes it, and outside a transaction PgBouncer
        may hand the two to different server connections."""
        if self._transaction_pooling:
            async with self.transaction(read_only=not writes) as tx:
                yield tx.conn
            return
        with self._translated():
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
        if writes:
            self.last_write_at = time.monotonic()

    @asynccontextmanager
    async def driver(self, *, writes: bool = True) -> AsyncIterator[Any]:
        """The asyncpg connection under a pooled PostgreSQL connection, outside any
        transaction, for the statements run most often (a sign-in's, the follower's): sent
        to the driver as they are, each is prepared once per connection and then costs one
        round trip and a fraction of the CPU that SQLAlchemy's execution adds to every
        statement (about 60 against 160 µs here). Errors are translated as
        :meth:`autocommit`'s. Not through a transaction pooler, where a statement must run
        inside a transaction SQLAlchemy began: use :meth:`autocommit` there."""
        assert self.is_postgres and not self._transaction_pooling
        with self._translated():
            # Straight from the pool, without a SQLAlchemy Connection around it (about half
            # the CPU of a checkout): no isolation level to set, since nothing is begun on
            # it, and returning it to the pool sends nothing either.
            try:
                raw = await self.engine.raw_connection()
            except exc.TimeoutError:
                raise  # no pooled connection free in time: nothing the driver said
            except Exception as error:
                # A connect that timed out could not be made, as one refused.
                self._driver_error(error, isinstance(error, TimeoutError) or connection_lost(error))
                raise
            driver: Any = raw.driver_connection
            try:
                yield driver
            except BaseException as error:
                # A statement cut off midway (cancelled, timed out, its connection
                # failing) can leave asyncpg in the middle of an operation, which no
                # check at checkout sees: that connection is closed, never pooled
                # again. The domain's refusals (AuthorityError) come between statements.
                if isinstance(error, AuthorityError):
                    await greenlet_spawn(raw.close)
                else:
                    self._driver_error(error, driver.is_closed() or connection_lost(error))
                    with suppress(Exception):
                        await greenlet_spawn(raw.invalidate, error)  # which returns it to the pool, closed
                raise
            await greenlet_spawn(raw.close)
        if writes:
            self.last_write_at = time.monotonic()

    async def notify_logs(self) -> None:
        """Notifies the replicas' followers that the logs moved (PostgreSQL only), in a
        transaction of its own that does not wait for the disk: it writes nothing to
        lose, and holds PostgreSQL's notify lock only as long as it takes to commit."""
        if self._transaction_pooling:
            async with self.autocommit(writes=False) as conn:  # a transaction, there
                await conn.exec_driver_sql(_NOTIFY_LOGS)
            return
        async with self.driver(writes=False) as driver:
            await driver.execute(_NOTIFY_LOGS)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a read of one statement: on PostgreSQL without a transaction
        around it (one round trip instead of three: a statement has one snapshot anyway),
        on SQLite in a read-only transaction."""
        if self.is_postgres:
            async with self.autocommit(writes=False) as conn:
                yield conn
        else:
            async with self.transaction(read_only=True) as tx:
                yield tx.conn

    @asynccontextmanager
    async def notifications(
        self, channels: Sequence[str], notified: Callable[[str], None]
    ) -> AsyncIterator[Listening]:
        """Calls ``notified(channel)`` whenever a transaction that notified ``channel`` commits,
        while the block runs; :meth:`Listening.alive` says whether it still can.

        PostgreSQL only: on SQLite nothing is ever notified, and the listening lives on.
        """
        if not self.is_postgres:
            yield Listening(None, asyncio.Event())
            return
        lost = asyncio.Event()

        def on_notification(_connection: object, _pid: int, channel: str, _payload: str) -> None:
            notified(channel)

        def on_lost(*_: object) -> None:
            lost.set()

        try:
            async with self.session_engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection
                driver.add_termination_listener(on_lost)
                try:
                    for channel in channels:
                        await driver.add_listener(channel, on_notification)
                    yield Listening(driver, lost)
                finally:
                    driver.remove_termination_listener(on_lost)
                    # Closed, never returned to the pool still listening (or hung on a cut link).
                    await conn.invalidate()
        except RAW_UNAVAILABLE as error:
            self._lost = True
            raise StoreUnavailable("the database is unavailable") from error
        except exc.DBAPIError as error:
            self._lost = True
            raise StoreUnavailable("the database connection was lost") from error

    @asynccontextmanager
    async def exclusive(self, lock_id: int) -> AsyncIterator[bool]:
        """Yields whether this process holds ``lock_id`` across all replicas for the block
        (PostgreSQL session-level advisory lock, not waited for; on SQLite a lock file beside
        the database, see :mod:`authority.store.file_lock`; always True for a memory database)."""
        if not self.is_postgres:
            path = sqlite_path(url_of(self.engine))
            if path is None:
                yield True
                return
            with held_beside(path, lock_id) as held:
                yield held
            return
        with self._translated():
            async with self.session_engine.connect() as conn:
                held = bool((await conn.execute(sa.select(sa.func.pg_try_advisory_lock(lock_id)))).scalar_one())
                await conn.commit()
                try:
                    yield held
                finally:
                    if held:
                        try:
                            await conn.execute(sa.select(sa.func.pg_advisory_unlock(lock_id)))
                            await conn.commit()
                        except UNAVAILABLE_OR_FAILED:
                            # Never back into the pool still holding the lock: closing frees it.
                            await conn.invalidate()
