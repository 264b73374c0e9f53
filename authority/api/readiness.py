"""The services of a server that is bound before its authority is open.

The server binds its port first, so that a busy port is refused before the database is
touched, and answers health checks NOT_SERVING while the store is opened and the keys
and revocations load. Meanwhile a :class:`ServiceWhenReady` stands in for each servicer
(TokenAuthority, Envoy's Authorization) and answers every call UNAVAILABLE; once
:meth:`ServiceWhenReady.attach` hands it the real servicer, calls go through to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from authority_client.v1 import authority_pb2
from google.protobuf.descriptor import ServiceDescriptor

from authority.api.status import maps_errors, streaming, unary
from authority.errors import StoreUnavailable

Context = grpc.aio.ServicerContext[Any, Any]
SERVICE = authority_pb2.DESCRIPTOR.services_by_name["TokenAuthority"]
STARTING = "the authority is starting: its store is being opened; try again"


class ServiceWhenReady:
    """Every method of one service (TokenAuthority unless told), answering UNAVAILABLE
    until :meth:`attach`."""

    def __init__(self, service: ServiceDescriptor = SERVICE) -> None:
        self._service: Any = None
        # The servicer's unary handlers by name, once attached: a call is a dict lookup.
        self._unary: dict[str, Callable[[Any, Context], Awaitable[Any]]] = {}
        self._unary_names = [method.name for method in service.methods if not method.server_streaming]
        for method in service.methods:
            forward = _streaming(method.name) if method.server_streaming else _unary(method.name)
            setattr(self, method.name, forward.__get__(self))

    def attach(self, service: Any) -> None:
        """From now on every call goes to ``service``, the real servicer, whose unary
        handlers must map their own errors to a status (:func:`authority.api.status.unary`):
        a unary call is handed straight to them."""
        handlers = {name: getattr(service, name) for name in self._unary_names}
        unmapped = sorted(name for name, handler in handlers.items() if not maps_errors(handler))
        if unmapped:
            raise TypeError(f"{type(service).__name__}: not made by status.unary: {', '.join(unmapped)}")
        self._service = service
        self._unary = handlers

    def ready(self) -> Any:
        """The servicer; raises :class:`StoreUnavailable` while the authority is starting."""
        if self._service is None:
            raise StoreUnavailable(STARTING)
        return self._service


def _unary(name: str) -> Callable[[ServiceWhenReady, Any, Context], Awaitable[Any]]:
    async def starting(self: ServiceWhenReady, request: Any, context: Context) -> Any:
        return await getattr(self.ready(), name)(request, context)

    starting.__name__ = name
    # Until attached: the input rule, then UNAVAILABLE, each a status (status.unary).
    before_attach = unary(starting)

    async def forward(self: ServiceWhenReady, request: Any, context: Context) -> Any:
        handler = self._unary.get(name)
        if handler is None:
            return await before_attach(self, request, context)
        # Maps its own errors (attach checked): one wrapper per call, not two.
        return await handler(request, context)

    forward.__name__ = name
    return forward


def _streaming(name: str) -> Callable[[ServiceWhenReady, Any, Context], AsyncIterator[Any]]:
    async def forward(self: ServiceWhenReady, request: Any, context: Context) -> AsyncIterator[Any]:
        async for response in getattr(self.ready(), name)(request, context):
            yield response

    forward.__name__ = name
    return streaming(forward)
