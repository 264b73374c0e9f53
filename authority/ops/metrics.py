"""Prometheus metrics of one authority server, on a registry of its own.

Every server gets its own :class:`Metrics` (and so its own ``CollectorRegistry``), so
several servers in one process (tests, benchmarks) never share or collide on a series.
The metrics are always counted; they are served over HTTP only when ``metrics_listen``
is set (see :class:`MetricsHttpServer`).

What is counted where:

- RPCs by method and status code, and their latency: :class:`authority.api.observe.Observer`,
  which wraps each method's handler once, where it is registered (it also writes the one
  log line per RPC, see :mod:`authority.ops.logs`).
- Validations by outcome and sign-ins by outcome: the servicer, through the pre-bound
  counters here, so counting costs a dict lookup and an increment. The per-call
  updates (RPCs, their latency, validations) are queued and applied in batches, and
  always before a scrape reads them (:mod:`authority.ops.tally`).
- Live revocations, signing-key ages, pool use: read at scrape time from the objects
  themselves, by collectors; nothing to keep in step.
- Live sessions: counted in the database every ``LIVE_SESSIONS_INTERVAL`` seconds while
  metrics are served, since only the database knows across replicas.
- Store errors: a SQLAlchemy ``handle_error`` hook on the engine, and the store's own
  count of the errors of what it sends straight to the driver (sign-ins, log reads).
- Revocation-feed lag, read from the mirror at scrape time: seconds since the view was
  last confirmed complete, the log position applied (compare replicas: the highest minus
  this one is how far it trails), and the events queued for the slowest watcher.
- High availability, read at scrape time from the store and the log follower: reconnects
  after the database was lost, the server in use and whether it is the primary, seconds
  since the last write committed and since the log was last read to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event

from authority.config import metrics_address
from authority.errors import StoreUnavailable
from authority.ops.tally import Deferred, Tally
from authority.tokens import InvalidReason

if TYPE_CHECKING:
    from authority.app import Authority

log = logging.getLogger(__name__)

# Latency buckets in seconds: validation answers in well under a millisecond, a sign-in
# on PostgreSQL in a few, an outage in seconds.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LIVE_SESSIONS_INTERVAL = 15.0

SIGN_IN_OUTCOMES = ("issued", "replaced", "rejected")


class Metrics:
    """The counters, gauges and histograms of one server, and the registry they live in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        # First in the registry: a collection applies what the per-call path queued
        # before any series is read (authority/ops/tally.py).
        self.tally = Tally()
        registry.register(self.tally)
        # CPU, resident memory and open files of the process (process_*).
        ProcessCollector(registry=registry)
        self.rpcs = Counter(
            "authority_rpcs", "RPCs handled, by method and status code.", ["method", "code"], registry=registry
        )
        self.rpc_seconds = Histogram(
            "authority_rpc_duration_seconds",
            "Time from a call's arrival to its final status, by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        validations = Counter(
            "authority_validations", "Token checks (ValidateToken and ext_authz Check), by outcome.", ["outcome"], registry=registry
        )
        # Pre-bound children keyed by reason (None for a valid token): the hot path does
        # one dict lookup and queues one increment, never a label lookup.
        self.validation_outcomes: dict[InvalidReason | None, Deferred] = {
            None: Deferred(validations.labels("valid"), self.tally)
        }
        for reason in InvalidReason:
            self.validation_outcomes[reason] = Deferred(validations.labels(reason.name.lower()), self.tally)
        sign_ins = Counter("authority_sign_ins", "Sign-ins (IssueToken), by outcome.", ["outcome"], registry=registry)
        self.sign_in_outcomes = {outcome: sign_ins.labels(outcome) for outcome in SIGN_IN_OUTCOMES}
        self.live_sessions = Gauge(
            "authority_live_sessions",
            f"Live sessions in the store, counted every {LIVE_SESSIONS_INTERVAL:g} s while metrics are served.",
            registry=registry,
        )
        self.store_errors = Counter(
            "authority_store_errors",
            "Errors raised by the database driver, by whether they mean the connection was lost.",
            ["kind"],
            registry=registry,
        )
        self._store_error_kinds = {True: self.store_errors.labels("disconnect"), False: self.store_errors.labels("other")}
        # The HTTP port's connections (authority/http/connections.py); the gauge is read
        # from the listener at scrape time once it has started.
        self.http_connections = Gauge("authority_http_connections", "HTTP connections open.", registry=registry)
        self.http_connections_refused = Counter(
            "authority_http_connections_refused",
            "HTTP connections refused past http_max_connections (answered 503 and closed).",
            registry=registry,
        )

    def count_sign_in(self, replaced: bool) -> None:
        """Counts a sign-in that committed; ``replaced`` when it signed other sessions out."""
        self.sign_in_outcomes["replaced" if replaced else "issued"].inc()

    def count_rejected_sign_in(self) -> None:
        """Counts a sign-in refused under the REJECT policy."""
        self.sign_in_outcomes["rejected"].inc()

    def watch(self, authority: Authority, clock: Callable[[], float] = time.time) -> None:
        """Adds the series read from ``authority`` at scrape time, and counts its store errors."""
        self.registry.register(_AuthorityCollector(authority, clock))
        engine = authority.store.engine.sync_engine

        def on_error(context: Any) -> None:
            self._store_error_kinds[bool(context.is_disconnect)].inc()

        def on_driver_error(lost: bool) -> None:
            self._store_error_kinds[lost].inc()

        event.listen(engine, "handle_error", on_error)
        authority.store.driver_errors = on_driver_error

    async def count_live_sessions_forever(
        self, authority: Authority, clock: Callable[[], float] = time.time, interval: float = LIVE_SESSIONS_INTERVAL
    ) -> None:
        """Keeps the live-sessions gauge current until cancelled."""
        while True:
            try:
                now = clock()
                self.live_sessions.set(await authority.store.count_live_sessions(now, authority.settings.idle_cutoff(now)))
            except StoreUnavailable:
                pass  # the store-errors counter has it; keep the last known count
            except Exception:
                log.exception("counting live sessions failed")
            await asyncio.sleep(interval)


