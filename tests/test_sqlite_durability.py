"""SQLite keeps what it acknowledged through a power cut, and its maintenance runs in one
process at a time.

Every connection the store opens, for sign-ins, for the log follower and for consumers'
backlogs alike, runs in WAL mode with ``synchronous=FULL``: each commit waits for the
write-ahead log to reach the disk (NORMAL would leave the last commits to the operating
system's cache, lost in a power cut though not in a crash). The maintenance lock, an
advisory lock on PostgreSQL, is a lock file beside the database on SQLite.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from authority.store import Store
from authority.store.store import MAINTENANCE_LOCK

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


async def _pragmas(store: Store, *, read_only: bool) -> tuple[int, str]:
    async with store.transaction(read_only=read_only) as tx:
        synchronous = (await tx.conn.execute(sa.text("PRAGMA synchronous"))).scalar_one()
        journal = (await tx.conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
    return int(synchronous), str(journal).lower()


async def test_every_sqlite_connection_commits_durably(tmp_path: Path) -> None:
    store = Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}")
    follower = store.dedicated()
    try:
        for each in (store, follower, store._backlog):
            assert each is not None
            for read_only in (False, True):
                assert await _pragmas(each, read_only=read_only) == (FULL, "wal")
    finally:
        await follower.close()
        await store.close()


async def test_sqlite_maintenance_runs_in_one_store_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    first, second = Store.open(url), Store.open(url)
    try:
        async with first.exclusive(MAINTENANCE_LOCK) as mine:
            async with second.exclusive(MAINTENANCE_LOCK) as theirs:
                assert (mine, theirs) == (True, False)
        async with second.exclusive(MAINTENANCE_LOCK) as theirs_now:
            assert theirs_now  # released when the first one's block ended
    finally:
        await first.close()
        await second.close()

