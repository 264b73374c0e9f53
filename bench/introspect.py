"""Load on ``POST /introspect``, the HTTP twin of ValidateToken: a worker of
:mod:`bench.load` drives it the way it drives an RPC, a fixed number of requests in flight
on one aiohttp client session, so the two are compared like for like."""

from __future__ import annotations

import array
import asyncio
import multiprocessing.synchronize
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.load import Phase

WARMUP_CALLS = 20


async def drive(
    phase: Phase, items: Sequence[str], ready: multiprocessing.synchronize.Barrier, done: Any
) -> tuple[int, int, float, array.array[float]]:
    """Runs the phase's introspections against ``phase.target`` (the HTTP base URL)."""
    import aiohttp  # in the worker, after spawn

    bodies = [urllib.parse.urlencode({"token": token}).encode() for token in items]
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    url = phase.target + "/introspect"
    connector = aiohttp.TCPConnector(limit=phase.concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def call(body: bytes) -> bool:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status == 200

        for _ in range(WARMUP_CALLS):
            async with session.get(phase.target + "/healthz") as warming:
                await warming.read()
        if not phase.once:
            for i in range(WARMUP_CALLS):
                await call(bodies[i % len(bodies)])
        await asyncio.to_thread(ready.wait)
        latencies: array.array[float] = array.array("d")
        errors = 0
        next_index = 0
        started = time.perf_counter()
        deadline = started + phase.seconds
        total = len(bodies)

        async def caller() -> None:
            nonlocal next_index, errors
            clock = time.perf_counter
            while clock() < deadline and not (phase.once and next_index >= total):
                body = bodies[next_index % total]
                next_index += 1
                begun = clock()
                try:
                    answered = await call(body)
                except aiohttp.ClientError:
                    answered = False
                if not answered:
                    errors += 1
                    continue
                latencies.append(clock() - begun)
                done.value += 1

        await asyncio.gather(*(caller() for _ in range(phase.concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies), errors, elapsed, latencies
