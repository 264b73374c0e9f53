"""A server interceptor that sees every RPC end: it counts it, times it and logs it.

It wraps the handler itself (not just the lookup), so it sees the final status of
every call, unary or streaming: OK, a status set by ``context.abort`` (every domain
error becomes one in :mod:`authority.api.status`), UNKNOWN for an exception that escaped,
CANCELLED when the caller went away. The time runs from the handler's start to that
status; for a stream, to its end.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from authority.ops.logs import log_rpc, rpc_log
from authority.ops.metrics import Metrics

Context = grpc.aio.ServicerContext[Any, Any]

_OK = grpc.StatusCode.OK.name
_CODE_NAMES: dict[Any, str] = {code: code.name for code in grpc.StatusCode}
# grpc.aio reports a code set by abort() as the C core's integer.
_CODE_NAMES.update({code.value[0]: code.name for code in grpc.StatusCode})
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _final_code(context: Context, default: str) -> str:
    try:
        code = context.code()
    except Exception:  # older grpc.aio: no code() on the context
        return default
    if code is None:
        return default
    return _CODE_NAMES.get(code, default)


class RpcObserver(grpc.aio.ServerInterceptor):
    """Counts each RPC by method and final status code, records its latency, and writes
    its log line (when INFO is on for ``authority.rpc``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._calls: dict[tuple[str, str], Any] = {}
        self._latency: dict[str, Any] = {}

    def _record(self, method: str, code: str, started: float, peer: str, request: Any) -> None:
        elapsed = time.perf_counter() - started
        calls = self._calls.get((method, code))
        if calls is None:
            calls = self._calls[(method, code)] = self._metrics.rpcs.labels(method, code)
        calls.inc()
        latency = self._latency.get(method)
        if latency is None:
            latency = self._latency[method] = self._metrics.rpc_seconds.labels(method)
        latency.observe(elapsed)
        if rpc_log.isEnabledFor(logging.INFO):
            subject = getattr(request, "subject", "") if request is not None else ""
            log_rpc(method, code, elapsed * 1000, peer, subject if isinstance(subject, str) else "")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.lstrip("/")
        kind = next(k for k in _KINDS if getattr(handler, k) is not None)
        behavior = getattr(handler, kind)
        record = self._record
        request_streaming = handler.request_streaming

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
                    record(method, code, started, peer, None if request_streaming else request)

            wrapped: Any = observed_stream
        else:

            async def observed_call(request: Any, context: Context) -> Any:
                started = time.perf_counter()
                peer = context.peer()
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
                    record(method, code, started, peer, None if request_streaming else request)

            wrapped = observed_call
        return handler._replace(**{kind: wrapped})  # type: ignore[attr-defined, no-any-return]
