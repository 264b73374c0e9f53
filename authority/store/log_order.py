"""How the logs (revocations, session events) stay in order without a lock.

Followers read a log after a position, and must never skip an entry that commits after
they read past its position. Until schema revision 0007 every writer held one
cluster-wide lock until commit, so positions became visible in order; it capped the
revocations per second that any number of replicas could write. Now, on PostgreSQL:

* An entry's position is ``pg_current_xact_id() << COUNTER_BITS`` plus a counter (the
  column default of migration 0007): positions are ordered by the writing transaction's
  id first. ``pg_current_xact_id()`` is the 64-bit, epoch-extended id (``xid8``), which
  never wraps around.
* A reader passes on only the entries whose position is below
  ``pg_snapshot_xmin(pg_current_snapshot()) << COUNTER_BITS``: entries of transactions
  older than every transaction still in flight. PostgreSQL documents ``xmin`` as the
  "lowest transaction ID that was still active. All transaction IDs less than xmin are
  either committed and visible, or rolled back and dead" (documentation, "System
  Information Functions and Operators", table "Snapshot Components"; PostgreSQL 13+).
  Transaction ids are handed out in increasing order, so every transaction that can
  still commit, now or later, has an id of at least ``xmin``: its entries land above the
  bound. Below the bound the log is final: a reader that has passed on everything below
  it can never be overtaken by a late commit. Entries are read in one statement, whose
  one snapshot both the rows and ``pg_current_snapshot()`` come from (READ COMMITTED:
  "a SELECT query sees only data committed before the query began", documentation,
  "Transaction Isolation").
* Committed entries above the bound (a younger transaction committed while an older one
  was still open) are visible but not final: a follower applies them to its mirror at
  once (a revocation is enforced as soon as it is read) and passes them on, in order,
  once the bound has moved past them.

A transaction that stays open delays the passing on, never the enforcement; ours are
ended by ``idle_in_transaction_session_timeout`` (authority.store.postgres).

Why not a plain sequence with an xid column: sequence numbers are taken in no
particular order between transactions. A transaction with id 100 can take number 6
after one with id 101 took 5; once 100 commits and 101 is still open, a reader sees 6
below the bound, moves to 6, and skips 5 when 101 commits.

SQLite admits one writer at a time (every write transaction begins IMMEDIATE), so its
AUTOINCREMENT positions are already in commit order; none of this applies there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

# Entries one transaction can write (2^20); 2^43 transaction ids fit in a position.
COUNTER_BITS = 20
# The first position a reader may not yet pass on (PostgreSQL only).
FINAL_BELOW_SQL = f"(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << {COUNTER_BITS})"


def final_below() -> sa.ColumnElement[int]:
    """The position below which the log is final, in the reading statement's snapshot."""
    return sa.literal_column(FINAL_BELOW_SQL, sa.BigInteger).label("final_below")


T = TypeVar("T")


def log_page_query(table: sa.Table, after: int, limit: int, is_postgres: bool) -> sa.Select[Any]:
    """Up to ``limit`` rows of a log after position ``after``, in order; on PostgreSQL each
    row also says where the log stops being final (:func:`final_below`)."""
    columns: list[Any] = [table]
    if is_postgres:
        columns.append(final_below())
    return sa.select(*columns).where(table.c.sequence > after).order_by(table.c.sequence).limit(limit)


@dataclasses.dataclass(frozen=True, slots=True)
class LogPage(Generic[T]):
    """One read of a log: the ``final`` entries, in order, and after them the ``pending``
    ones (committed, but an older transaction may still add entries before them)."""

    final: list[T]
    pending: list[T]

    def __len__(self) -> int:
        return len(self.final) + len(self.pending)

    @classmethod
    def of(cls, entries: list[T], rows: Sequence[Any], sequence_of: Callable[[T], int]) -> LogPage[T]:
        """Splits ``entries``, read by :func:`log_page_query` as ``rows``, where they stop
        being final (everything is final on SQLite)."""
        if not rows or "final_below" not in rows[0]._fields:
            return cls(entries, [])
        return cls.split(entries, rows[0].final_below, sequence_of)

    @classmethod
    def split(cls, entries: list[T], final_below: int, sequence_of: Callable[[T], int]) -> LogPage[T]:
        """Splits ``entries`` at the first whose position is ``final_below`` or more."""
        split = next((n for n, entry in enumerate(entries) if sequence_of(entry) >= final_below), len(entries))
        return cls(entries[:split], entries[split:])


# How long a reader of final entries waits for the transactions that hold some back.
# The authority's own end within milliseconds, so a stream started after an entry
# committed gets it before CAUGHT_UP even on a loaded machine; a transaction of another
# program (or one of ours stranded by a lost client, until
# idle_in_transaction_session_timeout ends it, 3 s) can hold it back longer, and the
# entry then comes after CAUGHT_UP, never skipped. Kept below that timeout, so that a
# reader waiting on a held transaction answers before the transaction is ended.
SETTLE_SECONDS = 2.0


async def settled(read: Callable[[], Awaitable[LogPage[T]]]) -> list[T]:
    """The final entries of ``read()``, read again while committed entries are pending
    (at most :data:`SETTLE_SECONDS`), whether or not final ones come before them: a
    transaction open elsewhere (ours end within milliseconds) holds back entries that
    committed before the read, and a reader starting a stream expects those before
    CAUGHT_UP. After the wait the final part is returned as it is: the rest comes with a
    later read, never skipped."""
    deadline = time.monotonic() + SETTLE_SECONDS
    pause = 0.002
    while True:
        page = await read()
        if not page.pending or time.monotonic() >= deadline:
            return page.final
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
