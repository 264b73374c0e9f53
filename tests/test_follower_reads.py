"""How often a replica reads the revocation log: two reads start at least
``revocation_min_read_interval`` apart, however often it is woken, and nothing committed
in between waits for the poll.

Every revocation wakes every replica's follower (this replica's commit, and on PostgreSQL
a notification to each of the others). Without spacing, a stream of revocations costs
every replica one read, and one round trip, per entry.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.store import Store
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, reason, sign_in

WITHIN = 10.0
SPACING = 0.2
# A poll this long never serves a test: only the wake-ups do.
LONG_POLL = {"revocation_poll_interval": 30.0, "max_staleness": 60.0}


def _record_reads(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each read of the follower started (one page per read: the tests write few entries)."""
    follower = running.server.authority.follower
    store: Store = follower._store  # noqa: SLF001 - the follower's own connections
    started: list[float] = []
    read = store.followed_page

    async def recorded(*args: Any) -> Any:
        started.append(time.monotonic())
        return await read(*args)

    monkeypatch.setattr(store, "followed_page", recorded)
    return started


async def _replacing_sign_ins(running: Running, at_least: int, for_seconds: float) -> int:
    """Signs one subject in on new devices, each signing the one before out, until both
    ``at_least`` sign-ins and ``for_seconds`` have passed (at most WITHIN); returns how many."""
    subject, done = new_subject(), 0
    started = time.monotonic()
    while (done < at_least or time.monotonic() - started < for_seconds) and time.monotonic() - started < WITHIN:
        await sign_in(running.stub, subject, f"device-{done}")
        done += 1
    return done


async def _reads(started: list[float], at_least: int) -> list[float]:
    """The gaps between read starts, once there are ``at_least`` reads (within WITHIN)."""
    deadline = time.monotonic() + WITHIN
    while len(started) < at_least:
        assert time.monotonic() < deadline, f"the follower read {len(started)} times in {WITHIN} s"
        await asyncio.sleep(0.02)
    return [later - earlier for earlier, later in zip(started, started[1:])]


async def test_reads_start_at_least_the_interval_apart_however_often_the_follower_is_woken(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await start_server(revocation_min_read_interval=SPACING, **LONG_POLL)
    started = _record_reads(running, monkeypatch)

    # Each revocation wakes the follower; long enough for several spaced reads.
    woken = await _replacing_sign_ins(running, at_least=10, for_seconds=4 * SPACING)

    assert woken >= 10
    gaps = await _reads(started, 3)
    assert min(gaps) >= SPACING - 0.01, f"reads {min(gaps) * 1000:.1f} ms apart, after {woken} wake-ups"
    assert len(started) < woken, "a read for every wake-up"


async def test_without_spacing_every_wake_up_may_read(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: with the interval 0 the follower reads as soon as it is woken, so the
    test above could tell."""
    running = await start_server(revocation_min_read_interval=0, **LONG_POLL)
    started = _record_reads(running, monkeypatch)

    woken = await _replacing_sign_ins(running, at_least=10, for_seconds=0)

    gaps = await _reads(started, 3)
    assert woken >= 10 and min(gaps) < SPACING / 2


async def test_what_commits_during_the_spacing_reaches_watchers_without_waiting_for_the_poll(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spacing much longer than a sign-in: the third commits within the one the second's read starts.
    running = await start_server(revocation_min_read_interval=1.0, **LONG_POLL)
    started = _record_reads(running, monkeypatch)
    stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    while (await asyncio.wait_for(stream.read(), WITHIN)).kind != pb.REVOCATION_EVENT_KIND_CAUGHT_UP:
        pass
    subject = new_subject()
    first = await sign_in(running.stub, subject, "laptop")
    asked = time.monotonic()
    second = await sign_in(running.stub, subject, "phone")
    deadline = time.monotonic() + WITHIN
    while not started or started[-1] < asked:  # the read the second's revocation woke has started
        assert time.monotonic() < deadline, "the follower never read the second's revocation"
        await asyncio.sleep(0.005)
    await sign_in(running.stub, subject, "tablet")  # within that read's spacing: its wake-up must not be lost
    # This replica enforces both at once, whatever its follower has read.
    assert await reason(running.stub, first.access_token) == "REVOKED"
    assert await reason(running.stub, second.access_token) == "REVOKED"

    revoked: set[str] = set()
    deadline = time.monotonic() + WITHIN  # a third of the poll
    try:
        while not {first.session_id, second.session_id} <= revoked:
            event = await asyncio.wait_for(stream.read(), max(deadline - time.monotonic(), 0.01))
            if event.kind == pb.REVOCATION_EVENT_KIND_REVOCATION:
                revoked.add(event.session_id)
    finally:
        stream.cancel()