class _AuthorityCollector(Collector):
    """Series read from the live objects at scrape time (on the HTTP server's thread:
    plain reads of ints and dicts, safe under the GIL)."""

    def __init__(self, authority: Authority, clock: Callable[[], float]) -> None:
        self._authority = authority
        self._clock = clock

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # unchecked collector: names are fixed, values appear at scrape time

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        mirror = self._authority.mirror
        yield GaugeMetricFamily(
            "authority_live_revocations",
            "Revoked sessions held in this process's in-memory mirror.",
            value=len(mirror),
        )
        yield GaugeMetricFamily(
            "authority_revocation_feed_lag_seconds",
            "Seconds since this process last read the revocation log to its end; above max_staleness "
            "ValidateToken answers UNAVAILABLE.",
            value=min(mirror.age(), 1e9),
        )
        yield GaugeMetricFamily(
            "authority_revocation_log_sequence",
            "The revocation-log position this process has applied; the highest across replicas minus "
            "this is how many entries it trails.",
            value=mirror.sequence,
        )
        yield GaugeMetricFamily(
            "authority_revocation_feed_lag_sequences",
            "Revocation events queued for the slowest WatchRevocations consumer of this process.",
            value=mirror.watcher_backlog(),
        )
        ages = GaugeMetricFamily(
            "authority_signing_key_age_seconds",
            "Age of each signing key this process verifies with; signing marks the one it signs with.",
            labels=["kid", "algorithm", "signing"],
        )
        keyring = self._authority.codec.keyring
        now = self._clock()
        signing_key = keyring.signing_key_at(now)
        for key in keyring:
            signing = "true" if key is signing_key else "false"
            ages.add_metric([key.kid, key.algorithm.value, signing], now - key.created_at)
        yield ages
        yield from self._high_availability()
        pool: Any = self._authority.store.engine.pool
        for name, help_text, read in (
            ("authority_store_pool_size", "Connections the pool keeps.", "size"),
            ("authority_store_pool_checked_out", "Connections in use.", "checkedout"),
            ("authority_store_pool_overflow", "Connections open beyond the pool size.", "overflow"),
        ):
            reader = getattr(pool, read, None)
            if reader is not None:
                yield GaugeMetricFamily(name, help_text, value=float(reader()))


    def _high_availability(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        store, follower = self._authority.store, self._authority.follower
        now = time.monotonic()
        yield CounterMetricFamily(
            "authority_store_reconnects",
            "Connections opened again after the database was lost (an outage, a failover).",
            value=store.reconnects,
        )
        state = follower.state
        host = GaugeMetricFamily(
            "authority_store_host", "The database server the log was last read from (1), as it names itself.",
            labels=["host"],
        )
        if state is not None:
            host.add_metric([state.host], 1)
        yield host
        yield GaugeMetricFamily(
            "authority_store_primary",
            "1 while the last read of the log was from a primary; 0 when it failed (no primary, a standby, down).",
            value=1 if state is not None and state.primary else 0,
        )
        for name, help_text, at in (
            ("authority_store_seconds_since_write", "Seconds since a write to the database last committed.",
             store.last_write_at),
            ("authority_revocation_log_seconds_since_read", "Seconds since the revocation log was last read to its end.",
             follower.last_read_at),
        ):
            yield GaugeMetricFamily(name, help_text + " (+Inf: never.)", value=math.inf if at is None else now - at)


class MetricsHttpServer:
    """The ``/metrics`` endpoint on a port of its own, served from a thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (useful when it was asked for port 0)."""
        return int(self._httpd.server_address[1])

    @classmethod
    def start(cls, metrics: Metrics, metrics_listen: str) -> MetricsHttpServer:
        """Serves ``metrics`` on ``metrics_listen`` (HOST:PORT, or a bare PORT on loopback)."""
        host, _, port = metrics_address(metrics_listen).rpartition(":")
        httpd, thread = start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
        return cls(httpd, thread)

    def stop(self) -> None:
        """Stops serving and frees the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)
