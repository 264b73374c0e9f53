"""Every query the authority runs.

:class:`Store` owns the engine, runs short reads, and opens units of work; a
:class:`Tx` is one transaction. Database and driver exceptions stop here: anything
that means the database cannot be reached, or that a change did not commit, leaves as
:class:`~authority.errors.StoreUnavailable`.

Writers to one subject are serialised: on PostgreSQL by a transaction-scoped advisory
lock keyed by the subject, on SQLite because every transaction begins IMMEDIATE and
SQLite admits one writer at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from authority.errors import StoreUnavailable
from authority.store.file_lock import held_beside
from authority.store.log_order import FINAL_BELOW_SQL, LogPage, log_page_query, settled
from authority.store.postgres import LOG_STATE_QUERY, create_postgres_engine
from authority.store.records import (
    KeyRecord,
    LogState,
    RefreshRecord,
    RetainedKeyRecord,
    Revocation,
    RevocationCause,
    RevocationDetail,
    SessionEvent,
    SessionEventKind,
    SessionRecord,
)
from authority.store.reach import sqlite_path
from authority.store.schema import (
    log_epoch,
    refresh_tokens,
    retained_public_keys,
    revocations,
    session_events,
    sessions,
    signing_keys,
)
from authority.store.unavailable import means_unavailable

# Errors that mean "the database is not there", as opposed to a bug in a query; the
# rest are judged by what they say (authority.store.unavailable).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    OSError,
)
# What asyncpg raises itself where it is called directly (LISTEN, the start-up load).
_RAW_DRIVER_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
_RAW_UNAVAILABLE = _UNAVAILABLE + _RAW_DRIVER_ERRORS
_UNAVAILABLE_OR_FAILED: tuple[type[BaseException], ...] = (*_UNAVAILABLE, exc.DBAPIError)
_PING_FAILED: tuple[type[BaseException], ...] = (*_RAW_UNAVAILABLE, TimeoutError)
_PING_SECONDS = 5.0
_READ_ONLY = "authority_read_only"
# The start-up load stops where the log stops being final: the follower reads on from there.
# What committed after that point is loaded as pending (sequence 0: no position).
_PENDING_LIVE_ROWS = (
    "SELECT 0, session_id, expires_at, cause FROM revocation_log WHERE sequence > $1 AND expires_at > $2"
)
_LIVE_ROWS = (
    "SELECT sequence, session_id, expires_at, cause FROM revocation_log"
    f" WHERE sequence > $1 AND expires_at > $2 AND sequence < {FINAL_BELOW_SQL} ORDER BY sequence LIMIT $3"
)
_KEYS_LOCK = 0x61757468_6B657973  # advisory lock ids: "auth" "keys"
MIGRATIONS_LOCK = 0x61757468_6D696772  # "auth" "migr"
MAINTENANCE_LOCK = 0x61757468_6D61696E  # "auth" "main"
# Consumers' backlog reads that run at once (see Store.backlog_after).
BACKLOG_READERS = 2
# PostgreSQL NOTIFY channels: an entry committed to a log (revocations or session events:
# followers read both), the signing keys changed.
REVOCATIONS_CHANNEL = "authority_revocations"
KEYS_CHANNEL = "authority_keys"


def subject_lock_id(subject: str) -> int:
    """The PostgreSQL advisory lock that serialises writers to ``subject``."""
    digest = hashlib.blake2b(subject.encode(), digest_size=8, person=b"subject").digest()
    return int.from_bytes(digest, "big", signed=True)


def create_engine(url: str, *, connections: int | None = None, transaction_pooling: bool = False) -> AsyncEngine:
    """One engine per process, tuned for the store it points at; ``connections`` fixes the
    size of the pool, for a reader that must not share the main one."""
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and queueing here is cheaper
        # than busy-waiting inside SQLite.
        engine = create_async_engine(
            url, pool_size=connections or 1, max_overflow=0, pool_timeout=30, hide_parameters=True,
            async_creator=_sqlite_connector(url),
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_postgres_engine(url, connections=connections, transaction_pooling=transaction_pooling)


def _url_of(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _sqlite_connector(url: str) -> Callable[[], Awaitable[Any]]:
    """Opens aiosqlite connections as SQLAlchemy would, and waits out a failed one.

    When a connect fails, aiosqlite stops its worker thread with a future of the
    running loop that nobody awaits. A process exiting on that error closes the loop
    first, and the thread, finding it closed, prints ``RuntimeError: Event loop is
    closed`` from ``_connection_worker_thread``. Joining the thread here, while the loop
    is still open, lets it finish cleanly; it only has the failed connection to drop.
    """
    args, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))

    async def connect() -> Any:
        connection = aiosqlite.connect(*args, **options)
        # aiosqlite 0.22 keeps its thread in _thread; earlier versions were the thread.
        worker = connection if isinstance(connection, threading.Thread) else connection._thread
        worker.daemon = True  # as SQLAlchemy sets it: never keeps the process alive
        try:
            return await connection
        except BaseException:
            worker.join(timeout=5)
            raise

    return connect


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let the begin hook, not the driver, start transactions (SQLAlchemy's recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # FULL: an acknowledged revocation survives a power cut, not only a crash.
    for pragma in ("busy_timeout=10000", "foreign_keys=ON", "synchronous=FULL"):
        cursor.execute(f"PRAGMA {pragma}")
    # WAL is a property of the file, set once. Switching to it needs the file to itself,
    # and SQLite answers "database is locked" at once (no busy wait) while another
    # process works on a new file: so it is set only when not set yet, retrying briefly.
    for attempt in range(50):
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            break
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except Exception as error:
            if "locked" not in str(error) or attempt == 49:
                raise
            time.sleep(0.02)  # at connect only, and only on a brand-new file
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock at once, so a read-then-write transaction can
    # never be overtaken by another writer between its read and its write. Reads
    # begin deferred: in WAL mode they neither wait for writers nor hold them up.
    if connection.get_execution_options().get(_READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_of(row: Any) -> SessionRecord:
    """The session a ``sessions`` row holds."""
    return SessionRecord(**{column: row._mapping[column] for column in SessionRecord.__slots__})


_session = session_of


def live_sessions_query(subject: str, now: float, idle_cutoff: float | None) -> sa.Select[Any]:
    """The subject's live sessions, oldest first."""
    return (
        sa.select(sessions)
        .where(sessions.c.subject == subject, _live(now, idle_cutoff))
        .order_by(sessions.c.created_at, sessions.c.session_id)
    )


