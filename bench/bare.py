"""The floor: a bare grpc.aio server that serves only the standard health service, with no
interceptors and no logging, in a process of its own.

Driven by the same load workers as the authority, its health Check is the least server
CPU a Python gRPC call can cost on this machine; the authority's calls are measured
against it (bench/run.py).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from typing import Any


async def _serve(ports: Any) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ports.put(port)
    await server.wait_for_termination()


def _main(ports: Any) -> None:
    # No logging at all: not even a warning may cost the floor a write.
    logging.disable(logging.CRITICAL)
    asyncio.run(_serve(ports))


class BareServer:
    """The bare health server in a process of its own."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self._process = context.Process(target=_main, args=(ports,), daemon=True)
        self._process.start()
        self.target = f"127.0.0.1:{ports.get(timeout=60)}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return int(self._process.pid or 0)

    def stop(self) -> None:
        """Ends the process."""
        self._process.terminate()
        self._process.join(timeout=10)
