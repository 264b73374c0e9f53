"""IssueToken latency while snapshot readers read the revocation log.

Consumers in a process of their own (:mod:`bench.snapshot_readers`) read
``WatchRevocations(after_sequence=0)`` over a log of live revocations, snapshot after
snapshot, while one client here signs subjects in one after another and times each
call. The goal is a p99 under 250 ms on both stores: snapshots must take a bounded share
of the store, never the connections sign-ins and the log follower need.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc

from authority.store import Store
from authority.store.schema import revocations
from bench.report import Goal, at_most
from bench.servers import ServedAuthority

GOAL_P99_MS = 250.0
ROOT = Path(__file__).resolve().parent.parent


async def fill_log(database_url: str, count: int) -> None:
    """Appends ``count`` live revocations to the log, on either store."""
    now = time.time()
    rows = [
        {"session_id": secrets.token_urlsafe(16), "token_id": None, "subject": f"bench-{n}", "reason": "bench",
         "revoked_at": now, "expires_at": now + 3600}
        for n in range(count)
    ]
    store = Store.open(database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(revocations.insert(), rows)
    finally:
        await store.close()


async def issue_latency(
    authority: ServedAuthority, store: str, readers: int, seconds: float, raw: dict[str, Any]
) -> Goal:
    """Times sign-ins for ``seconds`` while ``readers`` snapshot readers load ``authority``."""
    load = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.snapshot_readers", authority.target, str(readers), str(seconds + 1),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )
    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(authority.target) as channel:
        stub = authority_pb2_grpc.TokenAuthorityStub(channel)
        await asyncio.sleep(1)  # let the readers connect and start their snapshots
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            request = pb.IssueTokenRequest(subject=f"bench-snap-{secrets.token_hex(4)}", device_id="phone")
            started = time.perf_counter()
            try:
                await stub.IssueToken(request, timeout=10)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
    output, _ = await asyncio.wait_for(load.communicate(), seconds + 60)
    tally = json.loads(output)
    ms = sorted(latency * 1000 for latency in latencies)
    p50 = statistics.median(ms) if ms else float("nan")
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
    raw[store] = {"readers": readers, "sign_ins": len(ms), "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                  "errors": errors, "readers_tally": tally}
    return at_most(
        f"IssueToken p99 under {readers} snapshot readers, {store}", p99, GOAL_P99_MS, " ms",
        note=f"p50 {p50:.1f} ms over {len(ms)} sign-ins, {sum(errors.values())} errors; readers {tally}",
    )
