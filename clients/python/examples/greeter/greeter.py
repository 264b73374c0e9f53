"""A tiny consumer service: it greets whoever the token says is calling.

No proto: the methods are generic handlers with UTF-8 text in and out, so the example
needs nothing but grpcio and the client package. ``SayHello`` needs a token for the
audience ``greeter``; ``Ping`` needs none. The same handlers are served by a grpc
server (:func:`create_server`) and a grpc.aio one (:func:`create_aio_server`), each
behind the authority client's interceptor.
"""

from __future__ import annotations

from concurrent import futures
from typing import Any

import grpc

from authority_client import (
    AccessRules,
    AsyncAuthInterceptor,
    AsyncValidator,
    AuthInterceptor,
    Validator,
    current_claims,
)

SERVICE = "greeter.v1.Greeter"
SAY_HELLO = f"/{SERVICE}/SayHello"
PING = f"/{SERVICE}/Ping"
AUDIENCE = "greeter"
RULES = AccessRules.of(AUDIENCE, public={PING})


def _encode(text: str | bytes) -> bytes:
    # grpc.aio encodes a str response to UTF-8 itself before calling the serializer.
    return text if isinstance(text, bytes) else text.encode()


def _greeting(name: str) -> str:
    claims = current_claims()
    return f"hello {name}, you are {claims.subject} on {claims.device_id}"


def _pong() -> str:
    try:
        return f"pong for {current_claims().subject}"
    except LookupError:  # Ping is public: nobody has been checked
        return "pong"


def _handlers(say_hello: Any, ping: Any) -> grpc.GenericRpcHandler:
    def text_method(behavior: Any) -> grpc.RpcMethodHandler[str, str]:
        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=bytes.decode, response_serializer=_encode
        )

    return grpc.method_handlers_generic_handler(
        SERVICE, {"SayHello": text_method(say_hello), "Ping": text_method(ping)}
    )


def create_server(validator: Validator, address: str = "127.0.0.1:0") -> tuple[grpc.Server, int]:
    """A started grpc greeter that admits only callers ``validator`` accepts."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[AuthInterceptor(validator, RULES)])
    server.add_generic_rpc_handlers(
        (_handlers(lambda name, context: _greeting(name), lambda request, context: _pong()),)
    )
    port = server.add_insecure_port(address)
    server.start()
    return server, port


async def create_aio_server(validator: AsyncValidator, address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio greeter that admits only callers ``validator`` accepts."""

    async def say_hello(name: str, context: grpc.aio.ServicerContext[str, str]) -> str:
        return _greeting(name)

    async def ping(request: str, context: grpc.aio.ServicerContext[str, str]) -> str:
        return _pong()

    server = grpc.aio.server(interceptors=[AsyncAuthInterceptor(validator, RULES)])
    server.add_generic_rpc_handlers((_handlers(say_hello, ping),))
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


def say_hello(channel: grpc.Channel, name: str, token: str | None = None, timeout: float = 5.0) -> str:
    """Calls SayHello; with ``token`` it is sent as the bearer token."""
    call = channel.unary_unary(SAY_HELLO, request_serializer=_encode, response_deserializer=bytes.decode)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    return str(call(name, timeout=timeout, metadata=metadata))


def ping(channel: grpc.Channel, token: str | None = None, timeout: float = 5.0) -> str:
    """Calls the public Ping."""
    call = channel.unary_unary(PING, request_serializer=_encode, response_deserializer=bytes.decode)
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    return str(call("", timeout=timeout, metadata=metadata))
