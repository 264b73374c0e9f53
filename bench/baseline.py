"""The design the authority replaces, built here as a baseline: on every ValidateToken,
verify the JWT with PyJWT, then look its ``jti`` up in a revoked-token table on
PostgreSQL (asyncpg, a pool of 10).

It serves the same ``authority.v1.TokenAuthority`` contract (ValidateToken only) and
the standard health service, in a process of its own, so the same load workers drive
it the same way.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

REVOKED_TABLE = "bench_revoked_tokens"


async def create_revoked_table(dsn: str, rows: int) -> None:
    """The baseline's table of revoked token ids, with ``rows`` entries in it."""
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(f"CREATE TABLE {REVOKED_TABLE} (jti text PRIMARY KEY, expires_at double precision)")
        await connection.execute(
            f"INSERT INTO {REVOKED_TABLE} SELECT md5(g::text), extract(epoch from now()) + 3600 "
            "FROM generate_series(1, $1::int) AS g",
            rows,
        )
        await connection.execute(f"ANALYZE {REVOKED_TABLE}")
    finally:
        await connection.close()


async def _serve(dsn: str, public_pem: bytes, algorithm: str, issuer: str, audience: str, ports: Any) -> None:
    import asyncpg
    import grpc
    import jwt
    from authority_client.v1 import authority_pb2 as pb
    from authority_client.v1 import authority_pb2_grpc
    from cryptography.hazmat.primitives import serialization
    from google.protobuf.timestamp_pb2 import Timestamp
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    public_key = serialization.load_pem_public_key(public_pem)
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    query = f"SELECT 1 FROM {REVOKED_TABLE} WHERE jti = $1"

    class Baseline(authority_pb2_grpc.TokenAuthorityServicer):
        async def ValidateToken(self, request: Any, context: Any) -> Any:
            try:
                claims = jwt.decode(
                    request.token, public_key, algorithms=[algorithm], audience=audience, issuer=issuer,  # type: ignore[arg-type]
                    options={"require": ["exp", "iat", "jti", "sub", "iss", "aud"]},
                )
            except jwt.PyJWTError:
                return pb.ValidateTokenResponse(valid=False, reason=pb.INVALID_REASON_MALFORMED)
            if await pool.fetchval(query, claims["jti"]) is not None:
                return pb.ValidateTokenResponse(valid=False, reason=pb.INVALID_REASON_REVOKED)
            return pb.ValidateTokenResponse(
                valid=True,
                claims=pb.Claims(
                    subject=claims["sub"], device_id=claims.get("device_id", ""), session_id=claims.get("sid", ""),
                    token_id=claims["jti"], issuer=claims["iss"], audience=claims["aud"],
                    issued_at=Timestamp(seconds=claims["iat"]), expires_at=Timestamp(seconds=claims["exp"]),
                ),
            )

    server = grpc.aio.server()
    authority_pb2_grpc.add_TokenAuthorityServicer_to_server(Baseline(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    ports.put(port)
    await server.wait_for_termination()


def _main(dsn: str, public_pem: bytes, algorithm: str, issuer: str, audience: str, ports: Any) -> None:
    # On uvloop, as the authority and the floor: the loop is no part of what it is compared on.
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(dsn, public_pem, algorithm, issuer, audience, ports))


class BaselineServer:
    """The baseline in a process of its own."""

    def __init__(self, dsn: str, public_pem: bytes, algorithm: str, issuer: str, audience: str) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self._process = context.Process(
            target=_main, args=(dsn, public_pem, algorithm, issuer, audience, ports), daemon=True
        )
        self._process.start()
        self.target = f"127.0.0.1:{ports.get(timeout=60)}"

    @property
    def pid(self) -> int:
        """The baseline server's process id."""
        return int(self._process.pid or 0)

    def stop(self) -> None:
        """Ends the process."""
        self._process.terminate()
        self._process.join(timeout=10)