def _revocation(row: Any) -> Revocation:
    return Revocation(
        row.sequence, row.session_id, row.token_id, row.expires_at, RevocationCause(row.cause),
        row.replaced_by_device_id or "",
    )


def _live(now: float, idle_cutoff: float | None) -> sa.ColumnElement[bool]:
    condition = sa.and_(sessions.c.revoked_at.is_(None), sessions.c.expires_at > now)
    if idle_cutoff is not None:
        condition = sa.and_(condition, sessions.c.last_used_at > idle_cutoff)
    return condition


def _translated(error: BaseException) -> StoreUnavailable | None:
    """The domain error for a driver error that means "not available now", else None."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return StoreUnavailable("the database connection was lost")
    if isinstance(error, _UNAVAILABLE) or means_unavailable(error):
        return StoreUnavailable("the database is unavailable; try again")
    return None


class Store:
    """The database behind the authority.

    ``session_engine`` serves what needs a connection of its own for longer than a
    transaction (LISTEN, the session-level maintenance lock): the main engine, unless
    the main pool runs through a transaction pooler.
    """

    def __init__(
        self, engine: AsyncEngine, session_engine: AsyncEngine | None = None, backlog: Store | None = None,
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

    @classmethod
    def open(cls, url: str, *, listen_url: str = "", transaction_pooling: bool = False) -> Store:
        """A store on ``url`` (LISTEN and session locks on ``listen_url`` when given);
        nothing is connected until first use."""
        engine = create_engine(url, transaction_pooling=transaction_pooling)
        session_engine = create_engine(listen_url) if listen_url and listen_url != url else None
        # On SQLite the backlogs have connections of their own: WAL readers neither wait
        # for the one writer's connection nor hold it. PostgreSQL's pool serves them, capped.
        backlog = cls(create_engine(url, connections=BACKLOG_READERS)) if url.startswith("sqlite") else None
        return cls(engine, session_engine, backlog, transaction_pooling=transaction_pooling)

    def dedicated(self) -> Store:
        """A store on the same database with connections of its own (a reader and, on
        PostgreSQL, a listener): for the log follower, so that the authority's own view of
        the log never waits behind its consumers' reads or its callers' writes."""
        engine = create_engine(_url_of(self.engine), connections=2, transaction_pooling=self._transaction_pooling)
        session_engine = None
        if self.session_engine is not self.engine:
            session_engine = create_engine(_url_of(self.session_engine), connections=2)
        return Store(engine, session_engine, transaction_pooling=self._transaction_pooling)

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()
        if self.session_engine is not self.engine:
            await self.session_engine.dispose()
        if self._backlog is not None:
            await self._backlog.close()

    def _connected(self, _dbapi_connection: Any, _record: Any) -> None:
        if self._lost:
            self._lost = False
            self.reconnects += 1

    def _unavailable(self, error: BaseException) -> StoreUnavailable | None:
        translated = _translated(error)
        if translated is not None:
            self._lost = True
        return translated

    async def backlog_after(self, sequence: int, limit: int) -> list[Revocation]:
        """:meth:`revocations_after` for a consumer's feed: on the backlog connections, at
        most :data:`BACKLOG_READERS` at once."""
        async with self._backlog_reads:
            return await (self._backlog or self).revocations_after(sequence, limit)

    @asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[Tx]:
        """One unit of work: commits when the block ends, rolls back if it raises.

        ``read_only`` transactions take no write lock on SQLite.
        """
        try:
            async with self.engine.connect() as conn:
                if read_only:
                    await conn.execution_options(**{_READ_ONLY: True})
                async with conn.begin():
                    tx = Tx(conn, self.is_postgres)
                    yield tx
                    # One statement for every event the unit of work recorded.
                    await tx.flush_events()
            if not read_only:
                self.last_write_at = time.monotonic()
        except Exception as error:
            if (translated := self._unavailable(error)) is not None:
                raise translated from error
            raise

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
        try:
            async with self.engine.connect() as conn:
                yield await conn.execution_options(isolation_level="AUTOCOMMIT")
            if writes:
                self.last_write_at = time.monotonic()
        except Exception as error:
            if (translated := self._unavailable(error)) is not None:
                raise translated from error
            raise

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

    async def keys(self) -> list[KeyRecord]:
        """Every stored signing key."""
        async with self.transaction(read_only=True) as tx:
            return await tx.keys()

    async def retained_keys(self) -> list[RetainedKeyRecord]:
        """Every retained public key (kept for logout)."""
        async with self.transaction(read_only=True) as tx:
            return await tx.retained_keys()

    async def retained_key_ids(self) -> frozenset[str]:
        """The kids of the retained public keys."""
        async with self.transaction(read_only=True) as tx:
            return frozenset((await tx.conn.execute(sa.select(retained_public_keys.c.kid))).scalars())

    async def key_ids(self) -> frozenset[str]:
        """The kids of the stored signing keys: a cheap way to notice a rotation."""
        async with self.transaction(read_only=True) as tx:
            return frozenset((await tx.conn.execute(sa.select(signing_keys.c.kid))).scalars())

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
        except _RAW_UNAVAILABLE as error:
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
            path = sqlite_path(_url_of(self.engine))
            if path is None:
                yield True
                return
            with held_beside(path, lock_id) as held:
                yield held
            return
        try:
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
                        except _UNAVAILABLE_OR_FAILED:
                            # Never back into the pool still holding the lock: closing frees it.
                            await conn.invalidate()
        except Exception as error:
            if (translated := self._unavailable(error)) is not None:
                raise translated from error
            raise

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        async with self.transaction(read_only=True) as tx:
            return await tx.live_sessions(subject, now, idle_cutoff)

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

    async def count_live_sessions(self, now: float, idle_cutoff: float | None) -> int:
        """How many sessions are live, over all subjects (for a gauge)."""
        async with self.transaction(read_only=True) as tx:
            query = sa.select(sa.func.count()).select_from(sessions).where(_live(now, idle_cutoff))
            return int((await tx.conn.execute(query)).scalar_one())

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
                    await conn.execution_options(**{_READ_ONLY: True})
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
            except _RAW_UNAVAILABLE as error:
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
        either, a position read before may name another entry or none.
        """
        async with self.reading() as conn:
            if not self.is_postgres:
                epoch = (await conn.execute(sa.select(log_epoch.c.epoch).where(log_epoch.c.id == 1))).scalar_one()
                return LogState(str(epoch), "sqlite", True)
            row = (await conn.exec_driver_sql(LOG_STATE_QUERY)).one()
        if row.in_recovery or row.timeline is None:
            # target_session_attrs keeps standbys out; one that slips through is not the log.
            raise StoreUnavailable("the database is a standby; waiting for the primary")
        return LogState(f"{row.epoch}-{int(row.timeline, 16)}", str(row.host), True)

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
        async with self.reading() as conn:
            rows = (await conn.execute(log_page_query(revocations, sequence, limit, self.is_postgres))).all()
        return LogPage.of([_revocation(row) for row in rows], rows, lambda entry: entry.sequence)

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


