"""Server interceptors that let a call reach its handler only with a valid token: a bearer
token, or a device-bound one with its proof (``authorization: DPoP <token>`` and one
``dpop`` metadata value, RFC 9449).

:class:`AuthInterceptor` is for ``grpc.server`` and :class:`AsyncAuthInterceptor` for
``grpc.aio.server``; both follow :class:`~authority_client.access.Gate`. A refused call is
aborted with UNAUTHENTICATED (or UNAVAILABLE when the token cannot be checked) before the
handler runs, with the reason name in the ``x-token-invalid-reason`` trailing metadata.
An accepted call's claims are readable in the handler through
:func:`authority_client.current_claims`.

Device-bound tokens need ``AccessRules(external_authority="orders.example.com")``: the
name clients dial, which their proofs name in ``htu``
(``https://orders.example.com/<package.Service>/<Method>``, ``htm`` ``POST``). grpcio does
not show the server the ``:authority`` a call was made to, so it cannot be read from the
call. Without it every device-bound token is refused (BAD_PROOF with a proof,
PROOF_REQUIRED without), and the first such call logs one warning; bearer tokens work
as before. See :mod:`authority_client.access` for every rule.

The check runs inside the wrapped handler, not in ``intercept_service``: a grpc server
calls interceptors on its polling thread, where a remote check would stall every call,
and the claims must be set in the context the handler actually runs in (a pool thread
for grpc, the call's task for grpc.aio). They are reset when the handler returns, so a
pool thread never carries one caller's claims into the next call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from authority_client.access import AccessRules, Check, Gate, Refusal
from authority_client.context import reset_claims, set_claims
from authority_client.validation import AsyncValidator, Validator

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
_FACTORIES: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _rewrap(handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[Callable[..., Any], bool], Callable[..., Any]]) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behavior wrapped (``wrap(behavior, streams_responses)``)."""
    for kind in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            return _FACTORIES[kind](
                wrap(behavior, kind.endswith("_stream")),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires a valid token (bearer, or DPoP with its proof) on every non-public call of a grpc server."""

    def __init__(self, validator: Validator, rules: AccessRules = AccessRules()) -> None:
        self._validator = validator
        self._gate = Gate(rules)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        check = self._gate.check_for(method, metadata)
        if check is None:
            return handler
        return _rewrap(handler, lambda behavior, streams: self._guard(behavior, streams, check))

    def _admit(self, check: Check | Refusal, context: grpc.ServicerContext) -> Any:
        if isinstance(check, Check):
            try:
                return set_claims(self._validator.validate(check.token, check.audience, check.proof))
            except Exception as error:
                check = self._gate.refusal(error)
        context.set_trailing_metadata(check.trailing_metadata)
        context.abort(check.code, check.message)

    def _guard(self, behavior: Callable[..., Any], streams: bool, check: Check | Refusal) -> Callable[..., Any]:
        if streams:

            def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                reset = self._admit(check, context)
                try:
                    yield from behavior(request, context)
                finally:
                    reset_claims(reset)

            return guarded_stream

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            reset = self._admit(check, context)
            try:
                return behavior(request, context)
            finally:
                reset_claims(reset)

        return guarded


class AsyncAuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a valid token (bearer, or DPoP with its proof) on every non-public call of a grpc.aio server."""

    def __init__(self, validator: AsyncValidator, rules: AccessRules = AccessRules()) -> None:
        self._validator = validator
        self._gate = Gate(rules)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        check = self._gate.check_for(method, metadata)
        if check is None:
            return handler
        return _rewrap(handler, lambda behavior, streams: self._guard(behavior, streams, check))

    async def _admit(self, check: Check | Refusal, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(check, Check):
            try:
                return set_claims(await self._validator.validate(check.token, check.audience, check.proof))
            except Exception as error:
                check = self._gate.refusal(error)
        await context.abort(check.code, check.message, trailing_metadata=check.trailing_metadata)

    def _guard(self, behavior: Callable[..., Any], streams: bool, check: Check | Refusal) -> Callable[..., Any]:
        if streams and inspect.isasyncgenfunction(behavior):

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                reset = await self._admit(check, context)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    reset_claims(reset)

            return guarded_stream

        # Coroutines (and streaming handlers that write through the context).
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            reset = await self._admit(check, context)
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                reset_claims(reset)

        return guarded
