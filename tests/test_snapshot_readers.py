"""Many consumers reading the revocation snapshot at once must not make the authority's
own view stale: validation stays valid, sign-ins keep committing, health stays SERVING.

Guards against a SQLite authority whose log follower waited behind the streams' reads on
the store's one connection, until its view went stale and ValidateToken answered
UNAVAILABLE (health flapping, sign-ins taking seconds)."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from authority_client.v1 import authority_pb2 as pb

from authority.store.schema import revocations
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, sign_in

LIVE_REVOCATIONS = 20_000
READERS = 50
LOAD_SECONDS = 12.0
ROOT = Path(__file__).resolve().parents[1]


async def _fill_the_log(running: Running) -> None:
    now = time.time()
    rows = [
        {"session_id": secrets.token_urlsafe(16), "token_id": None, "subject": f"s-{n}", "reason": "test",
         "revoked_at": now, "expires_at": now + 3600}
        for n in range(LIVE_REVOCATIONS)
    ]
    async with running.server.authority.store.engine.begin() as conn:
        await conn.execute(revocations.insert(), rows)
    mirror = running.server.authority.mirror
    deadline = time.monotonic() + 30
    while len(mirror) < LIVE_REVOCATIONS:
        assert time.monotonic() < deadline, "the follower never read the log"
        await asyncio.sleep(0.05)


async def test_fifty_snapshot_readers_leave_validation_valid_and_sign_ins_committing(start_server: StartServer) -> None:
    # A staleness bound tighter than the default and a follower that reads often: its reads
    # must never queue behind the readers'.
    authority = await start_server(max_staleness=3.0, revocation_poll_interval=0.2)
    await _fill_the_log(authority)
    signed_in = await sign_in(authority.stub, new_subject(), "laptop")
    readers = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.snapshot_readers", authority.target, str(READERS), str(LOAD_SECONDS),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    until = time.monotonic() + LOAD_SECONDS
    answers: list[Any] = []
    sign_in_failures: list[Any] = []
    not_serving = 0

    while time.monotonic() < until:
        try:
            answer = await authority.stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token), timeout=5)
            answers.append("VALID" if answer.valid else pb.InvalidReason.Name(answer.reason))
        except grpc.aio.AioRpcError as error:
            answers.append(error.code().name)
        try:
            await authority.stub.IssueToken(pb.IssueTokenRequest(subject=new_subject(), device_id="phone"), timeout=5)
        except grpc.aio.AioRpcError as error:
            sign_in_failures.append(error.code().name)
        not_serving += not authority.server.authority.is_serving()
        await asyncio.sleep(0.05)  # pacing the probe, not waiting for a condition
    try:
        output, _ = await asyncio.wait_for(readers.communicate(), 60)
    finally:
        if readers.returncode is None:
            readers.kill()
            await readers.wait()
    tally = json.loads(output)

    assert len(answers) >= 5  # the probe ran throughout
    assert set(answers) == {"VALID"}, {a: answers.count(a) for a in set(answers)}
    assert sign_in_failures == []
    assert not_serving == 0
    assert tally["readers_served"] == READERS, f"the load did not happen: {tally}"
    assert set(tally) == {"snapshots", "readers_served"}, tally  # no stream failed either


async def test_the_follower_keeps_the_view_current_while_every_shared_connection_is_taken(
    start_server: StartServer,
) -> None:
    """The deterministic form of the above: consumers (or anything else) holding every
    connection of the shared pool must not stop the follower confirming the view."""
    running = await start_server(max_staleness=1.0, revocation_poll_interval=0.1)
    signed_in = await sign_in(running.stub, new_subject(), "laptop")
    engine = running.server.authority.store.engine
    pool: Any = engine.sync_engine.pool
    held = [await engine.connect() for _ in range(pool.size() + max(pool._max_overflow, 0))]
    stale = []
    try:
        until = time.monotonic() + 3.0  # three times the staleness bound
        while time.monotonic() < until:
            stale.append(not running.server.authority.is_current())
            answer = await running.stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token), timeout=5)
            assert answer.valid
            await asyncio.sleep(0.05)  # pacing the probe
    finally:
        for conn in held:
            await conn.close()

    assert not any(stale)
