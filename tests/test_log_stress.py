"""The revocation log under concurrent writers with no lock between them: 32 revokers over
two replicas while four followers read the log. No follower misses a committed entry or
sees one twice; gaps between positions are normal (sequences skip on rollback)."""

from __future__ import annotations

import asyncio
import time

import asyncpg  # type: ignore[import-untyped]
import pytest
from authority_client.v1 import authority_pb2 as pb
from sqlalchemy import text

from authority.store import Store
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, reason, sign_in

REVOKERS = 32
REVOCATIONS_EACH = 6
FOLLOWERS = 4
DEADLINE = 60.0

pytestmark = pytest.mark.parametrize("store", ["postgres"])  # SQLite has one writer at a time


async def _follow(store: Store, seen: list[int], sessions: list[str], done: asyncio.Event) -> None:
    """Reads the log after its own position as fast as it can, as a follower does, until
    ``done`` is set and one last read found nothing new."""
    position = 0
    while True:
        finished = done.is_set()
        page = await store.revocations_after(position, 1_000)
        for entry in page:
            seen.append(entry.sequence)
            sessions.append(entry.session_id)
        if page:
            position = page[-1].sequence
        elif finished:
            return
        await asyncio.sleep(0)


async def test_thirty_two_revokers_over_two_replicas_leave_no_follower_missing_an_entry_or_seeing_one_twice(
    start_server: StartServer, database_url: str
) -> None:
    replicas: list[Running] = [await start_server(), await start_server()]
    # Each revoker has a signed-in subject for every revocation it will make.
    signed_in = await asyncio.gather(
        *(sign_in(replicas[n % 2].stub, new_subject(), "laptop") for n in range(REVOKERS * REVOCATIONS_EACH))
    )
    sessions = {
        n: [reply.session_id for reply in signed_in[n * REVOCATIONS_EACH:(n + 1) * REVOCATIONS_EACH]]
        for n in range(REVOKERS)
    }
    followers = [Store.open(database_url) for _ in range(FOLLOWERS)]
    seen: list[list[int]] = [[] for _ in followers]
    seen_sessions: list[list[str]] = [[] for _ in followers]
    done = asyncio.Event()
    reading = [
        asyncio.create_task(_follow(store, seen[n], seen_sessions[n], done)) for n, store in enumerate(followers)
    ]

    async def revoker(n: int) -> None:
        # Alternate replicas per call, so each replica's transactions interleave with the other's.
        for k, session_id in enumerate(sessions[n]):
            await replicas[(n + k) % 2].stub.RevokeToken(pb.RevokeTokenRequest(session_id=session_id), timeout=30)

    try:
        await asyncio.wait_for(asyncio.gather(*(revoker(n) for n in range(REVOKERS))), DEADLINE)
        # Every acknowledged revocation is committed; followers read on until they have it.
        revoked = {session_id for ids in sessions.values() for session_id in ids}
        deadline = time.monotonic() + DEADLINE
        while not all(revoked <= set(ids) for ids in seen_sessions):
            assert time.monotonic() < deadline, "a follower never read some committed entries"
            await asyncio.sleep(0.05)
        done.set()
        await asyncio.wait_for(asyncio.gather(*reading), DEADLINE)
        async with followers[0].transaction(read_only=True) as tx:
            rows = await tx.conn.execute(text("SELECT sequence FROM revocation_log ORDER BY 1"))
            committed = [row[0] for row in rows]
    finally:
        done.set()
        for task in reading:
            task.cancel()
        for store in followers:
            await store.close()

    assert len(committed) >= len(revoked) == REVOKERS * REVOCATIONS_EACH
    for positions in seen:
        assert len(positions) == len(set(positions)), "a follower saw an entry twice"
        assert positions == sorted(positions), "a follower saw entries out of order"
        assert positions == committed, "a follower missed a committed entry"


async def test_entries_held_back_by_an_older_open_transaction_are_enforced_at_once_and_passed_on_after_it(
    start_server: StartServer, database_url: str
) -> None:
    first = await start_server()
    laptop = await sign_in(first.stub, new_subject(), "laptop")
    older = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await older.execute("SET idle_in_transaction_session_timeout = 0")
        transaction = older.transaction()
        await transaction.start()
        await older.fetchval("SELECT pg_current_xact_id()")  # an id older than the revocation's
        await first.stub.RevokeToken(pb.RevokeTokenRequest(session_id=laptop.session_id), timeout=30)
        store = first.server.authority.store
        page = await store.log_after(0, 10)
        assert [e.session_id for e in page.pending] == [laptop.session_id] and not page.final
        followed, _ = await store.followed_page(0, 10)  # the follower's read splits it alike
        assert (followed.final, followed.pending) == (page.final, page.pending)

        second = await start_server()  # loads the log while the entry is held back

        assert second.server.authority.mirror.is_revoked(laptop.session_id)
        assert await reason(second.stub, laptop.access_token) == "REVOKED"
        assert second.server.authority.mirror.sequence == 0  # not passed on: not final yet
        await transaction.rollback()
    finally:
        await older.close()
    deadline = time.monotonic() + DEADLINE
    while second.server.authority.mirror.sequence != page.pending[0].sequence:
        assert time.monotonic() < deadline, "the entry was never passed on once final"
        await asyncio.sleep(0.02)


async def test_a_stream_gets_entries_held_back_behind_final_ones_before_caught_up(
    start_server: StartServer, database_url: str
) -> None:
    """A stream starts while the log's last entry is held back by an older transaction
    that ends within the settle wait, with a final entry before it: both come before
    CAUGHT_UP, as every entry committed before the stream began must."""
    running = await start_server()
    laptop, phone = [await sign_in(running.stub, new_subject(), device) for device in ("laptop", "phone")]
    await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=laptop.session_id), timeout=30)
    older = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        transaction = older.transaction()
        await transaction.start()
        await older.fetchval("SELECT pg_current_xact_id()")  # an id older than the next revocation's
        await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=phone.session_id), timeout=30)
        page = await running.server.authority.store.log_after(0, 10)
        assert [e.session_id for e in page.final] == [laptop.session_id]
        assert [e.session_id for e in page.pending] == [phone.session_id]
        stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest(), timeout=30)
        first = await asyncio.wait_for(stream.read(), DEADLINE)  # the keys; the backlog is read next
        assert first.kind == pb.REVOCATION_EVENT_KIND_SIGNING_KEYS
        await transaction.rollback()
    finally:
        await older.close()
    kinds_and_sessions = []
    while True:
        event = await asyncio.wait_for(stream.read(), DEADLINE)
        if event.kind == pb.REVOCATION_EVENT_KIND_CAUGHT_UP:
            break
        kinds_and_sessions.append((event.kind, event.session_id))
    stream.cancel()

    assert kinds_and_sessions == [
        (pb.REVOCATION_EVENT_KIND_REVOCATION, laptop.session_id),
        (pb.REVOCATION_EVENT_KIND_REVOCATION, phone.session_id),
    ]
