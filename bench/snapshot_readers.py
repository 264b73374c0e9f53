"""Snapshot readers in a process of their own, so that reading the streams costs the
authority under test nothing but serving them (the tests and scripts/bench use it).

    python -m bench.snapshot_readers TARGET READERS SECONDS

Each reader opens ``WatchRevocations(after_sequence=0)``, reads to CAUGHT_UP, and starts
again, until SECONDS have passed; then the process prints, as JSON, how many snapshots
completed, how many readers received revocations, and how many streams failed by status.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc


async def _reader(stub: authority_pb2_grpc.TokenAuthorityStub, until: float, tally: dict[str, int]) -> None:
    served = False
    while time.monotonic() < until:
        stream = stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=0))
        try:
            async for event in stream:
                if event.kind == pb.REVOCATION_EVENT_KIND_REVOCATION and not served:
                    served = True
                    tally["readers_served"] += 1
                if event.kind == pb.REVOCATION_EVENT_KIND_CAUGHT_UP:
                    tally["snapshots"] += 1
                    break
                if time.monotonic() >= until:
                    break
        except grpc.aio.AioRpcError as error:
            tally[error.code().name] = tally.get(error.code().name, 0) + 1
        finally:
            stream.cancel()


async def main(target: str, readers: int, seconds: float) -> None:
    tally = {"snapshots": 0, "readers_served": 0}
    until = time.monotonic() + seconds
    # One channel per reader: separate HTTP/2 connections, as separate consumers would be.
    channels = [grpc.aio.insecure_channel(target) for _ in range(readers)]
    try:
        await asyncio.gather(
            *(_reader(authority_pb2_grpc.TokenAuthorityStub(channel), until, tally) for channel in channels)
        )
    finally:
        for channel in channels:
            await channel.close()
    print(json.dumps(tally))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
