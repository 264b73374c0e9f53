"""A sign-in's reads and writes in two round trips on PostgreSQL.

A sign-in reads the subject's live sessions, the domain decides (authority.sessions and
authority.policy: who is signed out, and whether the sign-in is allowed), and the
decision is written. On PostgreSQL the write is one call of the server-side function
``authority_sign_in`` (migration 0007), made outside any transaction so that it commits
in the same round trip. The function holds no rule of the single-device policy: it is a
compare-and-write. It takes the subject's lock, checks that the subject's live sessions
are still exactly those the decision was made on (nothing else matters to
:func:`authority.policy.decide`), and only then writes the decision as given: the new
session and its refresh token, the replaced sessions revoked and logged, the session
events, the notification. When another writer changed the subject in between it writes
nothing, and the caller reads and decides again. So the read takes no lock and the whole
sign-in is two round trips (and the pool's liveness check).

Why a function and not a batch of statements: every statement of a batch shares the
snapshot taken when it begins, before the subject's lock is granted, so it could not see
a sign-in that committed while it waited; each statement inside a VOLATILE function gets
a snapshot of its own ("VOLATILE functions obtain a fresh snapshot at the start of each
query they execute", PostgreSQL documentation, "Function Volatility Categories"), so the
check after the lock sees everything committed before it.

``locked`` units (after repeated conflicts, and always on SQLite) take the subject's lock
first and write inside one transaction: they cannot conflict.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from authority.store.records import Revocation, RevocationCause, SessionEvent, SessionEventKind, SessionRecord
from authority.store.store import Store, Tx, live_sessions_query, session_of, subject_lock_id

_SIGN_IN = sa.text(
    "SELECT * FROM authority_sign_in(:lock, :subject, :now, :idle_cutoff, :live, :session, :refresh_hash,"
    " :replaced, :reason, :cause, :by_device_id, :by_device_name, :events)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class SignInWrite:
    """What a decided sign-in writes, and the live sessions it was decided on."""

    subject: str
    now: float
    idle_cutoff: float | None
    decided_on: frozenset[str]
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

    def __init__(self, conn: AsyncConnection, is_postgres: bool, tx: Tx | None) -> None:
        self._conn = conn
        self._is_postgres = is_postgres
        self._tx = tx

    async def live_sessions(self, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        """The subject's live sessions, oldest first."""
        return [session_of(row) for row in await self._conn.execute(live_sessions_query(subject, now, idle_cutoff))]

    async def write(self, plan: SignInWrite) -> list[Revocation] | None:
        """Writes the sign-in; returns the replaced sessions' log entries, or None when the
        subject's live sessions are no longer those it was decided on (nothing written)."""
        if not self._is_postgres:
            assert self._tx is not None  # SQLite units are always locked transactions
            return await _write_in(self._tx, plan)
        rows = (await self._conn.execute(_SIGN_IN, _arguments(plan))).all()
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
    async with store.autocommit() as conn:
        yield SignInUnit(conn, True, None)


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


def _arguments(plan: SignInWrite) -> dict[str, Any]:
    events: Sequence[SessionEvent] = [*(_ended(plan, s) for s in plan.replaced), plan.signed_in]
    # Every column of the session from the one record, so a new column needs no change here.
    session = {column: getattr(plan.session, column) for column in plan.session.__slots__}
    return {
        "lock": subject_lock_id(plan.subject),
        "subject": plan.subject,
        "now": plan.now,
        "idle_cutoff": plan.idle_cutoff,
        "live": sorted(plan.decided_on),
        "session": json.dumps(session),
        "refresh_hash": plan.refresh_hash,
        "replaced": [s.session_id for s in plan.replaced],
        "reason": plan.reason,
        "cause": int(plan.cause),
        "by_device_id": plan.replaced_by[0],
        "by_device_name": plan.replaced_by[1],
        "events": json.dumps([_event_json(e) for e in events]),
    }
