"""The grpc.aio server: :func:`create_server` builds and starts one, :func:`serve` runs it
until SIGTERM or SIGINT.

Besides ``authority.v1.TokenAuthority`` the server carries Envoy's external authorization
(``envoy.service.auth.v3.Authorization``, :mod:`authority.api.ext_authz`), the standard
health service (``grpc.health.v1``) and server reflection, so generic gRPC tools can talk to it.
With ``http_listen`` set, the HTTP endpoints (:mod:`authority.http`) start and stop with it.
Under ``serve --workers N`` every worker runs :func:`serve` with a :class:`WorkerRole`
(see :mod:`authority.api.workers`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import cast

import grpc
from authority_client.v1 import authority_pb2, authority_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import Gauge

from authority.api import ext_authz
from authority.api.callers import prepare_transport
from authority.api.heap import freeze_start_up_heap
from authority.api.loops import loop_name, stop_signals
from authority.api.observe import Observer, RpcObserver
from authority.api.ports import refuse_taken_port
from authority.api.readiness import ServiceWhenReady
from authority.api.servicer import TokenAuthorityService
from authority.api.status import tolerate_undecodable
from authority.app import Authority
from authority.config import Settings, metrics_address
from authority.errors import ConfigError
from authority.http.listener import HttpListener
from authority.ops import logs
from authority.ops.metrics import Metrics, MetricsHttpServer
from authority.store.reach import describe as describe_store

log = logging.getLogger(__name__)

SERVICE_NAME = authority_pb2.DESCRIPTOR.services_by_name["TokenAuthority"].full_name
# In-flight calls get this long to finish on a graceful stop.
STOP_GRACE_SECONDS = 5.0
# How often the health status is brought in line with the revocation view's freshness.
HEALTH_CHECK_INTERVAL = 0.2


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """How a worker of ``serve --workers`` serves: on ports it shares with the others
    (SO_REUSEPORT), telling its parent when it is ready, and stopping when the parent is gone."""

    index: int
    # Called once the worker serves.
    ready: Callable[[], None]
    # A descriptor that becomes readable (end of file) once the parent has exited.
    lifeline: int


@dataclasses.dataclass
class AuthorityServer:
    """A started server and the authority behind it; :meth:`stop` releases both."""

    server: grpc.aio.Server
    port: int
    authority: Authority
    health: health.aio.HealthServicer
    health_reporter: asyncio.Task[None]
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    # Set while the metrics are served over HTTP (metrics_listen).
    metrics_http: MetricsHttpServer | None = None
    _background: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    # Set while the HTTP endpoints are served (http_listen).
    http: HttpListener | None = None
    _stopping: bool = False

    @property
    def serving(self) -> bool:
        """What health reports: the authority is serving and not stopping."""
        return not self._stopping and self.authority.is_serving()

    async def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish within ``grace``, then closes."""
        self._stopping = True
        self.health_reporter.cancel()
        await self.health.enter_graceful_shutdown()
        await asyncio.gather(self.server.stop(grace), _stop_http(self.http))
        self.http = None
        await _stop_metrics(self.metrics_http, self._background)
        self.metrics_http = None
        await self.authority.close()


async def _report_health(authority: Authority, servicer: health.aio.HealthServicer) -> None:
    """SERVING while the store answers and the revocation view is current; NOT_SERVING
    while the store is unreachable or the view stale, so a load balancer sends calls
    elsewhere. Logged on every change."""
    serving = True
    while True:
        await asyncio.sleep(HEALTH_CHECK_INTERVAL)
        current = authority.is_serving()
        if current == serving:
            continue
        serving = current
        status = health_pb2.HealthCheckResponse.SERVING if current else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await servicer.set(service, status)
        if current:
            log.info("the store answers and the revocation view is current: serving")
        else:
            log.warning("the store is unreachable or the revocation view stale: not serving")


async def _stop_metrics(http: MetricsHttpServer | None, background: list[asyncio.Task[None]]) -> None:
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    background.clear()
    if http is not None:
        # shutdown() waits for the serving thread; keep the event loop free meanwhile.
        await asyncio.to_thread(http.stop)


async def _stop_http(http: HttpListener | None) -> None:
    if http is not None:
        await http.stop()


