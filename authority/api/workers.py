"""``authority serve --workers N``: N processes serving one port, and the parent that keeps them.

One Python process runs on one core. With ``workers`` above 1 the parent serves nothing
itself: it checks the gRPC and HTTP ports without SO_REUSEPORT (a port another program
holds is refused, never shared), holds them with SO_REUSEPORT for as long as it runs, and
starts the workers, spawned processes that bind the same ports with SO_REUSEPORT, so the
kernel spreads connections over them. Each worker is a whole authority: its own pools,
mirror and log follower (woken by NOTIFY on PostgreSQL, polling on SQLite), exactly as a
replica is. Maintenance runs in one process at a time through the store's maintenance lock.

Health and metrics are per worker: a health check (gRPC or /healthz) is answered by the
worker its connection reached, and each worker serves /metrics on a port of its own
(``metrics_listen`` plus its index; port 0: one picked each), naming itself in
``authority_worker{worker, pid}``. Scrape every worker and sum.

The first worker starts alone (on a new database it creates the schema and the first key
before the others open it), then the rest. SIGTERM or SIGINT to the parent stops every
worker gracefully (SIGTERM to each; one that
has not stopped after :data:`STOP_SECONDS` is killed). A Ctrl-C that reaches a worker
while it starts (a terminal signals the whole process group) is dropped: the worker is
spawned with SIGINT blocked, and ignores it before unblocking it. A worker that dies is started
again after a pause that doubles with each failure in a row (:data:`FIRST_RESTART_SECONDS`
up to :data:`LAST_RESTART_SECONDS`). A worker that dies before it ever served (a refused
configuration, an unreachable database at start) stops them all: the start failed. A
worker whose parent is killed outright notices (its lifeline closes) and stops too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import FrameType

from authority.api.ports import refuse_taken_port, reserve_shared_port
from authority.config import Settings, metrics_address
from authority.errors import AuthorityError, StoreUnavailable

log = logging.getLogger(__name__)

# Each worker's graceful stop (in-flight calls, then the background work) takes at most
# about 10 s; past this it is killed.
STOP_SECONDS = 20.0
FIRST_RESTART_SECONDS = 0.5
LAST_RESTART_SECONDS = 30.0
# A worker that served this long before dying starts again at once: its failures in a row end.
STEADY_SECONDS = 60.0
# What the parent returns when a worker could not start: `authority serve`'s start failure.
START_FAILED = 2


@dataclasses.dataclass
class _Worker:
    """One worker slot: the process in it now, and how its restarts are paced."""

    index: int
    process: BaseProcess | None = None
    # Readable once the worker serves (a message) or has died (end of file).
    ready: Connection | None = None
    served: bool = False
    launched: bool = False
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


def worker_settings(settings: Settings, listen: str, http_listen: str) -> list[Settings]:
    """Each worker's settings: the reserved gRPC and HTTP addresses, one metrics port each."""
    result = []
    for index in range(settings.workers):
        metrics = settings.metrics_listen
        if metrics:
            host, _, port = metrics_address(metrics).rpartition(":")
            metrics = f"{host}:{int(port) + index if int(port) else 0}"
        result.append(dataclasses.replace(settings, listen=listen, http_listen=http_listen, metrics_listen=metrics))
    return result


def run_workers(settings: Settings) -> int:
    """Runs ``settings.workers`` workers until SIGTERM or SIGINT; returns the exit status."""
    held: list[socket.socket] = []
    try:
        listen, grpc_held = reserve_shared_port(settings.listen)
        held += grpc_held
        http_listen = settings.http_listen
        if http_listen:
            http_listen, http_held = reserve_shared_port(http_listen, "http_listen")
            held += http_held
        each = worker_settings(settings, listen, http_listen)
        for one in each:
            if one.metrics_listen:
                refuse_taken_port(metrics_address(one.metrics_listen), "metrics_listen")
        return _Supervisor(each).run()
    finally:
        for holder in held:
            holder.close()


