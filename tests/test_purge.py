"""The revoked list expires: entries go once the tokens they name have expired."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import Clock, Running, StartServer
from tests.support.calls import live_sessions, new_subject, sign_in


async def _count(running: Running, table: str) -> int:
    async with running.server.authority.store.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_purge_drops_revocations_and_sessions_once_their_tokens_expired(start_server: StartServer) -> None:
    clock = Clock()
    clock.advance(-7200)
    running = await start_server(clock=clock)
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    phone = await sign_in(running.stub, subject, "phone")
    assert len(running.server.authority.mirror) == 1
    clock.advance(3600)  # the laptop's last access token expired long ago

    purged = await running.server.authority.purge()

    assert purged == (1, 1)
    assert len(running.server.authority.mirror) == 0
    assert await _count(running, "revocation_log") == 0
    assert await _count(running, "refresh_tokens") == 1
    assert await live_sessions(running.stub, subject) == [phone.session_id]
    assert laptop.session_id not in await live_sessions(running.stub, subject)


async def test_purge_keeps_revocations_whose_tokens_are_still_alive(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock=clock)
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    await sign_in(running.stub, subject, "phone")
    clock.advance(60)

    purged = await running.server.authority.purge()

    assert purged == (0, 0)
    assert await _count(running, "revocation_log") == 1
    answer = await running.stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token))
    assert answer.reason == pb.INVALID_REASON_REVOKED


async def test_purge_works_through_more_than_one_batch(start_server: StartServer) -> None:
    clock = Clock()
    clock.advance(-7200)
    running = await start_server(clock=clock, purge_batch_size=2)
    subject = new_subject()
    for n in range(6):
        await sign_in(running.stub, subject, f"device-{n}")
    clock.advance(3600)

    purged = await running.server.authority.purge()

    assert purged == (5, 5)
    assert await _count(running, "revocation_log") == 0
    assert await _count(running, "sessions") == 1


async def test_the_background_purge_runs_on_its_interval(start_server: StartServer) -> None:
    clock = Clock()
    clock.advance(-7200)
    running = await start_server(clock=clock, purge_interval=1)
    subject = new_subject()
    await sign_in(running.stub, subject, "laptop")
    await sign_in(running.stub, subject, "phone")
    clock.advance(3600)

    for _ in range(50):
        if len(running.server.authority.mirror) == 0 and await _count(running, "revocation_log") == 0:
            break
        await asyncio.sleep(0.1)

    assert len(running.server.authority.mirror) == 0
    assert await _count(running, "revocation_log") == 0