async def create_server(
    settings: Settings, clock: Callable[[], float] = time.time, worker: int | None = None
) -> AuthorityServer:
    """Serves the authority on ``settings.listen`` (port 0 picks a free port).

    ``worker`` (its index) makes this one of the workers of ``serve --workers``: the
    gRPC and HTTP ports are shared with the other workers, the parent having checked and
    reserved them, and the metrics name the worker and its pid.

    The port comes first: a busy one is refused before the database is touched, and
    while the store opens and the keys and revocations load, health answers NOT_SERVING
    and every TokenAuthority call UNAVAILABLE. The grpc.aio server alone cannot release
    the authority's database pool and background purge, so this returns a handle whose
    ``stop()`` does both.
    """
    if worker is None:  # workers: their supervisor checked every port before any started
        refuse_taken_port(settings.listen)
        if settings.http_listen:
            refuse_taken_port(settings.http_listen, "http_listen")
        if settings.metrics_listen:
            refuse_taken_port(metrics_address(settings.metrics_listen), "metrics_listen")
    transport = prepare_transport(settings)  # before the database: a bad TLS file stops us first
    logs.quiet_client_disconnects()
    metrics = Metrics()
    if worker is not None:
        name_worker(metrics, worker)
    metrics_http: MetricsHttpServer | None = None
    http: HttpListener | None = None
    background: list[asyncio.Task[None]] = []
    authority: Authority | None = None
    # Health and /healthz read it; set once the handle exists.
    handle: AuthorityServer | None = None
    # SO_REUSEPORT off: a second server on a taken port must fail, not share it (workers
    # share theirs on purpose, the parent having refused one already taken). The
    # observer comes first so that it sees the status of everything inside it, caller
    # authentication next: a refused call reaches no other check and no handler. With no
    # interceptor to run inside it, the observer wraps each method's handler once, where
    # it is registered, and no interceptor runs per call (authority/api/observe.py).
    observer = Observer(metrics, settings.log_sample_validate)
    interceptors = transport.interceptors
    server = grpc.aio.server(
        interceptors=[RpcObserver(observer), *interceptors] if interceptors else None,
        options=[("grpc.so_reuseport", 0 if worker is None else 1)],
    )
    # Where services are added: it stands in for the server (add_*_to_server take a server).
    services = cast(grpc.aio.Server, observer.registrar(server, tolerate_undecodable, observe=not interceptors))
    try:
        service = ServiceWhenReady()
        authority_pb2_grpc.add_TokenAuthorityServicer_to_server(service, services)
        check = ServiceWhenReady(ext_authz.SERVICE)
        ext_authz.add_to_server(check, services)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
        # Not reflection.enable_server_reflection: it picks the asyncio servicer only for a grpc.aio.Server.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
            reflection.aio.ReflectionServicer(
                (SERVICE_NAME, ext_authz.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
            ),
            services,
        )
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            port = transport.add_port(server, settings.listen)
        except RuntimeError as error:
            raise ConfigError("listen", f"cannot listen on {settings.listen}") from error
        await server.start()
        log.info("bound %s:%d; not serving until the store is open", settings.listen.rpartition(":")[0], port)
        authority = await Authority.open(settings, clock)
        metrics.watch(authority, clock)
        service.attach(TokenAuthorityService(authority, metrics))
        check.attach(ext_authz.ExternalAuthorization(authority, metrics))
        if settings.metrics_listen:
            try:
                metrics_http = MetricsHttpServer.start(metrics, settings.metrics_listen)
            except OSError as error:
                raise ConfigError("metrics_listen", f"cannot listen on {settings.metrics_listen}") from error
            background.append(
                asyncio.create_task(metrics.count_live_sessions_forever(authority, clock), name="live-sessions")
            )
        if settings.http_listen:
            http = await HttpListener.start(
                authority, transport.registry, metrics, lambda: handle is not None and handle.serving,
                STOP_GRACE_SECONDS, reuse_port=worker is not None,
            )
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        authority.start()
    except BaseException:
        await server.stop(None)
        await _stop_http(http)
        await _stop_metrics(metrics_http, background)
        if authority is not None:
            await authority.close()
        raise
    reporter = asyncio.create_task(_report_health(authority, health_servicer), name="health")
    handle = AuthorityServer(server, port, authority, health_servicer, reporter, metrics, metrics_http, background, http)
    return handle


def name_worker(metrics: Metrics, index: int) -> None:
    """Adds ``authority_worker{worker, pid}`` to a worker's metrics: which of the workers
    a scrape (each has a metrics port of its own) or a dashboard is looking at."""
    Gauge(
        "authority_worker", "This process is worker `worker` of `serve --workers`, process id `pid`.",
        ["worker", "pid"], registry=metrics.registry,
    ).labels(str(index), str(os.getpid())).set(1)


async def serve(settings: Settings, worker: WorkerRole | None = None) -> None:
    """Runs the authority until SIGTERM or SIGINT (for a worker: or until its parent is
    gone), then stops gracefully."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    with stop_signals(loop, stopping.set):
        if worker is not None:
            loop.add_reader(worker.lifeline, stopping.set)
        try:
            await _serve_until(stopping, settings, worker)
        finally:
            if worker is not None:
                loop.remove_reader(worker.lifeline)
    log.info("stopped")


async def _serve_until(stopping: asyncio.Event, settings: Settings, worker: WorkerRole | None) -> None:
    kek = settings.key_encryption_key_bytes()
    if kek is not None:
        logs.use_subject_key(kek)
    running = await _started_unless_stopped(stopping, settings, worker)
    if running is None:
        log.info("stopping: the stop came before the store was open")
        return
    frozen = freeze_start_up_heap()
    log.debug("froze the start-up heap: %d objects that garbage collection skips from now on", frozen)
    host = settings.listen.rpartition(":")[0]
    who = "token authority" if worker is None else f"worker {worker.index} (pid {os.getpid()})"
    log.info("%s listening on %s:%d (store: %s; event loop: %s)", who, host, running.port,
             describe_store(settings.database_url), loop_name(asyncio.get_running_loop()))
    if running.metrics_http is not None:
        log.info("%smetrics on http://%s:%d/metrics", "" if worker is None else f"worker {worker.index} ",
                 host_of(settings.metrics_listen), running.metrics_http.port)
    if running.http is not None:
        log.info("HTTP endpoints on %s://%s:%d", running.http.scheme, settings.http_listen.rpartition(":")[0],
                 running.http.port)
    if worker is not None:
        worker.ready()
    try:
        await stopping.wait()
        log.info("stopping: finishing in-flight calls")
    finally:
        await running.stop()


async def _started_unless_stopped(
    stopping: asyncio.Event, settings: Settings, worker: WorkerRole | None
) -> AuthorityServer | None:
    """The started server, or None when ``stopping`` is set first.

    Opening the store can take as long as the database's connect timeout, and longer on
    a host that accepts and never answers; a SIGTERM meanwhile must not wait for it. The
    start is cancelled then, and create_server stops what it had started."""
    starting = asyncio.create_task(create_server(settings, worker=None if worker is None else worker.index))
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
    return None if starting.cancelled() else starting.result()


def host_of(metrics_listen: str) -> str:
    """The host part of ``metrics_listen`` as it will be bound."""
    return metrics_address(metrics_listen).rpartition(":")[0]
