"""WatchSessionEvents carries the log's epoch, as WatchRevocations does: a position means
something only within its epoch, so that after a restore or a failover an auditor
resuming after N does not silently miss what the new log writes at numbers up to N."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from authority.store import Store
from tests.conftest import StartServer
from tests.support.calls import Stub, new_subject, sign_in

CAUGHT_UP, HEARTBEAT = pb.SESSION_EVENT_KIND_CAUGHT_UP, pb.SESSION_EVENT_KIND_HEARTBEAT
WITHIN = 30.0


def _watch(stub: Stub, after: int = 0, epoch: str = "", heartbeat: float | None = None) -> Any:
    request = pb.WatchSessionEventsRequest(after_sequence=after, epoch=epoch)
    if heartbeat is not None:
        request.heartbeat_interval.CopyFrom(Duration(nanos=int(heartbeat * 1e9)))
    return stub.WatchSessionEvents(request)


async def _until_caught_up(stream: Any) -> tuple[list[pb.SessionEvent], pb.SessionEvent]:
    events = []
    while True:
        event = await asyncio.wait_for(stream.read(), WITHIN)
        if event.kind == CAUGHT_UP:
            return events, event
        events.append(event)


async def _next(stream: Any, kind: int | None = None) -> pb.SessionEvent:
    """The next event that is not a heartbeat (or the next of ``kind``)."""
    while True:
        event = await asyncio.wait_for(stream.read(), WITHIN)
        if (kind is None and event.kind != HEARTBEAT) or event.kind == kind:
            return event


async def _epoch(database_url: str) -> str:
    return (await _store_call(database_url, "log_state")).epoch  # type: ignore[no-any-return]


async def _store_call(database_url: str, method: str) -> Any:
    store = Store.open(database_url)
    try:
        return await getattr(store, method)()
    finally:
        await store.close()


async def test_every_session_event_carries_the_epoch_of_the_revocation_log(
    start_server: StartServer, database_url: str
) -> None:
    running = await start_server()
    subject = new_subject()
    await sign_in(running.stub, subject, "laptop")
    epoch = await _epoch(database_url)
    assert epoch

    stream = _watch(running.stub, heartbeat=0.1)
    backlog, caught_up = await _until_caught_up(stream)
    await sign_in(running.stub, subject, "phone")
    live = [await _next(stream), await _next(stream)]  # the laptop's end, the phone's sign-in
    heartbeat = await _next(stream, HEARTBEAT)
    stream.cancel()

    assert backlog and [e.kind for e in live] == [pb.SESSION_EVENT_KIND_SESSION_ENDED, pb.SESSION_EVENT_KIND_SIGNED_IN]
    assert {e.epoch for e in [*backlog, caught_up, *live, heartbeat]} == {epoch}
    revocations = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    assert (await asyncio.wait_for(revocations.read(), WITHIN)).epoch == epoch
    revocations.cancel()


async def test_resuming_with_a_foreign_epoch_is_out_of_range(start_server: StartServer, database_url: str) -> None:
    running = await start_server()
    await sign_in(running.stub, new_subject(), "laptop")
    _, caught_up = await _until_caught_up(_watch(running.stub))

    refused = _watch(running.stub, after=caught_up.sequence, epoch="restored-1")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(refused.read(), WITHIN)

    assert error.value.code() is grpc.StatusCode.OUT_OF_RANGE
    details = error.value.details() or ""
    assert "session event log" in details and "start again from 0" in details
    # The epoch the position came from, or none (a consumer from before epochs), resumes.
    for epoch in (caught_up.epoch, ""):
        resumed = _watch(running.stub, after=caught_up.sequence, epoch=epoch)
        assert (await _until_caught_up(resumed))[1].sequence == caught_up.sequence
        resumed.cancel()
    # From 0 a foreign epoch is no position at all: the log is read from its start.
    from_start = _watch(running.stub, epoch="restored-1")
    assert (await _until_caught_up(from_start))[1].epoch == caught_up.epoch
    from_start.cancel()


async def test_a_renewed_epoch_ends_open_session_event_streams(start_server: StartServer, database_url: str) -> None:
    """`authority migrate --renew-epoch` (after restoring a copy): auditors start again from 0."""
    running = await start_server(revocation_poll_interval=0.1)
    await sign_in(running.stub, new_subject(), "laptop")
    stream = _watch(running.stub, heartbeat=0.1)
    _, caught_up = await _until_caught_up(stream)

    await _store_call(database_url, "renew_epoch")
    renewed = await _epoch(database_url)
    deadline = time.monotonic() + WITHIN
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while time.monotonic() < deadline:  # heartbeats until the follower notices
            await asyncio.wait_for(stream.read(), WITHIN)
    assert ended.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "start again from 0" in (ended.value.details() or "")

    # The old position is refused; from 0 the stream announces the new epoch.
    old = _watch(running.stub, after=caught_up.sequence, epoch=caught_up.epoch)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(old.read(), WITHIN)
    assert refused.value.code() is grpc.StatusCode.OUT_OF_RANGE
    again = _watch(running.stub)
    events, marker = await _until_caught_up(again)
    again.cancel()
    assert {e.epoch for e in [*events, marker]} == {renewed} != {caught_up.epoch}


async def test_resuming_with_the_epoch_misses_nothing_and_repeats_nothing(
    start_server: StartServer, database_url: str
) -> None:
    running = await start_server()
    subject = new_subject()
    await sign_in(running.stub, subject, "laptop")
    first = _watch(running.stub)
    received, _ = await _until_caught_up(first)
    await sign_in(running.stub, subject, "phone")
    received += [await _next(first), await _next(first)]
    first.cancel()
    # Written while the consumer is away.
    await sign_in(running.stub, subject, "tablet")
    await sign_in(running.stub, subject, "laptop")

    last = received[-1]
    assert last.epoch
    resumed, _ = await _until_caught_up(_watch(running.stub, after=last.sequence, epoch=last.epoch))
    everything, _ = await _until_caught_up(_watch(running.stub))

    combined = [(e.sequence, e.epoch) for e in received + resumed]
    assert combined == [(e.sequence, e.epoch) for e in everything]
    assert len(resumed) == 4  # phone out, tablet in; tablet out, laptop in
    assert len({sequence for sequence, _ in combined}) == len(combined)
