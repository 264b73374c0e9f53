"""The revocation log's epoch: a restored database is noticed, and nothing written after
the restore is skipped.

A database restored from a base backup has lost the revocations made after the backup,
and its sequence restarts below the positions consumers hold: without an epoch, a
consumer resuming after its position would silently skip what the restored log writes
next. Every WatchRevocations event announces the epoch; a consumer resumes with it, and
a position of another epoch starts again from 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from authority_client.async_client import AsyncAuthorityClient
from authority_client.local.follow import AsyncMirrorFollower, FollowSettings
from authority_client.local.mirror import RevocationMirror as ConsumerMirror
from authority_client.v1 import authority_pb2 as pb

from authority.store import Store
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, sign_in
from tests.support.pgcluster import PgCluster, free_port, require_server_binaries

WITHIN = 30.0
# More revocations after the backup than PostgreSQL logs a sequence ahead (32): the
# restored log's next sequences are then below the consumer's position.
AFTER_BACKUP = 40


async def until(condition: Callable[[], bool], failure: str, within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.05)


async def test_every_event_announces_the_epoch_and_a_foreign_epoch_is_out_of_range(
    start_server: StartServer, database_url: str
) -> None:
    running = await start_server()
    signed = await sign_in(running.stub, new_subject(), "laptop")
    await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed.session_id))
    epoch = (await running.server.authority.store.log_state()).epoch

    stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    events = [await stream.read() for _ in range(3)]  # keys, the revocation, caught up
    stream.cancel()
    assert [e.kind for e in events] == [pb.REVOCATION_EVENT_KIND_SIGNING_KEYS, pb.REVOCATION_EVENT_KIND_REVOCATION,
                                        pb.REVOCATION_EVENT_KIND_CAUGHT_UP]
    assert {e.epoch for e in events} == {epoch} and epoch

    # Resuming with the epoch it came from works; with another, OUT_OF_RANGE.
    same = running.stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=events[1].sequence, epoch=epoch))
    assert (await same.read()).kind == pb.REVOCATION_EVENT_KIND_SIGNING_KEYS
    same.cancel()
    other = running.stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=events[1].sequence, epoch="x-1"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await other.read()
    assert refused.value.code() is grpc.StatusCode.OUT_OF_RANGE


async def test_the_followers_page_comes_with_the_state_of_the_log_it_was_read_from(authority: Running) -> None:
    """Store.followed_page (one statement on PostgreSQL) reads what log_after and then
    log_state read: the same entries, split the same way, and the same epoch and host."""
    store = authority.server.authority.store
    subject = new_subject()
    for device in ("laptop", "phone", "tablet"):
        await sign_in(authority.stub, subject, device)  # each signs the one before out

    page, state = await store.followed_page(0, 10)
    expected = await store.log_after(0, 10)
    assert state == await store.log_state() and state.epoch == authority.server.authority.mirror.epoch
    assert (page.final, page.pending) == (expected.final, expected.pending) and len(page) == 2
    first, rest = await store.followed_page(0, 1), await store.followed_page(page.final[0].sequence, 10)
    assert first[0].final == page.final[:1] and rest[0].final == page.final[1:]
    past, state_past = await store.followed_page(page.final[-1].sequence, 10)
    assert (past.final, past.pending, state_past) == ([], [], state)


async def test_a_renewed_epoch_is_a_new_log_to_every_follower(start_server: StartServer, database_url: str) -> None:
    """`authority migrate --renew-epoch` (after restoring a copy): replicas and consumers start from 0."""
    running = await start_server(revocation_poll_interval=0.1)
    authority = running.server.authority
    before = authority.mirror.epoch
    stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    await stream.read()
    store = Store.open(database_url)
    try:
        await store.renew_epoch()
    finally:
        await store.close()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            await asyncio.wait_for(stream.read(), WITHIN)
    assert ended.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert authority.mirror.epoch != before


@pytest.fixture
def primary() -> Iterator[PgCluster]:
    require_server_binaries()
    cluster = PgCluster.create("epoch-primary")
    yield cluster
    cluster.destroy()


async def test_a_restored_base_backup_is_a_new_epoch_and_nothing_after_it_is_skipped(
    primary: PgCluster, start_server: StartServer
) -> None:
    restored_port = free_port()
    url = (f"postgresql+asyncpg://postgres@/postgres?host={primary.host()}&host=127.0.0.1:{restored_port}"
           "&target_session_attrs=read-write")
    running = await start_server(database_url=url, max_staleness=2.0, revocation_poll_interval=0.2)
    authority = running.server.authority
    client = AsyncAuthorityClient(running.target)
    consumer = ConsumerMirror(max_staleness=5.0, leeway=0)
    follower = AsyncMirrorFollower(client, consumer, FollowSettings(heartbeat_interval=0.2, idle_timeout=2.0))
    follower.start()
    restored: PgCluster | None = None
    try:
        kept = await sign_in(running.stub, new_subject(), "laptop")
        await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=kept.session_id))
        await until(lambda: consumer.is_revoked(kept.session_id, ""), "the consumer never saw the first revocation")
        first_epoch = consumer.epoch

        restored = primary.base_backup("epoch-restored", port=restored_port)
        lost = [await sign_in(running.stub, new_subject(), "laptop") for _ in range(AFTER_BACKUP)]
        for signed in lost:
            await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed.session_id))
        await until(lambda: all(consumer.is_revoked(s.session_id, "") for s in lost), "revocations not followed")
        position = consumer.last_sequence

        # The primary is lost; the base backup is restored in its place (a new timeline).
        primary.stop("immediate")
        restored.restore()
        survivor = await sign_in_when_back(running, within=WITHIN)
        await until(lambda: authority.mirror.epoch != first_epoch, "the replica never noticed the new epoch")
        assert authority.mirror.epoch.endswith("-2"), authority.mirror.epoch  # the restore's new timeline
        await running.stub.RevokeToken(pb.RevokeTokenRequest(session_id=survivor.session_id))
        after = authority.mirror.sequence
        assert after < position, "the restored log did not fall behind the consumer; the test proves nothing"

        # Written after the restore, below the consumer's old position: still followed.
        await until(lambda: consumer.is_revoked(survivor.session_id, ""), "a revocation after the restore was skipped")
        assert consumer.epoch == authority.mirror.epoch != first_epoch
        # What the restore lost is still refused where it was known: the mirror keeps it.
        answers = [await running.stub.ValidateToken(pb.ValidateTokenRequest(token=s.access_token)) for s in lost[:5]]
        assert all(a.reason == pb.INVALID_REASON_REVOKED for a in answers)
        assert all(consumer.is_revoked(s.session_id, "") for s in lost)
    finally:
        await follower.stop()
        await client.close()
        if restored is not None:
            restored.destroy()


async def sign_in_when_back(running: Running, within: float) -> pb.IssueTokenResponse:
    """A sign-in, retried while the store answers UNAVAILABLE (and only then)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await sign_in(running.stub, new_subject(), "laptop")
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
            assert time.monotonic() < deadline, "the authority never came back on the restored database"
            await asyncio.sleep(0.1)
