"""`authority serve` replicas as real processes on one database, for tests.

    replicas = ReplicaSet(database_url, name="edge", key_encryption_key=KEK, max_staleness="2s")
    try:
        a, b, c = await replicas.start(3)     # concurrently, each on a free port
        await a.stub.IssueToken(...)
        c.kill()                              # SIGKILL: the process dies, its sockets close
    finally:
        await replicas.close()                # always: every process stopped, channels closed

Settings are passed as ``AUTHORITY_*`` variables (``max_staleness="2s"`` becomes
``AUTHORITY_MAX_STALENESS=2s``); inherited ``AUTHORITY_*`` variables are dropped, so a
replica runs on exactly what the test gave it. Each replica listens on port 0 and the
port is read from its "listening on" line. Its stderr is read all along (a full pipe
would stall it) and kept, for :meth:`ReplicaSet.report` when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import sys
from pathlib import Path

import grpc
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

AUTHORITY = str(Path(sys.executable).with_name("authority"))
START_TIMEOUT = 60.0  # several replicas starting at once on two busy cores
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 10.0
_LISTENING = re.compile(r"listening on (\S+:\d+)")


@dataclasses.dataclass
class Replica:
    """One running ``authority serve`` process and a channel to it."""

    name: str
    process: asyncio.subprocess.Process
    target: str
    channel: grpc.aio.Channel
    stub: authority_pb2_grpc.TokenAuthorityStub
    health: health_pb2_grpc.HealthStub
    log: list[str]
    _reader: asyncio.Task[None]

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL: no graceful stop, no rollback by the process itself."""
        if self.running:
            self.process.kill()

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not stopped within ``STOP_TIMEOUT``; its exit code."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()

    async def serving(self) -> str:
        """The grpc health status of the whole server: SERVING, NOT_SERVING, ..."""
        answer = await self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    async def outcome(self, token: str) -> str:
        """VALID, the reason a token is invalid (REVOKED, ...), or the status of a failed call."""
        try:
            answer = await self.stub.ValidateToken(pb.ValidateTokenRequest(token=token), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        if answer.valid:
            return "VALID"
        return pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")


class ReplicaSet:
    """Replicas of one authority on one database; :meth:`close` stops every one of them."""

    def __init__(self, database_url: str, *, name: str = "replica", **settings: str) -> None:
        self.database_url = database_url
        self.name = name
        self.settings = settings
        self.replicas: list[Replica] = []
        self._started = 0

    async def start(self, count: int, **settings: str) -> list[Replica]:
        """Starts ``count`` replicas at once (``settings`` on top of the set's own)."""
        return list(await asyncio.gather(*(self.start_one(**settings) for _ in range(count))))

    async def start_one(self, *, database_url: str | None = None, **settings: str) -> Replica:
        """Starts one replica and waits until it listens; raises with its log if it exits first."""
        self._started += 1
        name = f"{self.name}-{self._started}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("AUTHORITY_")}
        env.update({f"AUTHORITY_{key.upper()}": value for key, value in {**self.settings, **settings}.items()})
        # A crash in a C extension prints the Python stack of every thread to stderr.
        env["PYTHONFAULTHANDLER"] = "1"
        process = await asyncio.create_subprocess_exec(
            AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url or self.database_url,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        log: list[str] = []
        listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reader = asyncio.create_task(_read_log(process, log, listening), name=f"{name}-stderr")
        try:
            target = await asyncio.wait_for(asyncio.shield(listening), START_TIMEOUT)
        except BaseException:
            listening.cancel()
            if process.returncode is None:
                process.kill()
            await process.wait()
            await reader
            raise RuntimeError(f"{name} did not start:\n" + "".join(log)) from None
        channel = grpc.aio.insecure_channel(target)
        replica = Replica(
            name, process, target, channel, authority_pb2_grpc.TokenAuthorityStub(channel),
            health_pb2_grpc.HealthStub(channel), log, reader,
        )
        self.replicas.append(replica)
        return replica

    def marks(self) -> dict[str, int]:
        """How many log lines each replica has written so far (see :meth:`report`)."""
        return {r.name: len(r.log) for r in self.replicas}

    def report(self, since: dict[str, int] | None = None) -> str:
        """Every replica's stderr (from ``since``), for diagnosing a failed test."""
        parts = []
        for replica in self.replicas:
            start = (since or {}).get(replica.name, 0)
            state = "running" if replica.running else f"exited {replica.process.returncode}"
            parts.append(f"----- {replica.name} ({replica.target}, {state}) -----\n" + "".join(replica.log[start:]))
        return "\n".join(parts)

    async def close(self) -> None:
        """Closes every channel and stops every replica still running."""
        for replica in self.replicas:
            await replica.channel.close()
        await asyncio.gather(*(replica.stop() for replica in self.replicas), return_exceptions=True)
        for replica in self.replicas:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(replica._reader, STOP_TIMEOUT)


async def _read_log(process: asyncio.subprocess.Process, log: list[str], listening: asyncio.Future[str]) -> None:
    """Keeps every stderr line until the process exits; resolves ``listening`` with its target."""
    assert process.stderr is not None
    while line := (await process.stderr.readline()).decode(errors="replace"):
        log.append(line)
        if not listening.done() and (match := _LISTENING.search(line)):
            listening.set_result(match.group(1))
    if not listening.done():
        listening.set_exception(RuntimeError("exited before listening"))
