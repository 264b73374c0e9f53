"""The engines: one per process, tuned for the database it points at.

On SQLite every connection is set up here (pragmas, WAL, write transactions that begin
IMMEDIATE); on PostgreSQL :func:`authority.store.postgres.create_postgres_engine` does it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authority.store.postgres import create_postgres_engine

# The execution option that marks a read-only unit of work (SQLite begins it deferred).
READ_ONLY = "authority_read_only"


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


def url_of(engine: AsyncEngine) -> str:
    """The URL ``engine`` connects to, password included: for another engine on it."""
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
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
