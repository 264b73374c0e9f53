"""The refresh-token reuse grace period: a retry after a lost reply keeps the user signed
in, reuse outside it still revokes the session, and the session never keeps more than
one live refresh token."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import Clock, Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in

GRACE = 5.0


async def _refresh(stub: Stub, refresh_token: str) -> pb.IssueTokenResponse:
    return await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refresh_token))


async def _untraded(running: Running, session_id: str) -> set[str]:
    """The hashes of the session's refresh tokens that can still be traded."""
    async with running.server.authority.store.engine.connect() as conn:
        query = sa.text("SELECT token_hash FROM refresh_tokens WHERE session_id = :s AND used_at IS NULL")
        return set((await conn.execute(query, {"s": session_id})).scalars())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_a_retry_within_the_grace_gets_a_valid_pair_on_the_same_session(start_server: StartServer) -> None:
    running = await start_server(refresh_token_reuse_grace=GRACE)
    stub, subject = running.stub, new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    lost = await _refresh(stub, signed_in.refresh_token)  # its reply never reaches the client

    retried = await _refresh(stub, signed_in.refresh_token)

    assert retried.session_id == signed_in.session_id
    assert retried.refresh_token not in (lost.refresh_token, signed_in.refresh_token)
    assert await reason(stub, retried.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [signed_in.session_id]
    # One live refresh token: the retry's. The lost pair's refresh token is dead, its access
    # token lives out its short life (revocation is by session).
    assert await _untraded(running, signed_in.session_id) == {_hash(retried.refresh_token)}
    assert await reason(stub, lost.access_token) == "VALID"
    assert (await _refresh(stub, retried.refresh_token)).session_id == signed_in.session_id


async def test_the_lost_pairs_refresh_token_presented_later_revokes_the_session(start_server: StartServer) -> None:
    running = await start_server(refresh_token_reuse_grace=GRACE)
    stub, subject = running.stub, new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    lost = await _refresh(stub, signed_in.refresh_token)
    retried = await _refresh(stub, signed_in.refresh_token)

    error = await rpc_error(_refresh(stub, lost.refresh_token))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await reason(stub, retried.access_token) == "REVOKED"
    assert await live_sessions(stub, subject) == []


async def test_reuse_after_the_grace_revokes_the_session(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock, refresh_token_reuse_grace=GRACE)
    stub, subject = running.stub, new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    refreshed = await _refresh(stub, signed_in.refresh_token)
    clock.advance(GRACE + 0.5)

    error = await rpc_error(_refresh(stub, signed_in.refresh_token))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await reason(stub, refreshed.access_token) == "REVOKED"
    assert await live_sessions(stub, subject) == []


async def test_reuse_of_a_token_whose_new_pair_was_used_revokes_even_within_the_grace(
    start_server: StartServer,
) -> None:
    """Not a retry: the reply arrived, since its refresh token was traded in turn."""
    running = await start_server(refresh_token_reuse_grace=GRACE)
    stub, subject = running.stub, new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    second = await _refresh(stub, signed_in.refresh_token)
    third = await _refresh(stub, second.refresh_token)

    error = await rpc_error(_refresh(stub, signed_in.refresh_token))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await reason(stub, third.access_token) == "REVOKED"


async def test_a_zero_grace_is_strict(start_server: StartServer) -> None:
    stub = (await start_server(refresh_token_reuse_grace=0)).stub
    signed_in = await sign_in(stub, new_subject(), "laptop")
    refreshed = await _refresh(stub, signed_in.refresh_token)

    error = await rpc_error(_refresh(stub, signed_in.refresh_token))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await reason(stub, refreshed.access_token) == "REVOKED"


async def test_twenty_concurrent_presentations_within_the_grace_end_with_one_live_pair(
    start_server: StartServer,
) -> None:
    running = await start_server(refresh_token_reuse_grace=30)  # wide: a slow machine stays inside it
    stub, subject = running.stub, new_subject()
    signed_in = await sign_in(stub, subject, "laptop")

    answers = await asyncio.wait_for(
        asyncio.gather(*(_refresh(stub, signed_in.refresh_token) for _ in range(20)), return_exceptions=True), 60
    )

    pairs = [answer for answer in answers if isinstance(answer, pb.IssueTokenResponse)]
    assert len(pairs) == 20, [a for a in answers if not isinstance(a, pb.IssueTokenResponse)]
    untraded = await _untraded(running, signed_in.session_id)
    assert len(untraded) == 1
    (live,) = [pair for pair in pairs if _hash(pair.refresh_token) in untraded]
    assert await live_sessions(stub, subject) == [signed_in.session_id]
    assert (await _refresh(stub, live.refresh_token)).session_id == signed_in.session_id
