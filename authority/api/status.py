"""The one map from domain errors to gRPC status codes, applied to every RPC handler.

A domain error becomes its status with the error's own message, which never holds a
secret. Anything else is a bug: the traceback is logged here, on the server, and the
caller gets INTERNAL with a fixed message.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from authority.api.inputs import check_request
from authority.api.wire import non_utf8_field

from authority.errors import (
    AuthorityError,
    CallerNotPermitted,
    CallerUnauthenticated,
    InvalidArgument,
    RefreshTokenRejected,
    SessionLimitReached,
    SignInAborted,
    StoreUnavailable,
    SequenceUnknown,
    TokenRejected,
    ValueOutOfRange,
    WatcherTooSlow,
)

log = logging.getLogger(__name__)

CODES: dict[type[AuthorityError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ValueOutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    TokenRejected: grpc.StatusCode.INVALID_ARGUMENT,
    SessionLimitReached: grpc.StatusCode.FAILED_PRECONDITION,
    SignInAborted: grpc.StatusCode.ABORTED,
    RefreshTokenRejected: grpc.StatusCode.UNAUTHENTICATED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    WatcherTooSlow: grpc.StatusCode.RESOURCE_EXHAUSTED,
    SequenceUnknown: grpc.StatusCode.OUT_OF_RANGE,
    CallerUnauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    CallerNotPermitted: grpc.StatusCode.PERMISSION_DENIED,
}
INTERNAL_MESSAGE = "internal error"
UNDECODABLE_MESSAGE = "the request is not a valid protobuf message for this method"

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response")
Servicer = TypeVar("Servicer")


def status_of(error: AuthorityError) -> grpc.StatusCode:
    """The status code for a domain error (its nearest mapped class)."""
    for kind in type(error).__mro__:
        if kind in CODES:
            return CODES[kind]
    return grpc.StatusCode.INTERNAL


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception, method: str) -> None:
    if isinstance(error, AuthorityError):
        code = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.error("%s: unmapped domain error %s", method, type(error).__name__)
            await context.abort(code, INTERNAL_MESSAGE)
        await context.abort(code, str(error))
    log.error("%s failed", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


# Set on every handler :func:`unary` made: what it raises is already a status.
_MAPS_ERRORS = "__maps_errors_to_status__"


def maps_errors(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` (a function or a bound method) is one :func:`unary` made."""
    return getattr(handler, _MAPS_ERRORS, False) is True


def unary(
    handler: Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]],
) -> Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], Awaitable[Response]]:
    """Maps what a unary handler raises to a status."""

    @functools.wraps(handler)
    async def wrapper(self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Response:
        try:
            check_request(request)
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error, handler.__name__)
            raise AssertionError("unreachable: abort raises") from error

    setattr(wrapper, _MAPS_ERRORS, True)
    return wrapper


def streaming(
    handler: Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]],
) -> Callable[[Servicer, Request, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Response]]:
    """Maps what a server-streaming handler raises to a status."""

    @functools.wraps(handler)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Response]:
        try:
            check_request(request)
            async for response in handler(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error, handler.__name__)

    return wrapper


class _Undecodable:
    """Stands in for a request whose bytes did not decode, and says why."""

    def __init__(self, descriptor: Any, data: bytes) -> None:
        field = non_utf8_field(descriptor, data) if descriptor is not None else None
        self.message = UNDECODABLE_MESSAGE if field is None else f"{field}: must be valid UTF-8"


def tolerate_undecodable(method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` (of ``method``) answering INVALID_ARGUMENT to a request that is not valid
    protobuf, where grpc itself would answer UNKNOWN with the parser's error text; a string
    field that is not UTF-8 is named (``subject: must be valid UTF-8``). Wraps once, at
    registration (:meth:`authority.api.observe.Observer.registrar`)."""
    if handler.request_deserializer is None or handler.request_streaming:
        return handler
    deserialize = handler.request_deserializer
    # A generated message's FromString is bound to its class, which has the descriptor.
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _Undecodable(descriptor, data)

    tolerant.__wrapped__ = deserialize  # type: ignore[attr-defined]
    kind = "unary_stream" if handler.response_streaming else "unary_unary"
    behavior = getattr(handler, kind)
    if inspect.isasyncgenfunction(behavior):

        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for response in behavior(request, context):
                yield response

        guarded: Any = guarded_stream
    else:

        async def guarded_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, _Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await behavior(request, context)

        guarded = guarded_call
    return handler._replace(request_deserializer=tolerant, **{kind: guarded})  # type: ignore[attr-defined, no-any-return]

