"""Client interceptors that attach ``authorization: Bearer <token>`` to every call.

The token comes from a callable asked on each call, so a caller that refreshes its
token just returns the new one. :class:`BearerToken` is for grpc channels
(``grpc.intercept_channel(channel, BearerToken(get_token))``) and
:class:`AsyncBearerToken` for grpc.aio ones (``grpc.aio.insecure_channel(target,
interceptors=[AsyncBearerToken(get_token)])``), where the callable may be async.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from authority_client.access import AUTHORIZATION_HEADER


def _with_token(metadata: Any, token: str) -> list[tuple[str, Any]]:
    kept = [(key, value) for key, value in (metadata or ()) if key.lower() != AUTHORIZATION_HEADER]
    return [*kept, (AUTHORIZATION_HEADER, f"Bearer {token}")]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends ``token()`` as the bearer token of every call on a grpc channel."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._token()),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


class AsyncBearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Sends ``token()`` (a plain or an async callable) as the bearer token on a grpc.aio channel."""

    def __init__(self, token: Callable[[], str] | Callable[[], Awaitable[str]]) -> None:
        self._token = token

    async def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        assert isinstance(token, str)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, token)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)
