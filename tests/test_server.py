"""The server around the service: health, reflection, keys and revocations across restarts."""

from __future__ import annotations

import asyncio
import json
import socket

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authority.config import Algorithm
from authority.errors import ConfigError
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, reason, sign_in


async def test_health_reports_serving_for_the_server_and_the_service(authority: Running) -> None:
    health = health_pb2_grpc.HealthStub(authority.channel)

    for service in ("", "authority.v1.TokenAuthority"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_authority_health_and_reflection(authority: Running) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(authority.channel)

    async def ask() -> list[str]:
        async for answer in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
            return [service.name for service in answer.list_services_response.service]
        return []

    services = await ask()

    assert "authority.v1.TokenAuthority" in services
    assert "grpc.health.v1.Health" in services


async def test_keys_and_revocations_survive_a_restart(start_server: StartServer) -> None:
    first = await start_server()
    subject = new_subject()
    laptop = await sign_in(first.stub, subject, "laptop")
    phone = await sign_in(first.stub, subject, "phone")
    jwks = json.loads((await first.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json)
    await first.server.stop(None)

    second = await start_server()

    assert await reason(second.stub, laptop.access_token) == "REVOKED"
    assert await reason(second.stub, phone.access_token) == "VALID"
    assert json.loads((await second.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json) == jwks


async def test_servers_starting_together_on_an_empty_database_share_one_key(start_server: StartServer) -> None:
    servers = await asyncio.gather(*(start_server() for _ in range(3)))

    kids = set()
    for running in servers:
        jwks = json.loads((await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json)
        kids.update(key["kid"] for key in jwks["keys"])
    signed_in = await sign_in(servers[0].stub, new_subject(), "laptop")

    assert len(kids) == 1
    assert [await reason(s.stub, signed_in.access_token) for s in servers] == ["VALID"] * 3


async def test_a_second_signing_algorithm_keeps_tokens_of_the_first_verifiable(start_server: StartServer) -> None:
    first = await start_server()
    old = await sign_in(first.stub, new_subject(), "laptop")
    await first.server.stop(None)

    second = await start_server(signing_algorithm=Algorithm.ES256)
    new = await sign_in(second.stub, new_subject(), "laptop")

    jwks = json.loads((await second.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json)
    assert sorted(key["alg"] for key in jwks["keys"]) == ["ES256", "EdDSA"]
    assert await reason(second.stub, old.access_token) == "VALID"
    assert await reason(second.stub, new.access_token) == "VALID"


async def test_a_taken_port_stops_the_server_with_a_message_naming_listen(start_server: StartServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ConfigError, match="^listen:"):
            await start_server(listen=f"127.0.0.1:{port}")


async def test_a_stopped_server_refuses_new_calls(start_server: StartServer) -> None:
    running = await start_server()
    health = health_pb2_grpc.HealthStub(running.channel)

    await running.server.stop(None)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
