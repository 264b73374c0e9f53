"""Every query the authority runs, behind one :class:`Store`.

:class:`Store` is assembled from one module per concern, each holding the SQL of that
concern:

- :mod:`authority.store.connections`: the engines, units of work (a :class:`Tx` is one
  transaction), LISTEN and the session-level lock; driver errors become
  :class:`~authority.errors.StoreUnavailable` there (:mod:`authority.store.unavailable`);
- :mod:`authority.store.engine`: how an engine is made, and SQLite's connection set-up;
- :mod:`authority.store.coordination`: the advisory locks and NOTIFY channels replicas share;
- :mod:`authority.store.unit_of_work`, :mod:`authority.store.session_queries` and
  :mod:`authority.store.key_queries`: what runs inside a transaction;
- :mod:`authority.store.revocation_log`: the reads of the revocation log;
- :mod:`authority.store.maintenance`: the purges.

Here are the short reads (one query in a read-only transaction of its own) and the
ways a store is opened.
"""

from __future__ import annotations

import sqlalchemy as sa

from authority.store.connections import BACKLOG_READERS, Tx
from authority.store.coordination import (
    KEYS_CHANNEL,
    KEYS_LOCK,
    MAINTENANCE_LOCK,
    MIGRATIONS_LOCK,
    REVOCATIONS_CHANNEL,
    subject_lock_id,
)
from authority.store.engine import create_engine, url_of
from authority.store.maintenance import Maintenance
from authority.store.records import KeyRecord, RetainedKeyRecord, SessionRecord
from authority.store.revocation_log import LogReads
from authority.store.schema import retained_public_keys, sessions, signing_keys
from authority.store.session_queries import live_condition, live_sessions_query, session_of

# The names other modules import from here, from before the store was split by concern.
__all__ = [
    "BACKLOG_READERS",
    "KEYS_CHANNEL",
    "KEYS_LOCK",
    "MAINTENANCE_LOCK",
    "MIGRATIONS_LOCK",
    "REVOCATIONS_CHANNEL",
    "Store",
    "Tx",
    "create_engine",
    "live_sessions_query",
    "session_of",
    "subject_lock_id",
]


class Store(LogReads, Maintenance):
    """The database behind the authority: every query, by concern (see the module docstring).

    ``session_engine`` serves what needs a connection of its own for longer than a
    transaction (LISTEN, the session-level maintenance lock): the main engine, unless
    the main pool runs through a transaction pooler.
    """

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
        engine = create_engine(url_of(self.engine), connections=2, transaction_pooling=self._transaction_pooling)
        session_engine = None
        if self.session_engine is not self.engine:
            session_engine = create_engine(url_of(self.session_engine), connections=2)
        dedicated = Store(engine, session_engine, transaction_pooling=self._transaction_pooling)
        dedicated.driver_errors = self.report_driver_errors
        return dedicated

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

    async def versioned_keys(self) -> tuple[int, list[KeyRecord]]:
        """The stored set's version and every stored signing key (see KeyQueries.versioned_keys)."""
        async with self.transaction(read_only=True) as tx:
            return await tx.versioned_keys()

    async def key_ids(self) -> frozenset[str]:
        """The kids of the stored signing keys."""
        return (await self.versioned_key_ids())[1]

    async def versioned_key_ids(self) -> tuple[int, frozenset[str]]:
        """The stored set's version and its kids: a cheap way to notice a rotation."""
        async with self.transaction(read_only=True) as tx:
            return await tx.versioned_key_ids()

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        async with self.transaction(read_only=True) as tx:
            return await tx.live_sessions(subject, now, idle_cutoff)

    async def count_live_sessions(self, now: float, idle_cutoff: float | None) -> int:
        """How many sessions are live, over all subjects (for a gauge)."""
        async with self.transaction(read_only=True) as tx:
            query = sa.select(sa.func.count()).select_from(sessions).where(live_condition(now, idle_cutoff))
            return int((await tx.conn.execute(query)).scalar_one())
