"""No races: concurrent sign-ins of one subject end with the single-device rule intact."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.store.store import subject_lock_id
from tests.conftest import Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, sign_in

DEVICES = 50


async def _sign_in_everywhere(stub: Stub, subject: str, policy: int) -> list[pb.IssueTokenResponse | BaseException]:
    calls = [sign_in(stub, subject, f"device-{n}", policy=policy) for n in range(DEVICES)]
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_fifty_concurrent_sign_ins_leave_exactly_one_valid_token_under_replace(stub: Stub) -> None:
    subject = new_subject()

    results = await _sign_in_everywhere(stub, subject, pb.SESSION_POLICY_REPLACE)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    assert len(issued) == DEVICES, [r for r in results if not isinstance(r, pb.IssueTokenResponse)]
    reasons = [await reason(stub, r.access_token) for r in issued]
    assert reasons.count("VALID") == 1
    assert reasons.count("REVOKED") == DEVICES - 1
    winner = issued[reasons.index("VALID")]
    assert await live_sessions(stub, subject) == [winner.session_id]
    # Every session but the winner was replaced by exactly one later sign-in.
    replaced = [sid for r in issued for sid in r.replaced_session_ids]
    assert sorted(replaced) == sorted(r.session_id for r in issued if r is not winner)


async def test_fifty_concurrent_sign_ins_admit_exactly_one_under_reject(stub: Stub) -> None:
    subject = new_subject()

    results = await _sign_in_everywhere(stub, subject, pb.SESSION_POLICY_REJECT)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(issued) == 1
    assert len(refused) == DEVICES - 1
    assert {error.code() for error in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert await reason(stub, issued[0].access_token) == "VALID"
    assert await live_sessions(stub, subject) == [issued[0].session_id]


async def test_concurrent_sign_ins_spread_over_two_servers_leave_one_live_session(
    start_server: StartServer,
) -> None:
    # Two processes' worth of authority on one database: the store decides, not memory.
    first, second = await start_server(), await start_server()
    subject = new_subject()
    calls = [
        sign_in((first if n % 2 else second).stub, subject, f"device-{n}", policy=pb.SESSION_POLICY_REPLACE)
        for n in range(DEVICES)
    ]

    issued = await asyncio.gather(*calls)

    live = await live_sessions(first.stub, subject)
    assert len(live) == 1
    refreshed = []
    for signed_in in issued:
        try:
            await first.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token))
            refreshed.append(signed_in.session_id)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refreshed == live


async def test_revocation_log_entries_become_visible_in_sequence_order(authority: Running) -> None:
    store = authority.server.authority.store
    subject_a, subject_b = new_subject(), new_subject()
    a = await sign_in(authority.stub, subject_a, "laptop")
    b = await sign_in(authority.stub, subject_b, "laptop")
    sessions = {s.session_id: s for s in await store.live_sessions(subject_a, time.time(), None)}
    sessions.update({s.session_id: s for s in await store.live_sessions(subject_b, time.time(), None)})

    async def revoke_second() -> int:
        async with store.transaction() as tx:
            [entry] = await tx.revoke([sessions[b.session_id]], time.time(), "test")
        return entry.sequence

    async with store.transaction() as tx:
        [first] = await tx.revoke([sessions[a.session_id]], time.time(), "test")
        second = asyncio.create_task(revoke_second())
        if store.is_postgres:
            # No lock between writers: the later entry commits while the earlier one is
            # open, but no reader is given it before the earlier one, which it would skip.
            await asyncio.wait_for(asyncio.shield(second), 10)
            assert await store.revocations_after(0, 10) == []
            assert [e.sequence for e in (await store.log_after(0, 10)).pending] == [second.result()]
        # (SQLite has one writer: the later entry waits for the earlier one to commit.)
    second_sequence = await second

    assert second_sequence > first.sequence
    assert [e.sequence for e in await store.revocations_after(0, 10)] == [first.sequence, second_sequence]


@pytest.mark.parametrize("store", ["postgres"])  # the sign-in is held on PostgreSQL's subject lock
async def test_a_sign_in_whose_caller_gave_up_still_completes_with_its_revocations(
    authority: Running, database_url: str
) -> None:
    running = authority
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    blocker = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    await blocker.execute("SELECT pg_advisory_lock($1)", subject_lock_id(subject))  # the sign-in waits here

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await running.stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="phone"), timeout=0.5)
    await blocker.execute("SELECT pg_advisory_unlock($1)", subject_lock_id(subject))
    await blocker.close()

    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(50):
        live = await live_sessions(running.stub, subject)
        if live != [laptop.session_id]:
            break
        await asyncio.sleep(0.1)
    assert len(live) == 1 and live != [laptop.session_id]
    assert await reason(running.stub, laptop.access_token) == "REVOKED"
