"""Every RPC's end, seen once: it is counted, timed and logged.

:class:`Observer` wraps a method's handler itself (not just the lookup), so it sees the
final status of every call, unary or streaming: OK, a status set by ``context.abort``
(every domain error becomes one in :mod:`authority.api.status`), UNKNOWN for an
exception that escaped, CANCELLED when the caller went away. The time runs from the
handler's start to that status; for a stream, to its end.

Where it wraps pays on every call. A grpc.aio interceptor runs a coroutine, builds
closures and a new handler for each call; so the server wraps each method's handler
once, where its services are registered (:meth:`Observer.registrar`), and the common
call pays one wrapper. Only when another interceptor must run first inside the
observation (caller authentication, whose refusals are counted and logged like any
status) does the observer run as an interceptor itself (:class:`RpcObserver`).

What a call records is queued, not applied: its status count and latency go to the
metrics' :class:`~authority.ops.tally.Tally`, applied in batches and before every
scrape, and its log line is made with the others when they are written together
(:mod:`authority.ops.logs`).

Token checks (ValidateToken, ext_authz Check) may be sampled in the log: with
``log_sample_validate`` N above 1 one OK line in N is written. Every other status is
always written, and the metrics count every call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc

from authority.ops.logs import RpcLine, rpc_log
from authority.ops.metrics import Metrics
from authority.ops.tally import Apply

Context = grpc.aio.ServicerContext[Any, Any]
# Strings: grpc's classes are generic only in its type stubs.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Wrap: TypeAlias = Callable[[str, Handler], Handler]

_OK = grpc.StatusCode.OK.name
_INFO = logging.INFO
_CODE_NAMES: dict[Any, str] = {code: code.name for code in grpc.StatusCode}
# grpc.aio reports a code set by abort() as the C core's integer.
_CODE_NAMES.update({code.value[0]: code.name for code in grpc.StatusCode})
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
# The token checks whose OK lines log_sample_validate thins out.
SAMPLED_METHODS = frozenset({"authority.v1.TokenAuthority/ValidateToken", "envoy.service.auth.v3.Authorization/Check"})


def _final_code(context: Context, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # older grpc.aio: no code() on the context
        return default
    if code is None:
        return default
    return _CODE_NAMES.get(code, default)


def _names_subject(handler: Handler) -> bool:
    """Whether the method's request message has a ``subject`` field (logged as a hash)."""
    if handler.request_streaming:
        return False
    deserialize = handler.request_deserializer
    # A generated message's FromString is bound to its class, which has the descriptor;
    # a wrapped deserializer (status.tolerate_undecodable) keeps the original as __wrapped__.
    original = getattr(deserialize, "__wrapped__", deserialize)
    descriptor = getattr(getattr(original, "__self__", None), "DESCRIPTOR", None)
    return descriptor is not None and "subject" in descriptor.fields_by_name


class _Method:
    """One method's pre-bound series and log line: a call costs dict lookups and queued
    updates (applied in batches, :mod:`authority.ops.tally`), no labels."""

    def __init__(self, metrics: Metrics, method: str, sample: int) -> None:
        self._metrics = metrics
        self._method = method
        self._tally = metrics.tally
        # A status code's counter child, as the bound ``inc`` the tally applies.
        self._calls: dict[str, Apply] = {}
        self._latency: Apply = metrics.rpc_seconds.labels(method).observe
        self._line = RpcLine(method)
        self._sample = sample
        self._unsampled = 0

    def record(self, code: str, started: float, peer: Callable[[], str] | str, subject: str) -> None:
        elapsed = time.perf_counter() - started
        calls = self._calls.get(code)
        if calls is None:
            calls = self._calls[code] = self._metrics.rpcs.labels(self._method, code).inc
        add = self._tally.add
        add(calls, 1)
        add(self._latency, elapsed)
        if not rpc_log.isEnabledFor(_INFO):
            return
        if self._sample > 1 and code == _OK:
            self._unsampled += 1
            if self._unsampled < self._sample:
                return
            self._unsampled = 0
        self._line.write(code, elapsed * 1000, peer if isinstance(peer, str) else peer(), subject)


