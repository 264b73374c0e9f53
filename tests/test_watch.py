"""WatchRevocations: the signing keys, the log after a sequence, a CAUGHT_UP marker, then
new entries, key changes and heartbeats as they happen."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import grpc
import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from authority import feeds, revocations
from authority.api.status import status_of
from authority.errors import WatcherTooSlow
from authority.keys import rotate_key
from authority.store import Revocation
from tests.conftest import Running, StartServer
from tests.support.calls import Stub, new_subject, rpc_error, sign_in

REVOCATION = pb.REVOCATION_EVENT_KIND_REVOCATION
CAUGHT_UP = pb.REVOCATION_EVENT_KIND_CAUGHT_UP
HEARTBEAT = pb.REVOCATION_EVENT_KIND_HEARTBEAT
SIGNING_KEYS = pb.REVOCATION_EVENT_KIND_SIGNING_KEYS


async def _next(stream: Any, kind: int = REVOCATION, timeout: float = 5) -> pb.RevocationEvent:
    """The next event of ``kind``, skipping heartbeats and the opening key set."""
    while True:
        event: pb.RevocationEvent = await asyncio.wait_for(stream.read(), timeout=timeout)
        if event.kind == kind:
            return event
        assert event.kind in (HEARTBEAT, SIGNING_KEYS, CAUGHT_UP), event


def _watch(stub: Stub, after: int = 0, heartbeat: float | None = None) -> Any:
    request = pb.WatchRevocationsRequest(after_sequence=after)
    if heartbeat is not None:
        request.heartbeat_interval.CopyFrom(Duration(nanos=int(heartbeat * 1e9)))
    return stub.WatchRevocations(request)


async def test_stream_opens_with_the_signing_keys_then_the_backlog_then_caught_up(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")
    jwks = (await stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json
    stream = _watch(stub)

    first = await asyncio.wait_for(stream.read(), 5)
    replayed = await asyncio.wait_for(stream.read(), 5)
    caught_up = await asyncio.wait_for(stream.read(), 5)
    stream.cancel()

    assert first.kind == SIGNING_KEYS and json.loads(first.jwks_json) == json.loads(jwks)
    assert replayed.kind == REVOCATION and replayed.session_id == laptop.session_id
    assert caught_up.kind == CAUGHT_UP and caught_up.sequence == replayed.sequence


async def test_stream_replays_the_log_then_follows_new_revocations(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")
    stream = _watch(stub)

    replayed = await _next(stream)
    await _next(stream, CAUGHT_UP)
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
    first = _watch(stub)
    seen = await _next(first)
    first.cancel()

    resumed = _watch(stub, after=seen.sequence)
    event = await _next(resumed)
    resumed.cancel()

    assert event.session_id == phone.session_id
    assert event.sequence > seen.sequence
    assert tablet.session_id not in (seen.session_id, event.session_id)


async def test_a_steady_flow_of_revocations_still_carries_heartbeats(authority: Running) -> None:
    """Regression: heartbeats came only after a silent interval, so a consumer fed
    revocations faster than that was never confirmed complete and went stale."""
    mirror, store = authority.server.authority.mirror, authority.server.authority.store
    base = mirror.sequence
    feed = mirror.follow(store, base, heartbeat_interval=0.2, fresh_within=30)
    assert await anext(feed) is revocations.KEYS_CHANGED
    assert isinstance(await anext(feed), revocations.CaughtUp)
    received: list[Any] = []

    async def read() -> None:
        async for event in feed:
            received.append(event)

    reader = asyncio.create_task(read())
    # One entry every 20 ms for a second: never a 0.2 s silence.
    for n in range(1, 51):
        mirror.advance([Revocation(base + n, f"steady-{n}", None, time.time() + 60)])
        await asyncio.sleep(0.02)
    reader.cancel()

    entries = [e for e in received if isinstance(e, Revocation)]
    beats = [e for e in received if isinstance(e, revocations.Heartbeat)]
    assert len(entries) >= 40
    assert len(beats) >= 2, "no heartbeats while revocations flowed"
    for beat in beats:
        sent_before = [e.sequence for e in received[: received.index(beat)] if isinstance(e, Revocation)]
        assert beat.sequence == max(sent_before)  # complete up to what was sent, no further


async def test_heartbeats_carry_the_position_to_resume_from(stub: Stub) -> None:
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")
    stream = _watch(stub, heartbeat=0.1)
    last = await _next(stream)
    started = time.monotonic()

    heartbeat = await _next(stream, HEARTBEAT, timeout=2)
    elapsed = time.monotonic() - started
    stream.cancel()

    assert heartbeat.sequence == last.sequence
    assert heartbeat.sent_at.seconds > 0
    assert elapsed < 1.5  # asked for every 100 ms; loose, the machine is shared


async def test_a_rotation_is_announced_on_the_stream_before_the_new_key_signs(start_server: StartServer) -> None:
    running = await start_server(key_publish_ahead=3600)
    stream = _watch(running.stub)
    opening = await _next(stream, SIGNING_KEYS)

    settings = running.server.authority.settings
    new_key = await rotate_key(
        running.server.authority.store, settings.signing_algorithm, time.time(), 3600, settings.key_encryption_key_bytes()
    )
    announced = await _next(stream, SIGNING_KEYS)
    stream.cancel()
    signed_in = await sign_in(running.stub, new_subject(), "laptop")

    assert new_key.kid not in opening.jwks_json
    assert new_key.kid in {key["kid"] for key in json.loads(announced.jwks_json)["keys"]}
    assert jwt.get_unverified_header(signed_in.access_token)["kid"] != new_key.kid


async def test_an_invalid_heartbeat_interval_is_invalid_argument(stub: Stub) -> None:
    request = pb.WatchRevocationsRequest(heartbeat_interval=Duration(seconds=-1))
    stream = stub.WatchRevocations(request)

    error = await rpc_error(stream.read())

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat_interval" in (error.details() or "")


async def test_logout_event_names_the_token_and_its_session(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")
    stream = _watch(stub)
    await _next(stream, CAUGHT_UP)

    await stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token))
    event = await _next(stream)
    stream.cancel()

    validated = await stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token))
    assert event.session_id == signed_in.session_id
    assert event.token_id == jwt.decode(signed_in.access_token, options={"verify_signature": False})["jti"]
    assert validated.reason == pb.INVALID_REASON_REVOKED


async def test_every_revocation_reaches_every_watcher_once_in_order(stub: Stub) -> None:
    watchers = [_watch(stub) for _ in range(3)]
    for watcher in watchers:
        await _next(watcher, CAUGHT_UP)
    subject = new_subject()
    issued = [await sign_in(stub, subject, f"device-{n}") for n in range(6)]

    received = [[await _next(w) for _ in range(5)] for w in watchers]
    for watcher in watchers:
        watcher.cancel()

    expected = [signed_in.session_id for signed_in in issued[:5]]
    assert [[event.session_id for event in events] for events in received] == [expected] * 3
    for events in received:
        assert [e.sequence for e in events] == sorted({e.sequence for e in events})


async def test_a_watcher_that_falls_too_far_behind_is_told_to_resume(
    authority: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feeds, "WATCHER_QUEUE_SIZE", 3)
    mirror, store = authority.server.authority.mirror, authority.server.authority.store
    base = mirror.sequence
    feed = mirror.follow(store, base, heartbeat_interval=30, fresh_within=30)
    assert await anext(feed) is revocations.KEYS_CHANGED  # the key set comes first
    assert isinstance(await anext(feed), revocations.CaughtUp)
    first = asyncio.create_task(anext(feed))  # reaches the live phase and waits there
    await asyncio.sleep(0.1)
    mirror.advance([Revocation(base + 1, "s-1", None, time.time() + 60)])
    assert (await first).sequence == base + 1  # type: ignore[union-attr]

    mirror.advance([Revocation(base + n, f"s-{n}", None, time.time() + 60) for n in range(2, 7)])

    with pytest.raises(WatcherTooSlow):
        for _ in range(6):
            await asyncio.wait_for(anext(feed), timeout=2)
    assert status_of(WatcherTooSlow()) is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_resuming_after_a_sequence_the_log_never_reached_is_out_of_range(stub: Stub) -> None:
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")

    error = await rpc_error(_next(_watch(stub, after=10**12), CAUGHT_UP))

    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "resume from 0" in (error.details() or "")


async def test_watchers_hanging_up_mid_stream_leave_the_server_serving(stub: Stub) -> None:
    """Many at once, again and again. (A crash this once caused, from reading a call's peer
    after its stream ended, was a rare race: the replica tests caught it, this does not
    reliably; it guards the ordinary case.)"""
    subject = new_subject()
    for _ in range(5):
        await sign_in(stub, subject, f"device-{secrets.token_hex(2)}")
    for _ in range(4):
        streams = [_watch(stub, heartbeat=0.1) for _ in range(25)]
        await asyncio.gather(*(_caught_up(stream) for stream in streams))
        for stream in streams:
            stream.cancel()
        await asyncio.sleep(0.05)

    answer = await stub.GetSigningKeys(pb.GetSigningKeysRequest())

    assert '"keys"' in answer.jwks_json


async def _caught_up(stream: Any) -> None:
    while (await asyncio.wait_for(stream.read(), timeout=5)).kind != CAUGHT_UP:
        pass


async def test_a_watcher_cut_off_for_falling_behind_is_told_what_happened_and_how_to_resume(
    authority: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards against RESOURCE_EXHAUSTED with empty details."""
    monkeypatch.setattr(feeds, "WATCHER_QUEUE_SIZE", 3)
    mirror = authority.server.authority.mirror
    stream = _watch(authority.stub)
    await _next(stream, CAUGHT_UP)
    base = mirror.sequence

    # More entries at once than the watcher's queue holds, before its feed can take one.
    mirror.advance([Revocation(base + n, f"s-{n}", None, time.time() + 60) for n in range(1, 11)])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        for _ in range(11):
            await _next(stream)

    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = caught.value.details() or ""
    assert "fell too far behind" in details and "after_sequence" in details
