"""HTTP load for a worker of :mod:`bench.load`: keep-alive HTTP/1.1 GETs on raw asyncio
streams, one connection per call in flight, so the load generator costs as little as it can
and costs the same whether Envoy asks the authority or not.

A phase's ``target`` is ``host:port``; its items are access tokens, each sent as
``Authorization: Bearer`` on ``GET /orders``. A call counts when the answer is 200.
"""

from __future__ import annotations

import array
import asyncio
import time
from collections.abc import Sequence
from typing import Any

PATH = "/orders"
WARMUP_CALLS = 20


def _request(token: str) -> bytes:
    return f"GET {PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Sends one request and reads its whole answer; the status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status


async def drive(phase: Any, items: Sequence[str], ready: Any, done: Any) -> tuple[int, int, float, array.array[float]]:
    """Runs ``phase.concurrency`` keep-alive connections until the phase's time is up."""
    host, _, port = phase.target.rpartition(":")
    requests = [_request(token) for token in items]
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(phase.concurrency)]
    try:
        for reader, writer in connections:
            for i in range(WARMUP_CALLS):
                await _exchange(reader, writer, requests[i % len(requests)])
        await asyncio.to_thread(ready.wait)
        latencies: array.array[float] = array.array("d")
        errors = 0
        started = time.perf_counter()
        deadline = started + phase.seconds

        async def caller(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, offset: int) -> None:
            nonlocal errors
            clock = time.perf_counter
            index = offset
            while clock() < deadline:
                request = requests[index % len(requests)]
                index += 1
                begun = clock()
                if await _exchange(reader, writer, request) != 200:
                    errors += 1
                    continue
                latencies.append(clock() - begun)
                done.value += 1

        await asyncio.gather(*(caller(r, w, n) for n, (r, w) in enumerate(connections)))
        elapsed = time.perf_counter() - started
    finally:
        for _, writer in connections:
            writer.close()
    return len(latencies), errors, elapsed, latencies
