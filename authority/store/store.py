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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from authority.errors import StoreUnavailable
from authority.store.records import (
    KeyRecord,
    RefreshRecord,
    Revocation,
    RevocationCause,
    RevocationDetail,
    SessionEvent,
    SessionEventKind,
    SessionRecord,
)
from authority.store.schema import refresh_tokens, revocations, session_events, sessions, signing_keys

# Errors that mean "the database is not there", as opposed to a bug in a query.
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
# SQLSTATEs of work the server gave up on: a lock not granted in time (lock_timeout), a
# statement cancelled, a transaction ended for idling. Nothing committed; retry later.
_GAVE_UP = frozenset({"55P03", "57014", "25P03"})
_LIVE_ROWS = (
    "SELECT sequence, session_id, expires_at, cause FROM revocations"
    " WHERE sequence > $1 AND expires_at > $2 ORDER BY sequence LIMIT $3"
)
_KEYS_LOCK = 0x61757468_6B657973  # advisory lock ids: "auth" "keys"
_LOG_LOCK = 0x61757468_6C6F6773  # "auth" "logs"
MIGRATIONS_LOCK = 0x61757468_6D696772  # "auth" "migr"
MAINTENANCE_LOCK = 0x61757468_6D61696E  # "auth" "main"
# PostgreSQL NOTIFY channels: an entry committed to a log (revocations or session events:
# followers read both), the signing keys changed.
REVOCATIONS_CHANNEL = "authority_revocations"
KEYS_CHANNEL = "authority_keys"


def subject_lock_id(subject: str) -> int:
    """The PostgreSQL advisory lock that serialises writers to ``subject``."""
    digest = hashlib.blake2b(subject.encode(), digest_size=8, person=b"subject").digest()
    return int.from_bytes(digest, "big", signed=True)


def create_engine(url: str) -> AsyncEngine:
    """One engine per process, tuned for the store it points at."""
    if url.startswith("sqlite"):
        # One connection: SQLite has one writer anyway, and queueing here is cheaper
        # than busy-waiting inside SQLite.
        engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=30, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_timeout=5,
        pool_pre_ping=True,
        # Parameters hold subjects and claims; keep them out of error messages and logs.
        hide_parameters=True,
        connect_args={
            "timeout": 5,
            "command_timeout": 10,
            # A replica cut off mid-transaction must not hold its locks (a subject's, the
            # revocation log's) until PostgreSQL notices the dead connection, hours later:
            # the server ends a transaction left idle for 3 s (ours idle for microseconds
            # between statements), and no caller waits on a lock for more than 5 s.
            # Keepalives find a silent peer in about a minute, which frees the
            # session-level maintenance lock of a replica that vanished.
            "server_settings": {
                "idle_in_transaction_session_timeout": "3s",
                "lock_timeout": "5s",
                "tcp_keepalives_idle": "30",
                "tcp_keepalives_interval": "10",
                "tcp_keepalives_count": "3",
            },
        },
    )


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


def _session(row: Any) -> SessionRecord:
    return SessionRecord(**{column: row._mapping[column] for column in SessionRecord.__slots__})


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


