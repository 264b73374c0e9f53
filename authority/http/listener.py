"""The HTTP listener: an aiohttp application in the authority's own event loop, started
and stopped with the gRPC server (:mod:`authority.api.server`).

Every request passes one middleware that refuses tokens in the URL (RFC 6750 §2.3: a URL
ends up in logs and histories), turns whatever a handler raised into its answer
(:mod:`authority.http.status`), counts it beside the RPCs and writes its one log line, by
the route's pattern, never the path or the query as sent, which could hold a token.
Requests aiohttp cannot even parse (a header over its limits, a broken request line) are
logged at INFO without a traceback: they are the client's fault, not ours. How many
connections the listener holds, for how long, and what a request that does not parse is
told, is :mod:`authority.http.connections`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from authority.app import Authority
from authority.config import Settings, read_option_file
from authority.credentials import CallerRegistry
from authority.errors import ConfigError
from authority.http.callers import HttpCallers
from authority.http.connections import REFUSAL_LINGER_SECONDS, LimitedSite, descriptor_room
from authority.http.discovery import INTROSPECT_PATH, JWKS_PATH, REVOKE_PATH, Discovery, metadata_paths
from authority.http.status import SERVER_NAME, HttpRefusal, answer_for
from authority.http.tokens import MAX_BODY_BYTES, TokenEndpoints
from authority.ops import logs
from authority.ops.metrics import Metrics

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
# Query parameters that would carry a token or a credential in the URL, in any case.
_SECRET_PARAMETERS = frozenset({"token", "access_token", "refresh_token", "api_key"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# The client's mistakes as aiohttp's protocol reports them: a request that does not
# parse, and a body that does not decode (read again, after the answer, to drain it).
_CLIENT_MISTAKES = (HttpProcessingError, web.RequestPayloadError)


class _ProtocolLog(logging.Logger):
    """aiohttp's server logger: a request it cannot parse is the client's mistake and is
    logged at INFO by kind alone (the parser's message may quote the header, and with it
    a credential); anything else keeps aiohttp's ERROR and traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, _CLIENT_MISTAKES):
            log.info("refused an HTTP request that does not parse (%s)", type(exc_info).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def debug(self, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        if isinstance(exc_info, _CLIENT_MISTAKES):  # aiohttp's quieter form of the same
            log.debug("refused an HTTP request that does not parse (%s)", type(exc_info).__name__)
            return
        super().debug(msg, *args, exc_info=exc_info, **kwargs)


_protocol_log = _ProtocolLog("authority.http.protocol")
_protocol_log.parent = logging.getLogger("authority.http")


# Any other method is counted and logged as OTHER, so that no client can mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _route(request: web.Request) -> str:
    method = request.method if request.method in _METHODS else "OTHER"
    resource = request.match_info.route.resource
    if resource is not None:
        return f"{method} {resource.canonical}"
    refused = request.match_info.http_exception
    if refused is not None and refused.status == 405:  # a path of ours, asked with another method
        if request.path in {known.canonical for known in request.app.router.resources()}:
            return f"{method} {request.path}"
    return f"{method} (unknown path)"


def _answering(metrics: Metrics) -> Middleware:
    """The middleware every request passes: refusals, answers, the log line, the counts."""

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = _route(request)
        try:
            if request.query_string and not _SECRET_PARAMETERS.isdisjoint(name.lower() for name in request.query):
                raise HttpRefusal(400, "invalid_request",
                                  "send tokens in the request body, never in the URL (RFC 6750 §2.3)")
            response = await handler(request)
        except Exception as error:
            response = answer_for(error, route)
            if response.status in (401, 403):
                log.info("refused %s from %s: %s", route, request.remote, error)
        seconds = time.perf_counter() - started
        # Beside the RPCs, by route and status: a handful of label values, never the path as sent.
        # Queued like the RPCs' updates, applied in batches and before every scrape.
        metrics.tally.add(metrics.rpcs.labels(route, str(response.status)).inc, 1)
        metrics.tally.add(metrics.rpc_seconds.labels(route).observe, seconds)
        if logs.rpc_log.isEnabledFor(logging.INFO):
            logs.log_rpc(route, str(response.status), seconds * 1000, str(request.remote), "")
        return response

    return answer


async def _name_the_server(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP port's TLS, from the same files as the gRPC port's: the certificate chain
    and key, and with a client CA, a verified client certificate required in the handshake."""
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (ssl.SSLError, OSError):
        raise ConfigError("tls_cert_file", "the certificate chain and tls_key_file do not load as a pair") from None
    if settings.tls_client_ca_file:
        read_option_file("tls_client_ca_file", settings.tls_client_ca_file)
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca_file)
        except (ssl.SSLError, OSError):
            raise ConfigError("tls_client_ca_file", "holds no PEM certificate") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HttpListener:
    """A started HTTP listener; :meth:`stop` closes it."""

    def __init__(self, runner: web.AppRunner, port: int, scheme: str) -> None:
        self._runner = runner
        self.port = port
        self.scheme = scheme

    @classmethod
    async def start(
        cls,
        authority: Authority,
        registry: CallerRegistry | None,
        metrics: Metrics,
        serving: Callable[[], bool],
        shutdown_timeout: float,
        reuse_port: bool = False,
    ) -> HttpListener:
        """Serves the endpoints on ``http_listen``; ``serving`` is what /healthz reports.
        ``reuse_port``: the port is shared with the other workers of ``serve --workers``."""
        settings = authority.settings
        context = ssl_context(settings)
        max_connections = descriptor_room(settings.http_max_connections)
        callers = HttpCallers(registry, bool(settings.tls_client_ca_file))
        discovery = Discovery(authority)
        tokens = TokenEndpoints(authority, callers, metrics)

        async def healthz(request: web.Request) -> web.Response:
            # Mirrors grpc.health.v1: the same decision, and NOT_SERVING once stopping.
            status = "SERVING" if serving() else "NOT_SERVING"
            return web.json_response({"status": status}, status=200 if status == "SERVING" else 503,
                                     headers={"Cache-Control": "no-store"})

        app = web.Application(middlewares=[_answering(metrics)], client_max_size=MAX_BODY_BYTES)
        app.on_response_prepare.append(_name_the_server)
        app.router.add_get(JWKS_PATH, discovery.jwks)
        for path in metadata_paths(settings.issuer):
            app.router.add_get(path, discovery.metadata)
        app.router.add_post(INTROSPECT_PATH, tokens.introspect)
        app.router.add_post(REVOKE_PATH, tokens.revoke)
        app.router.add_get(HEALTH_PATH, healthz)
        # Given to the runner's server and to each connection's handler alike. The linger
        # after an answer that left a body unread is aiohttp's 10 s, cut to the refusals' own.
        handler_args: dict[str, Any] = {
            "access_log": None, "logger": _protocol_log, "keepalive_timeout": settings.http_read_timeout,
            "lingering_time": REFUSAL_LINGER_SECONDS,
        }
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout, **handler_args)
        await runner.setup()
        host, _, port = settings.http_listen.rpartition(":")
        site = LimitedSite(
            runner, host.strip("[]"), int(port), ssl_context=context, reuse_port=reuse_port,
            max_connections=max_connections, read_timeout=settings.http_read_timeout, handler_args=handler_args,
            on_refused=metrics.http_connections_refused.inc,
        )
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise ConfigError("http_listen", f"cannot listen on {settings.http_listen}") from error
        metrics.http_connections.set_function(site.open_connections)
        discovery.explain_metadata()
        bound = int(runner.addresses[0][1])
        return cls(runner, bound, "https" if context is not None else "http")

    async def stop(self) -> None:
        """Stops accepting, lets in-flight requests finish (within the shutdown timeout), closes."""
        await self._runner.cleanup()