class _Supervisor:
    """Starts the workers, restarts the ones that die, stops them all on a signal."""

    def __init__(self, each: list[Settings]) -> None:
        self._settings = each
        self._context = multiprocessing.get_context("spawn")
        # The workers hold the reading end; it reaches end of file when this process exits,
        # however it exits, and they stop.
        self._lifeline, self._lifeline_writer = self._context.Pipe(duplex=False)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._stopping = False
        self._workers = [_Worker(index) for index in range(len(each))]

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            # The first alone: on a new database it creates the schema and the first key
            # before the others open it, and a refused configuration is said once.
            self._start(self._workers[0])
            status = self._supervise()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for end in (self._wake_reader, self._wake_writer, self._lifeline, self._lifeline_writer):
                end.close()
        log.info("stopped")
        return status

    def _stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stopping = True
        with contextlib.suppress(BlockingIOError):  # already woken
            self._wake_writer.send(b"x")

    def _start(self, worker: _Worker) -> None:
        ready, told = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_work, args=(self._settings[worker.index], worker.index, told, self._lifeline),
            name=f"authority-worker-{worker.index}", daemon=False,
        )
        # SIGINT blocked while the worker is made, and so in the worker (a spawned process
        # inherits the mask) until _work ignores it: a terminal's Ctrl-C reaches every
        # process of the group, and one landing while the worker still imports would end
        # it in a KeyboardInterrupt traceback. Here it waits, and reaches _stop on restore.
        # The resource tracker first: starting it (on the first start()) unblocks SIGINT.
        multiprocessing.resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        told.close()  # the worker's end: once it is gone, `ready` reads end of file
        worker.process, worker.ready, worker.served, worker.launched = process, ready, False, True
        worker.started_at, worker.restart_at = time.monotonic(), None
        log.info("worker %d started (pid %s)", worker.index, process.pid)

    def _supervise(self) -> int:
        listen = self._settings[0].listen
        serving = False
        while not self._stopping:
            waiting: list[Connection | socket.socket | int] = [self._wake_reader]
            for worker in self._workers:
                if worker.process is not None:
                    waiting.append(worker.process.sentinel)
                    if worker.ready is not None:
                        waiting.append(worker.ready)
            due = [w.restart_at for w in self._workers if w.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            multiprocessing.connection.wait(waiting, timeout)
            with contextlib.suppress(BlockingIOError):
                self._wake_reader.recv(64)
            for worker in self._workers:
                if worker.ready is not None and worker.ready.poll():
                    try:
                        worker.ready.recv()
                        worker.served = True
                    except EOFError:
                        pass
                    worker.ready.close()
                    worker.ready = None
                if worker.process is not None and not worker.process.is_alive():
                    if not self._stopping and not self._died(worker):
                        return START_FAILED
                if worker.restart_at is not None and worker.restart_at <= time.monotonic() and not self._stopping:
                    self._start(worker)
            if self._workers[0].served:
                for worker in self._workers:
                    if not worker.launched:
                        self._start(worker)
            if not serving and all(w.served for w in self._workers):
                serving = True
                log.info("token authority listening on %s with %d workers", listen, len(self._workers))
        log.info("stopping: stopping %d workers", len(self._workers))
        return 0

    def _died(self, worker: _Worker) -> bool:
        """Schedules a dead worker's restart; False when it died before it ever served."""
        assert worker.process is not None
        code, pid = worker.process.exitcode, worker.process.pid
        worker.process.close()
        worker.process = None
        if worker.ready is not None:
            worker.ready.close()
            worker.ready = None
        if not worker.served and worker.failures == 0:
            log.error("worker %d (pid %s) exited with status %s before it served: stopping", worker.index, pid, code)
            return False
        lived = time.monotonic() - worker.started_at
        worker.failures = 1 if lived >= STEADY_SECONDS else worker.failures + 1
        pause = min(LAST_RESTART_SECONDS, FIRST_RESTART_SECONDS * 2 ** (worker.failures - 1))
        log.warning("worker %d (pid %s) exited with status %s after %.1fs; starting it again in %.1fs",
                    worker.index, pid, code, lived, pause)
        worker.restart_at = time.monotonic() + pause
        return True

    def _stop_all(self) -> None:
        running = [w.process for w in self._workers if w.process is not None]
        for process in running:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker's own graceful stop
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker (pid %s) did not stop within %.0fs: killing it", process.pid, STOP_SECONDS)
                process.kill()
                process.join()
        for worker in self._workers:
            if worker.process is not None:
                worker.process.close()
                worker.process = None
            if worker.ready is not None:
                worker.ready.close()
                worker.ready = None


def _work(settings: Settings, index: int, told: Connection, lifeline: Connection) -> None:
    """A worker process: one authority serving the shared ports until told to stop."""
    from authority.api import loops
    from authority.api.server import WorkerRole, serve
    from authority.ops import logs
    from authority.store import reach

    # The parent relays a terminal's Ctrl-C as SIGTERM; serve() handles both once it runs.
    # Ignored first, then unblocked (the parent spawned it with SIGINT blocked): one that
    # arrived while this process started is dropped.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    logs.install(settings.log_level, settings.log_format)

    def ready() -> None:
        told.send(os.getpid())
        told.close()

    try:
        loops.run(serve(settings, WorkerRole(index, ready, lifeline.fileno())), settings.event_loop)
    except StoreUnavailable as error:
        print(f"authority serve: worker {index}: cannot use the database ({reach.describe(settings.database_url)}): "
              f"{reach.why_unavailable(settings.database_url, error)}", file=sys.stderr)
        sys.exit(START_FAILED)
    except AuthorityError as error:
        print(f"authority serve: worker {index}: {error}", file=sys.stderr)
        sys.exit(START_FAILED)
