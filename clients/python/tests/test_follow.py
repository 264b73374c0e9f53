"""The followers against a stream that goes silent: one fake, at the stream's seam, since
a real authority never stops talking while it is up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from authority_client import AsyncAuthorityClient, AuthorityClient, FollowSettings
from authority_client.local.follow import AsyncMirrorFollower, MirrorFollower
from authority_client.local.mirror import RevocationMirror
from authority_client.types import RevocationEvent, RevocationEventKind
from authority_client.v1 import authority_pb2 as pb

SETTINGS = FollowSettings(heartbeat_interval=0.1, idle_timeout=0.5, min_backoff=0.01, max_backoff=0.05)


class SilentAfterCatchingUp:
    """A WatchRevocations that sends one revocation (first call only), CAUGHT_UP, then nothing."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.ended = threading.Event()

    def watch(self, request: pb.WatchRevocationsRequest, context: grpc.ServicerContext) -> Iterator[pb.RevocationEvent]:
        self.requests.append(request.after_sequence)
        if request.after_sequence < 7:
            yield pb.RevocationEvent(
                kind=pb.REVOCATION_EVENT_KIND_REVOCATION, sequence=7, session_id="s7",
                expires_at={"seconds": int(time.time()) + 600},
            )
        yield pb.RevocationEvent(kind=pb.REVOCATION_EVENT_KIND_CAUGHT_UP, sequence=7)
        while context.is_active():
            time.sleep(0.02)

    def serve(self) -> tuple[grpc.Server, str]:
        server = grpc.server(futures.ThreadPoolExecutor(4))
        handler = grpc.unary_stream_rpc_method_handler(
            self.watch,
            request_deserializer=pb.WatchRevocationsRequest.FromString,
            response_serializer=pb.RevocationEvent.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("authority.v1.TokenAuthority", {"WatchRevocations": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return server, f"127.0.0.1:{port}"


def _wait(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s")
        time.sleep(0.01)


def test_a_silent_stream_is_reopened_after_the_last_sequence() -> None:
    fake = SilentAfterCatchingUp()
    server, target = fake.serve()
    mirror = RevocationMirror(max_staleness=0.3)
    with AuthorityClient(target) as client:
        follower = MirrorFollower(client, mirror, SETTINGS)
        follower.start()
        try:
            _wait(lambda: len(fake.requests) >= 2, within=3.0)
            assert fake.requests[:2] == [0, 7]
            assert mirror.is_revoked("s7", "")
            # Silence makes it stale, even with the stream open: each opening's CAUGHT_UP
            # vouches for 0.3 s, and the stream stays open and silent for 0.5 s before it
            # is reopened. A mirror kept fresh by an open stream never leaves this wait.
            _wait(lambda: not mirror.is_fresh(), within=3.0)
        finally:
            follower.stop()
            server.stop(None)


async def test_a_silent_stream_is_reopened_after_the_last_sequence_in_asyncio() -> None:
    fake = SilentAfterCatchingUp()
    server, target = fake.serve()
    mirror = RevocationMirror(max_staleness=0.3)
    async with AsyncAuthorityClient(target) as client:
        follower = AsyncMirrorFollower(client, mirror, SETTINGS)
        follower.start()
        try:
            deadline = time.monotonic() + 3.0
            while len(fake.requests) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert fake.requests[:2] == [0, 7]
            assert mirror.is_revoked("s7", "")
        finally:
            await follower.stop()
            server.stop(None)


def test_a_position_the_authority_never_reached_makes_the_follower_start_again_from_zero() -> None:
    """As after a database restored from a backup: the consumer's last sequence is beyond
    the log's end. The authority answers OUT_OF_RANGE and the follower takes a snapshot."""
    testing = pytest.importorskip("authority.testing")
    with testing.InProcessAuthority() as authority:
        first = authority.sign_in("user-restart", "laptop")
        authority.sign_in("user-restart", "phone")  # revokes the laptop's session
        mirror = RevocationMirror(max_staleness=5)
        mirror.apply(_caught_up_at(10**9))
        with AuthorityClient(authority.target) as client:
            follower = MirrorFollower(client, mirror, SETTINGS)
            follower.start()
            try:
                _wait(lambda: mirror.is_revoked(first.session_id, ""), within=5.0)
                assert mirror.last_sequence < 10**9
            finally:
                follower.stop()


def _caught_up_at(sequence: int) -> RevocationEvent:
    return RevocationEvent(kind=RevocationEventKind.CAUGHT_UP, sequence=sequence)


class RestoredBetweenStreams:
    """A WatchRevocations whose log changes epoch between two streams, and which (like a
    server that does not check the request's epoch) answers the old position anyway."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, str]] = []

    def watch(self, request: pb.WatchRevocationsRequest, context: grpc.ServicerContext) -> Iterator[pb.RevocationEvent]:
        self.requests.append((request.after_sequence, request.epoch))
        expires = {"seconds": int(time.time()) + 600}
        epoch = "e1" if len(self.requests) == 1 else "e2"
        if request.after_sequence == 0:
            sequence = 7 if epoch == "e1" else 3
            yield pb.RevocationEvent(kind=pb.REVOCATION_EVENT_KIND_REVOCATION, sequence=sequence,
                                     session_id=f"s{sequence}-{epoch}", expires_at=expires, epoch=epoch)
        yield pb.RevocationEvent(kind=pb.REVOCATION_EVENT_KIND_CAUGHT_UP, sequence=7 if epoch == "e1" else 3,
                                 epoch=epoch)
        if len(self.requests) == 1:
            return  # the first stream ends: the follower resumes after 7 of e1
        while context.is_active():
            time.sleep(0.02)

    serve = SilentAfterCatchingUp.serve


def test_a_stream_of_another_epoch_makes_the_follower_start_again_from_zero() -> None:
    fake = RestoredBetweenStreams()
    server, target = fake.serve()
    mirror = RevocationMirror(max_staleness=5)
    with AuthorityClient(target) as client:
        follower = MirrorFollower(client, mirror, SETTINGS)
        follower.start()
        try:
            _wait(lambda: mirror.is_revoked("s3-e2", ""), within=5.0)
            assert fake.requests[:3] == [(0, ""), (7, "e1"), (0, "")]
            assert mirror.epoch == "e2" and mirror.last_sequence == 3
            assert mirror.is_revoked("s7-e1", "")  # what it held stays held
        finally:
            follower.stop()
            server.stop(None)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a finite number of seconds above 0"),
        ({"idle_timeout": float("inf")}, "idle_timeout must be a finite number"),
        ({"min_backoff": float("nan")}, "min_backoff must be a finite number"),
        ({"max_backoff": "2"}, "max_backoff must be a finite number"),
        ({"heartbeat_interval": 1e-7}, "heartbeat_interval must be at least 0.001 s"),
        ({"heartbeat_interval": 5.0, "idle_timeout": 3.0}, "idle_timeout must be longer than heartbeat_interval"),
        ({"min_backoff": 1.0, "max_backoff": 0.5}, "max_backoff must be at least min_backoff"),
    ],
)
def test_follow_settings_that_would_never_follow_are_refused(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        FollowSettings(**settings)