class Listening:
    """A connection that listens for notifications (none on SQLite)."""

    def __init__(self, driver: Any, lost: asyncio.Event) -> None:
        self._driver = driver
        self._lost = lost

    async def alive(self, within: float) -> bool:
        """Waits up to ``within`` seconds; False once the connection is known lost. A
        connection cut without a reset says nothing, so it is asked to answer a ping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), within)
        if self._lost.is_set():
            return False
        if self._driver is None:
            return True
        try:
            await asyncio.wait_for(self._driver.fetchval("SELECT 1"), _PING_SECONDS)
        except _PING_FAILED:
            return False
        return True


class Tx:
    """One open transaction; every method runs inside it."""

    def __init__(self, conn: AsyncConnection, is_postgres: bool) -> None:
        self.conn = conn
        self.is_postgres = is_postgres
        self._notified: set[str] = set()
        # Session events recorded in this transaction, written just before it commits.
        self._events: list[SessionEvent] = []

    async def _logged(self) -> None:
        # Both logs (revocations and session events) share one channel. No lock: entries
        # reach readers in order by their positions alone (authority/store/log_order.py).
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
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_KEYS_LOCK)))

    async def keys(self) -> list[KeyRecord]:
        """Every stored signing key."""
        rows = await self.conn.execute(sa.select(signing_keys))
        return [KeyRecord(r.kid, r.algorithm, r.private_key, r.created_at, r.activates_at) for r in rows]

    async def insert_key(self, key: KeyRecord) -> None:
        """Stores a new signing key and tells every replica (at commit)."""
        await self.conn.execute(
            sa.insert(signing_keys).values(
                kid=key.kid,
                algorithm=key.algorithm,
                private_key=key.private_key,
                created_at=key.created_at,
                activates_at=key.activates_at,
            )
        )
        await self._notify(KEYS_CHANNEL)

    async def delete_keys(self, kids: Sequence[str]) -> None:
        """Deletes signing keys and tells every replica (at commit)."""
        await self.conn.execute(sa.delete(signing_keys).where(signing_keys.c.kid.in_(kids)))
        await self._notify(KEYS_CHANNEL)

    async def _notify(self, channel: str) -> None:
        # NOTIFY is transactional: listeners hear it when, and only if, this commits; and
        # once per transaction is enough.
        if self.is_postgres and channel not in self._notified:
            self._notified.add(channel)
            await self.conn.execute(sa.select(sa.func.pg_notify(channel, "")))

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        return [_session(row) for row in await self.conn.execute(live_sessions_query(subject, now, idle_cutoff))]

    async def session(self, session_id: str) -> SessionRecord | None:
        """One session, live or not."""
        row = (await self.conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id))).first()
        return None if row is None else _session(row)

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
        return None if row is None else RefreshRecord(_session(row), row.used_at)

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

    # --- public halves of purged keys, for logout (authority/keys.py) ------------------

    async def retained_keys(self) -> list[RetainedKeyRecord]:
        """Every retained public key."""
        rows = await self.conn.execute(sa.select(retained_public_keys))
        return [RetainedKeyRecord(r.kid, r.algorithm, r.public_key, r.replaced_at) for r in rows]

    async def retain_keys(self, keys: Sequence[RetainedKeyRecord]) -> None:
        """Keeps the public halves of keys about to be deleted (tells replicas at commit)."""
        for key in keys:
            await self.conn.execute(
                sa.insert(retained_public_keys).values(
                    kid=key.kid, algorithm=key.algorithm, public_key=key.public_key, replaced_at=key.replaced_at
                )
            )
        await self._notify(KEYS_CHANNEL)

    async def forget_retained_keys(self, kids: Sequence[str]) -> None:
        """Deletes retained public keys no session can need (tells replicas at commit)."""
        await self.conn.execute(sa.delete(retained_public_keys).where(retained_public_keys.c.kid.in_(kids)))
        await self._notify(KEYS_CHANNEL)
