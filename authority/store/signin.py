"""A sign-in's reads and writes in one or two round trips on PostgreSQL.

A sign-in reads the subject's live sessions, the domain decides (authority.sessions and
authority.policy: who is signed out, and whether the sign-in is allowed), and the
decision is written. On PostgreSQL the write is one call of the server-side function
``authority_sign_in`` (migration 0007, its body rewritten in 0009), made outside any
transaction so that it commits in the same round trip. The function holds no rule of the single-device policy: it is a
compare-and-write. It takes the subject's lock, checks that the subject's live sessions
are still exactly those the decision was made on (nothing else matters to
:func:`authority.policy.decide`), and only then writes the decision as given: the new
session and its refresh token, the replaced sessions revoked and logged, the session
events, and the notification unless the process sends it after the commit
(:mod:`authority.store.log_notifier`, migration 0010). When another writer changed the
subject in between it writes nothing, and the caller reads and decides again. So the read takes no lock and the whole
sign-in is two round trips.

Why a function and not a batch of statements: every statement of a batch shares the
snapshot taken when it begins, before the subject's lock is granted, so it could not see
a sign-in that committed while it waited; each statement inside a VOLATILE function gets
a snapshot of its own ("VOLATILE functions obtain a fresh snapshot at the start of each
query they execute", PostgreSQL documentation, "Function Volatility Categories"), so the
check after the lock sees everything committed before it.

A sign-in under the single-device rule as it comes replaces every live session, whichever
they are (``authority.policy.replaces_every_live_session``): on PostgreSQL it skips the
read, and ``authority_sign_in_replacing`` (migration 0008, rewritten in 0009) revokes the
live sessions it finds under the lock. One round trip, and nothing to compare, so it never conflicts.

``locked`` units (after repeated conflicts, and always on SQLite) take the subject's lock
first and write inside one transaction: they cannot conflict.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from authority.store.records import Revocation, RevocationCause, SessionEvent, SessionEventKind, SessionRecord
from authority.store.store import Store, Tx, live_sessions_query, session_of, subject_lock_id

# The sign-in's two statements in the driver's own form ($n parameters, asyncpg's and
# SQLAlchemy's asyncpg dialect's alike), sent to asyncpg as they are: each is prepared
# once per connection and then costs one round trip and little CPU. The read selects
# SessionRecord's fields in their order, on the conditions of live_condition.
_COLUMNS = ", ".join(SessionRecord.__slots__)
_LIVE = f"SELECT {_COLUMNS} FROM sessions WHERE subject = $1 AND revoked_at IS NULL AND expires_at > $2"
_ORDER = " ORDER BY created_at, session_id"
_LIVE_SESSIONS = _LIVE + _ORDER
_LIVE_SESSIONS_USED_SINCE = _LIVE + " AND last_used_at > $3" + _ORDER
# The last argument says whether the function notifies (migration 0010): not when the
# process notifies after the commit itself (Connections.notify_after_commit).
_SIGN_IN = "SELECT * FROM authority_sign_in($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
_SIGN_IN_REPLACING = "SELECT * FROM authority_sign_in_replacing($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"


@dataclasses.dataclass(frozen=True, slots=True)
class SignInWrite:
    """What a decided sign-in writes, and the live sessions it was decided on: None when it
    replaces every live session, whichever they are (then ``replaced`` is empty, and the
    write revokes the sessions it finds live)."""

    subject: str
    now: float
    idle_cutoff: float | None
    decided_on: frozenset[str] | None
    session: SessionRecord
    refresh_hash: str
    replaced: tuple[SessionRecord, ...]
    reason: str
    cause: RevocationCause
    replaced_by: tuple[str, str]
    caller: str
    signed_in: SessionEvent


class SignInUnit:
    """The read and the write of one sign-in attempt (see the module docstring)."""

    def __init__(
        self, conn: AsyncConnection | None, is_postgres: bool, tx: Tx | None, driver: Any = None,
        *, notifies: bool = True,
    ) -> None:
        self._conn = conn
        self._is_postgres = is_postgres
        self._tx = tx
        # The asyncpg connection, on a connection of our own outside any transaction.
        self._driver = driver
        # Whether the write notifies the other replicas in its own commit.
        self._notifies = notifies

    @property
    def writes_unread(self) -> bool:
        """Whether a sign-in replacing every live session may write without reading them
        (an unlocked unit on PostgreSQL); else it reads them, in its locked transaction."""
        return self._is_postgres and self._tx is None

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        if not self._is_postgres:
            assert self._conn is not None
            return [session_of(row) for row in await self._conn.execute(live_sessions_query(subject, now, idle_cutoff))]
        if idle_cutoff is None:
            rows = await self._fetch(_LIVE_SESSIONS, subject, now)
        else:
            rows = await self._fetch(_LIVE_SESSIONS_USED_SINCE, subject, now, idle_cutoff)
        return [SessionRecord(*row) for row in rows]

    async def _fetch(self, statement: str, *arguments: Any) -> Sequence[Any]:
        if self._driver is not None:
            rows: Sequence[Any] = await self._driver.fetch(statement, *arguments)
            return rows
        assert self._conn is not None
        return (await self._conn.exec_driver_sql(statement, arguments)).all()

    async def write(self, plan: SignInWrite) -> list[Revocation] | None:
        """Writes the sign-in; returns the replaced sessions' log entries, or None when the
        subject's live sessions are no longer those it was decided on (nothing written).
        One decided on None (see :class:`SignInWrite`) is only for a unit that
        :attr:`writes_unread`; its entries name the sessions it replaced, in the order
        :func:`authority.policy.decide` lists them."""
        if not self._is_postgres:
            assert self._tx is not None  # SQLite units are always locked transactions
            return await _write_in(self._tx, plan)
        if plan.decided_on is None:
            rows = await self._fetch(_SIGN_IN_REPLACING, *_replacing_arguments(plan), self._notifies)
            return [Revocation(row[0], row[1], row[2], row[3], RevocationCause(row[4]), row[5] or "") for row in rows]
        rows = await self._fetch(_SIGN_IN, *_arguments(plan), self._notifies)
        if not rows[0][0]:
            return None
        return [
            Revocation(row[1], row[2], row[3], row[4], RevocationCause(row[5]), row[6] or "")
            for row in rows[1:]
        ]


@asynccontextmanager
async def sign_in_unit(store: Store, subject: str, *, locked: bool) -> AsyncIterator[SignInUnit]:
    """One attempt at a sign-in of ``subject``: unlocked on PostgreSQL unless ``locked``."""
    if locked or not store.is_postgres:
        async with store.transaction() as tx:
            await tx.lock_subject(subject)
            yield SignInUnit(tx.conn, store.is_postgres, tx)
        return
    notify = store.notify_after_commit
    if store.transaction_pooling:
        # A transaction (Connections.autocommit), whose statements go through SQLAlchemy, which began it.
        async with store.autocommit() as conn:
            yield SignInUnit(conn, True, None, notifies=notify is None)
    else:
        async with store.driver() as driver:
            yield SignInUnit(None, True, None, driver, notifies=notify is None)
    if notify is not None:
        notify()


async def _write_in(tx: Tx, plan: SignInWrite) -> list[Revocation]:
    await tx.insert_session(plan.session, plan.refresh_hash)
    entries = await tx.revoke(
        plan.replaced, plan.now, plan.reason, cause=plan.cause, replaced_by=plan.replaced_by, caller=plan.caller
    )
    tx.record(plan.signed_in)
    return entries


def _ended(plan: SignInWrite, session: SessionRecord) -> SessionEvent:
    # As Tx.revoke records it.
    return SessionEvent(
        SessionEventKind.SESSION_ENDED, plan.now, session.subject, session.session_id, session.device_id,
        session.device_class, session.device_name, cause=plan.cause, caller=plan.caller,
    )


def _event_json(event: SessionEvent) -> dict[str, Any]:
    return {
        "kind": int(event.kind), "occurred_at": event.occurred_at, "subject": event.subject,
        "session_id": event.session_id, "device_id": event.device_id, "device_class": event.device_class,
        "device_name": event.device_name, "replaced_session_ids": " ".join(event.replaced_session_ids),
        "cause": int(event.cause), "caller": event.caller,
    }


def _session_json(session: SessionRecord) -> str:
    # Every column of the session from the one record, so a new column needs no change here.
    return json.dumps({column: getattr(session, column) for column in session.__slots__})


def _arguments(plan: SignInWrite) -> tuple[Any, ...]:
    """authority_sign_in's arguments, in its order."""
    assert plan.decided_on is not None
    events: Sequence[SessionEvent] = [*(_ended(plan, s) for s in plan.replaced), plan.signed_in]
    return (
        subject_lock_id(plan.subject),
        plan.subject,
        plan.now,
        plan.idle_cutoff,
        sorted(plan.decided_on),
        _session_json(plan.session),
        plan.refresh_hash,
        [s.session_id for s in plan.replaced],
        plan.reason,
        int(plan.cause),
        plan.replaced_by[0],
        plan.replaced_by[1],
        json.dumps([_event_json(e) for e in events]),
    )


def _replacing_arguments(plan: SignInWrite) -> tuple[Any, ...]:
    """authority_sign_in_replacing's arguments, in its order: the sessions ended and the
    signed-in event's replaced ids are the function's, from the sessions it revokes."""
    return (
        subject_lock_id(plan.subject),
        plan.subject,
        plan.now,
        plan.idle_cutoff,
        _session_json(plan.session),
        plan.refresh_hash,
        plan.reason,
        int(plan.cause),
        plan.replaced_by[0],
        plan.replaced_by[1],
        plan.caller,
        json.dumps(_event_json(plan.signed_in)),
    )