class Observer:
    """Counts each RPC by method and final status code, records its latency, and writes
    its log line (when INFO is on for ``authority.rpc``)."""

    def __init__(self, metrics: Metrics, log_sample_validate: int = 1) -> None:
        self._metrics = metrics
        self._sample = max(1, log_sample_validate)
        self._methods: dict[str, _Method] = {}

    def _method(self, method: str) -> _Method:
        found = self._methods.get(method)
        if found is None:
            sample = self._sample if method in SAMPLED_METHODS else 1
            found = self._methods[method] = _Method(self._metrics, method, sample)
        return found

    def wrap(self, method: str, handler: Handler) -> Handler:
        """``handler`` of ``method`` (``package.Service/Method``), observed."""
        kind = next(k for k in _KINDS if getattr(handler, k) is not None)
        behavior = getattr(handler, kind)
        record = self._method(method).record
        names_subject = _names_subject(handler)

        if inspect.isasyncgenfunction(behavior):

            async def observed_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                started = time.perf_counter()
                # Read now: a stream's generator may be closed after the call is gone, and
                # touching its context then crashes the process (grpc's C core).
                peer = context.peer()
                code = _OK
                try:
                    async for response in behavior(request, context):
                        yield response
                except grpc.aio.AbortError:
                    code = _final_code(context, "UNKNOWN")
                    raise
                except (asyncio.CancelledError, GeneratorExit):
                    code = "CANCELLED"
                    raise
                except Exception:
                    code = "UNKNOWN"
                    raise
                finally:
                    if code == _OK:
                        code = _final_code(context, _OK)
                    record(code, started, peer, _subject(request) if names_subject else "")

            wrapped: Any = observed_stream
        else:

            async def observed_call(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                code = _OK
                try:
                    return await behavior(request, context)
                except grpc.aio.AbortError:
                    code = _final_code(context, "UNKNOWN")
                    raise
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception:
                    code = "UNKNOWN"
                    raise
                finally:
                    if code == _OK:
                        code = _final_code(context, _OK)
                    # A unary call is still alive here: its peer is read only if a line is written.
                    record(code, started, context.peer, _subject(request) if names_subject else "")

            wrapped = observed_call
        return handler._replace(**{kind: wrapped})  # type: ignore[attr-defined, no-any-return]

    def registrar(self, server: grpc.aio.Server, *inner: Wrap, observe: bool = True) -> Registrar:
        """Stands in for ``server`` where services are added (``add_*_to_server``): each
        method's handler is wrapped once, by ``inner`` innermost first, then observed
        (unless ``observe`` is false: an :class:`RpcObserver` interceptor does it)."""
        wraps: list[Wrap] = [*inner, self.wrap] if observe else [*inner]
        return Registrar(server, wraps)


def _subject(request: Any) -> str:
    subject = getattr(request, "subject", "")
    return subject if isinstance(subject, str) else ""


class Registrar:
    """The part of a grpc.aio server that services are added through, wrapping each
    method's handler once, at registration."""

    def __init__(self, server: grpc.aio.Server, wraps: Sequence[Wrap]) -> None:
        self._server = server
        self._wraps = tuple(wraps)

    def _wrapped(self, method: str, handler: Handler) -> Handler:
        for wrap in self._wraps:
            handler = wrap(method, handler)
        return handler

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Adds ``handlers``, each one's methods wrapped the first time they are looked up."""
        self._server.add_generic_rpc_handlers([_WrappedGeneric(handler, self._wrapped) for handler in handlers])

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Handler]) -> None:
        """Adds pre-registered methods (grpc prefers them to generic ones), wrapped now."""
        self._server.add_registered_method_handlers(service_name, {
            name: self._wrapped(f"{service_name}/{name}", handler) for name, handler in method_handlers.items()
        })


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose method handlers are wrapped once each, then reused."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        # Only methods the inner handler knows are kept: the cache stays as small as the service.
        self._cache: dict[str, tuple[Handler, Handler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._cache[method] = (handler, self._wrap(method.lstrip("/"), handler))
        return cached[1]


class RpcObserver(grpc.aio.ServerInterceptor):
    """The :class:`Observer` as the first interceptor, for a server whose other
    interceptors (caller authentication) must run inside the observation."""

    def __init__(self, metrics: Metrics | Observer, log_sample_validate: int = 1) -> None:
        self._observer = metrics if isinstance(metrics, Observer) else Observer(metrics, log_sample_validate)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._observer.wrap(handler_call_details.method.lstrip("/"), handler)
