"""WatchRevocations: the revocation log after a sequence, then new entries as they happen."""

from __future__ import annotations

import asyncio
import time

import grpc
import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority import revocations
from authority.errors import WatcherTooSlow
from authority.status import status_of
from authority.store import Revocation
from tests.conftest import Running
from tests.support.calls import Stub, new_subject, sign_in


async def _next(stream: object) -> pb.RevocationEvent:
    return await asyncio.wait_for(stream.read(), timeout=5)  # type: ignore[attr-defined, no-any-return]


async def test_stream_replays_the_log_then_follows_new_revocations(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")
    stream = stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=0))

    replayed = await _next(stream)
    await sign_in(stub, subject, "tablet")
    followed = await _next(stream)
    stream.cancel()

    assert replayed.session_id == laptop.session_id
    assert replayed.expires_at.seconds == laptop.expires_at.seconds
    assert followed.session_id == phone.session_id
    assert followed.sequence > replayed.sequence > 0


async def test_stream_starts_after_the_given_sequence(stub: Stub) -> None:
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")
    tablet = await sign_in(stub, subject, "tablet")
    first = stub.WatchRevocations(pb.WatchRevocationsRequest())
    seen = await _next(first)
    first.cancel()

    resumed = stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=seen.sequence))
    event = await _next(resumed)
    resumed.cancel()

    assert event.session_id == phone.session_id
    assert event.sequence > seen.sequence
    assert tablet.session_id not in (seen.session_id, event.session_id)


async def test_logout_event_names_the_token_and_its_session(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")
    stream = stub.WatchRevocations(pb.WatchRevocationsRequest())

    await stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token))
    event = await _next(stream)
    stream.cancel()

    validated = await stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token))
    assert event.session_id == signed_in.session_id
    assert event.token_id == jwt.decode(signed_in.access_token, options={"verify_signature": False})["jti"]
    assert validated.reason == pb.INVALID_REASON_REVOKED


async def test_every_revocation_reaches_every_watcher_once(stub: Stub) -> None:
    watchers = [stub.WatchRevocations(pb.WatchRevocationsRequest()) for _ in range(3)]
    subject = new_subject()
    issued = [await sign_in(stub, subject, f"device-{n}") for n in range(6)]

    received = [[(await _next(w)).session_id for _ in range(5)] for w in watchers]
    for watcher in watchers:
        watcher.cancel()

    expected = [signed_in.session_id for signed_in in issued[:5]]
    assert received == [expected] * 3


async def test_a_watcher_that_falls_too_far_behind_is_told_to_resume(
    authority: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocations, "WATCHER_QUEUE_SIZE", 3)
    mirror, store = authority.server.authority.mirror, authority.server.authority.store
    feed = mirror.follow(store, 0)
    first = asyncio.create_task(anext(feed))  # reaches the live phase and waits there
    await asyncio.sleep(0.1)
    mirror.apply([Revocation(1, "s-1", None, time.time() + 60)])
    assert (await first).sequence == 1

    mirror.apply([Revocation(n, f"s-{n}", None, time.time() + 60) for n in range(2, 7)])

    with pytest.raises(WatcherTooSlow):
        for _ in range(6):
            await asyncio.wait_for(anext(feed), timeout=2)
    assert status_of(WatcherTooSlow()) is grpc.StatusCode.RESOURCE_EXHAUSTED
