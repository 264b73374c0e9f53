"""Every kind of handler behind both server interceptors: the check runs before the
handler, and the claims are there for as long as the handler runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from authority_client import (
    AccessRules,
    AsyncAuthInterceptor,
    AsyncAuthorityClient,
    AsyncValidator,
    AuthInterceptor,
    AuthorityClient,
    Mode,
    ValidationSettings,
    Validator,
    current_claims,
)
from conftest import FLAVOURS, _Loop

from authority.testing import InProcessAuthority

SERVICE = "kinds.v1.Kinds"
RULES = AccessRules.of("token-authority")


def _encode(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def _handlers(behaviors: dict[str, Any]) -> grpc.GenericRpcHandler:
    make = {
        "UnaryStream": grpc.unary_stream_rpc_method_handler,
        "StreamUnary": grpc.stream_unary_rpc_method_handler,
        "StreamStream": grpc.stream_stream_rpc_method_handler,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: make[name](behavior, request_deserializer=bytes.decode, response_serializer=_encode)
            for name, behavior in behaviors.items()
        },
    )


def _sync_behaviors() -> dict[str, Any]:
    def unary_stream(request: str, context: Any) -> Iterator[str]:
        for _ in range(3):
            yield current_claims().subject

    def stream_unary(requests: Iterator[str], context: Any) -> str:
        return current_claims().subject + ":" + ",".join(requests)

    def stream_stream(requests: Iterator[str], context: Any) -> Iterator[str]:
        for request in requests:
            yield f"{current_claims().subject}:{request}"

    return {"UnaryStream": unary_stream, "StreamUnary": stream_unary, "StreamStream": stream_stream}


def _async_behaviors() -> dict[str, Any]:
    async def unary_stream(request: str, context: Any) -> AsyncIterator[str]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield current_claims().subject

    async def stream_unary(requests: AsyncIterator[str], context: Any) -> str:
        return current_claims().subject + ":" + ",".join([r async for r in requests])

    async def stream_stream(requests: AsyncIterator[str], context: Any) -> None:
        # The other streaming style: writes through the context.
        async for request in requests:
            await context.write(f"{current_claims().subject}:{request}")

    return {"UnaryStream": unary_stream, "StreamUnary": stream_unary, "StreamStream": stream_stream}


@pytest.fixture(params=FLAVOURS)
def kinds_target(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[str]:
    settings = ValidationSettings(mode=Mode.REMOTE)
    if request.param == "grpc":
        client = AuthorityClient(authority.target)
        validator = Validator(client, settings).start()
        server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[AuthInterceptor(validator, RULES)])
        server.add_generic_rpc_handlers((_handlers(_sync_behaviors()),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        yield f"127.0.0.1:{port}"
        server.stop(None)
        validator.close()
        client.close()
        return
    loop = _Loop()

    async def start() -> tuple[grpc.aio.Server, AsyncAuthorityClient, int]:
        aclient = AsyncAuthorityClient(authority.target)
        avalidator = await AsyncValidator(aclient, settings).start()
        aserver = grpc.aio.server(interceptors=[AsyncAuthInterceptor(avalidator, RULES)])
        aserver.add_generic_rpc_handlers((_handlers(_async_behaviors()),))
        aport = aserver.add_insecure_port("127.0.0.1:0")
        await aserver.start()
        return aserver, aclient, aport

    aserver, aclient, port = loop.run(start())
    yield f"127.0.0.1:{port}"

    async def stop() -> None:
        await aserver.stop(None)
        await aclient.close()

    loop.run(stop())
    loop.close()


def _call(channel: grpc.Channel, method: str, token: str | None) -> Any:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    path = f"/{SERVICE}/{method}"
    if method == "UnaryStream":
        return list(channel.unary_stream(path, _encode, bytes.decode)("x", metadata=metadata, timeout=5))
    if method == "StreamUnary":
        return channel.stream_unary(path, _encode, bytes.decode)(iter(["a", "b"]), metadata=metadata, timeout=5)
    return list(channel.stream_stream(path, _encode, bytes.decode)(iter(["a", "b"]), metadata=metadata, timeout=5))


def test_every_handler_kind_sees_the_caller(authority: InProcessAuthority, kinds_target: str) -> None:
    token = authority.sign_in("alice", "laptop").access_token
    with grpc.insecure_channel(kinds_target) as channel:
        assert _call(channel, "UnaryStream", token) == ["alice"] * 3
        assert _call(channel, "StreamUnary", token) == "alice:a,b"
        assert _call(channel, "StreamStream", token) == ["alice:a", "alice:b"]


@pytest.mark.parametrize("method", ["UnaryStream", "StreamUnary", "StreamStream"])
def test_every_handler_kind_is_refused_without_a_token(kinds_target: str, method: str) -> None:
    with grpc.insecure_channel(kinds_target) as channel, pytest.raises(grpc.RpcError) as refused:
        _call(channel, method, None)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert ("x-token-invalid-reason", "MISSING") in refused.value.trailing_metadata()  # type: ignore[attr-defined]




def test_two_authorization_entries_are_refused_not_the_first_believed(
    authority: InProcessAuthority, kinds_target: str
) -> None:
    token = authority.sign_in("alice", "laptop").access_token
    metadata = (("authorization", f"Bearer {token}"), ("authorization", "Bearer forged"))
    with grpc.insecure_channel(kinds_target) as channel, pytest.raises(grpc.RpcError) as refused:
        list(channel.unary_stream(f"/{SERVICE}/UnaryStream", _encode, bytes.decode)("x", metadata=metadata, timeout=5))
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert ("x-token-invalid-reason", "MISSING") in refused.value.trailing_metadata()  # type: ignore[attr-defined]