class Store:
    """The database behind the authority."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str) -> Store:
        """A store on ``url``; nothing is connected until first use."""
        return cls(create_engine(url))

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self.engine.dispose()

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
                    # Last, so the log's lock is held for as short a time as can be.
                    await tx.flush_events()
        except _UNAVAILABLE as error:
            raise StoreUnavailable("the database is unavailable") from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailable("the database connection was lost") from error
            if getattr(error.orig, "sqlstate", None) in _GAVE_UP:
                raise StoreUnavailable("the database is busy; try again") from error
            raise

    async def keys(self) -> list[KeyRecord]:
        """Every stored signing key."""
        async with self.transaction(read_only=True) as tx:
            return await tx.keys()

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
            async with self.engine.connect() as conn:
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
            raise StoreUnavailable("the database is unavailable") from error
        except exc.DBAPIError as error:
            raise StoreUnavailable("the database connection was lost") from error

    @asynccontextmanager
    async def exclusive(self, lock_id: int) -> AsyncIterator[bool]:
        """Yields whether this process holds ``lock_id`` across all replicas for the block
        (PostgreSQL session-level advisory lock, not waited for); always True on SQLite."""
        if not self.is_postgres:
            yield True
            return
        try:
            async with self.engine.connect() as conn:
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
        except _UNAVAILABLE as error:
            raise StoreUnavailable("the database is unavailable") from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailable("the database connection was lost") from error
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
        On PostgreSQL the rows come straight from the driver, without building objects."""
        after = 0
        while True:
            try:
                async with self.engine.connect() as conn:
                    await conn.execution_options(**{_READ_ONLY: True})
                    if self.is_postgres:
                        raw = await conn.get_raw_connection()
                        driver: Any = raw.driver_connection
                        rows: Sequence[Sequence[Any]] = await driver.fetch(_LIVE_ROWS, after, expires_after, batch_size)
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
                raise StoreUnavailable("the database is unavailable") from error
            except exc.DBAPIError as error:
                raise StoreUnavailable("the database connection was lost") from error
            if not rows:
                return
            yield rows
            after = rows[-1][0]

    async def revocations_after(self, sequence: int, limit: int) -> list[Revocation]:
        """Up to ``limit`` log entries after ``sequence``, in order.

        Runs to the end even when the caller is cancelled (a consumer hanging up, a
        server stopping): a query cut off midway can leave a connection unusable.
        """
        return await asyncio.shield(self._revocations_after(sequence, limit))

    async def _revocations_after(self, sequence: int, limit: int) -> list[Revocation]:
        async with self.transaction(read_only=True) as tx:
            query = (
                sa.select(revocations)
                .where(revocations.c.sequence > sequence)
                .order_by(revocations.c.sequence)
                .limit(limit)
            )
            rows = (await tx.conn.execute(query)).all()
        return [_revocation(row) for row in rows]

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
        self._log_locked = False
        self._notified: set[str] = set()
        # Session events recorded in this transaction, written just before it commits.
        self._events: list[SessionEvent] = []

    async def _lock_log(self) -> None:
        # One lock for both logs (revocations and session events), held until commit, so
        # that entries become visible in sequence order: a reader that resumes after a
        # sequence never skips an entry that commits later. Followers are notified before
        # it is taken (NOTIFY is delivered at commit wherever it is sent), so that the lock,
        # which every sign-in waits for, is held for the inserts and the commit alone.
        await self._notify(REVOCATIONS_CHANNEL)
        if self.is_postgres and not self._log_locked:
            await self.conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOG_LOCK)))
        self._log_locked = True

    def record(self, event: SessionEvent) -> None:
        """Appends ``event`` to the session event log when (and only if) this commits."""
        self._events.append(event)

    async def flush_events(self) -> None:
        """Writes the recorded session events, in one statement; the transaction does this
        just before it commits."""
        if not self._events:
            return
        await self._lock_log()
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
        query = (
            sa.select(sessions)
            .where(sessions.c.subject == subject, _live(now, idle_cutoff))
            .order_by(sessions.c.created_at, sessions.c.session_id)
        )
        return [_session(row) for row in await self.conn.execute(query)]

    async def session(self, session_id: str) -> SessionRecord | None:
        """One session, live or not."""
        row = (await self.conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id))).first()
        return None if row is None else _session(row)

    async def insert_session(self, session: SessionRecord, refresh_hash: str) -> None:
        """Stores a new session with its first refresh token."""
        values = {column: getattr(session, column) for column in SessionRecord.__slots__}
        await self.conn.execute(sa.insert(sessions).values(**values))
        await self.insert_refresh_token(refresh_hash, session.session_id, session.created_at)

    async def insert_refresh_token(self, token_hash: str, session_id: str, now: float) -> None:
        """Stores the hash of a newly issued refresh token."""
        await self.conn.execute(
            sa.insert(refresh_tokens).values(token_hash=token_hash, session_id=session_id, issued_at=now)
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

        Call it last in a transaction: on PostgreSQL it takes the log's lock, held until
        commit, so that entries become visible in sequence order and a reader that
        resumes after a sequence never skips an entry that commits later.
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
            await self._lock_log()
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
