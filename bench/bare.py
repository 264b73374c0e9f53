"""The floor: a bare grpc.aio server that serves only the standard health service, with no
interceptors and no logging, in a process of its own.

Driven by the same load workers as the authority, its health Check is the least server
CPU a Python gRPC call can cost on this machine; the authority's calls are measured
against it (bench/run.py). It runs on uvloop, the loop ``authority serve`` runs on
(authority/api/loops.py), since on this machine uvloop makes even a bare server cheaper:
the floor is the least a call can cost, so the authority's choice of loop never lowers the
bar it is measured against. The same server on asyncio's own loop is reported beside it.

Given a :class:`Verifying`, the server also answers ValidateToken with nothing but a
``TokenVerifier.verify`` of the token and a fixed answer: the cold validation's floor
measured in one server, under the load, where the model floor adds a verify timed in a
tight loop to the bare call (bench/floor.py says why the two differ).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
from typing import Any


@dataclasses.dataclass(frozen=True)
class Verifying:
    """What the bare server verifies tokens with: the authority's published keys and its
    issuer, audience and leeway."""

    jwks_json: str
    issuer: str
    audience: str
    leeway: int


def _add_verifier(server: Any, verifying: Verifying) -> None:
    from authority_client.v1 import authority_pb2, authority_pb2_grpc
    from authority_client.verify import InvalidToken, KeySet, TokenVerifier

    verify = TokenVerifier(KeySet.from_jwks(verifying.jwks_json), issuer=verifying.issuer,
                           leeway=verifying.leeway).verify
    audience = verifying.audience
    valid = authority_pb2.ValidateTokenResponse(valid=True)
    invalid = authority_pb2.ValidateTokenResponse(valid=False)

    class Servicer(authority_pb2_grpc.TokenAuthorityServicer):
        async def ValidateToken(self, request: Any, context: Any) -> Any:
            try:
                verify(request.token, audience)
            except InvalidToken:
                return invalid
            return valid

    authority_pb2_grpc.add_TokenAuthorityServicer_to_server(Servicer(), server)


async def _serve(ports: Any, verifying: Verifying | None) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if verifying is not None:
        _add_verifier(server, verifying)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ports.put(port)
    await server.wait_for_termination()


def _main(ports: Any, uvloop: bool, verifying: Verifying | None) -> None:
    # No logging at all: not even a warning may cost the floor a write.
    logging.disable(logging.CRITICAL)
    factory = None
    if uvloop:
        import uvloop as module

        factory = module.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(ports, verifying))


class BareServer:
    """The bare health server in a process of its own: on uvloop, or asyncio's loop when not
    ``uvloop``; with ``verifying``, answering ValidateToken by a bare verify too."""

    def __init__(self, uvloop: bool = True, verifying: Verifying | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self._process = context.Process(target=_main, args=(ports, uvloop, verifying), daemon=True)
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
