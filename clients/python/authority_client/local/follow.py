"""Keeps a :class:`RevocationMirror` current from the WatchRevocations stream.

:class:`MirrorFollower` runs in a daemon thread (for grpc servers),
:class:`AsyncMirrorFollower` in an asyncio task (for grpc.aio servers); both do the same:
open the stream after the last sequence applied, apply every event, and when the stream
ends or fails, reconnect after a backoff (doubling, with jitter, up to ``max_backoff``)
and resume from the last sequence, so no revocation is missed. The position is kept with
the log's epoch: a stream of another epoch (the authority's database restored, or failed
over to a new timeline), or OUT_OF_RANGE, starts it again from 0. A stream that has caught
up and then stays silent for ``idle_timeout`` is presumed dead and reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import threading

import grpc
from authority_client.async_client import AsyncAuthorityClient
from authority_client.client import AuthorityClient, RevocationStream
from authority_client.errors import AuthorityError
from authority_client.local.mirror import RevocationMirror

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FollowSettings:
    """How the stream is followed; durations in seconds."""

    heartbeat_interval: float = 1.0
    # Silence after catching up that reopens the stream.
    idle_timeout: float = 3.0
    min_backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "idle_timeout", "min_backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds above 0")
        # Less than a millisecond goes out as a zero Duration, which the authority refuses.
        if self.heartbeat_interval < 0.001:
            raise ValueError("heartbeat_interval must be at least 0.001 s")
        # A stream cut for silence before each heartbeat could arrive would reopen for ever.
        if self.idle_timeout <= self.heartbeat_interval:
            raise ValueError("idle_timeout must be longer than heartbeat_interval")
        if self.max_backoff < self.min_backoff:
            raise ValueError("max_backoff must be at least min_backoff")


class _Backoff:
    def __init__(self, settings: FollowSettings) -> None:
        self._settings = settings
        self._next = settings.min_backoff

    def reset(self) -> None:
        self._next = self._settings.min_backoff

    @property
    def fresh(self) -> bool:
        """Whether no retry has happened since the last reset."""
        return self._next == self._settings.min_backoff

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._settings.max_backoff)
        return delay * random.uniform(0.5, 1.0)


def _log_stream_end(error: BaseException | None, first: bool) -> None:
    # Loud once per outage, quiet for every retry after it.
    level = logging.WARNING if first else logging.DEBUG
    if isinstance(error, AuthorityError):
        log.log(level, "revocation stream lost (%s); reconnecting", error.code.name)
    elif error is not None:
        log.log(level, "revocation stream failed (%s); reconnecting", type(error).__name__)


class MirrorFollower:
    """Follows the revocation stream in a daemon thread until :meth:`stop`."""

    def __init__(
        self, client: AuthorityClient, mirror: RevocationMirror, settings: FollowSettings = FollowSettings()
    ) -> None:
        self._client = client
        self._mirror = mirror
        self._settings = settings
        self._stopping = threading.Event()
        self._stream: RevocationStream | None = None
        self._stream_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Starts the follower and its watchdog."""
        if self._threads:
            return
        self._threads = [
            threading.Thread(target=self._follow, name="authority-revocations", daemon=True),
            threading.Thread(target=self._watch_idle, name="authority-revocations-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the stream and waits for the threads."""
        self._stopping.set()
        self._cancel_stream()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _cancel_stream(self) -> None:
        with self._stream_lock:
            if self._stream is not None:
                self._stream.cancel()

    def _follow(self) -> None:
        backoff = _Backoff(self._settings)
        while not self._stopping.is_set():
            error: BaseException | None = None
            try:
                stream = self._client.watch_revocations(
                    self._mirror.last_sequence,
                    heartbeat_interval=self._settings.heartbeat_interval,
                    epoch=self._mirror.epoch,
                )
                with self._stream_lock:
                    self._stream = stream
                if self._stopping.is_set():
                    break
                self._mirror.stream_started()
                for event in stream:
                    if not self._mirror.same_epoch(event):
                        stream.cancel()
                        break
                    self._mirror.apply(event)
                    if self._mirror.stream_caught_up():
                        backoff.reset()
            except AuthorityError as failure:
                error = failure
                if failure.code is grpc.StatusCode.OUT_OF_RANGE:
                    self._mirror.restart()
            except Exception as failure:  # keep following whatever went wrong
                error = failure
            finally:
                with self._stream_lock:
                    self._stream = None
            if self._client.closed:
                log.debug("revocation stream ended: the client was closed")
                break
            if not self._stopping.is_set():
                _log_stream_end(error, backoff.fresh)
                self._stopping.wait(backoff.next())

    def _watch_idle(self) -> None:
        # The blocking iterator has no read timeout; a silent stream is cancelled from here.
        interval = min(self._settings.heartbeat_interval, self._settings.idle_timeout) / 2
        while not self._stopping.wait(interval):
            if self._mirror.stream_caught_up() and self._mirror.idle_for() > self._settings.idle_timeout:
                log.warning("revocation stream silent for %.1fs; reopening", self._mirror.idle_for())
                self._cancel_stream()


class AsyncMirrorFollower:
    """Follows the revocation stream in an asyncio task until :meth:`stop`."""

    def __init__(
        self, client: AsyncAuthorityClient, mirror: RevocationMirror, settings: FollowSettings = FollowSettings()
    ) -> None:
        self._client = client
        self._mirror = mirror
        self._settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts following in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow(), name="authority-revocations")

    async def stop(self) -> None:
        """Cancels the task and waits for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        backoff = _Backoff(self._settings)
        while True:
            error: BaseException | None = None
            events = self._client.watch_revocations(
                self._mirror.last_sequence, heartbeat_interval=self._settings.heartbeat_interval, epoch=self._mirror.epoch
            )
            try:
                self._mirror.stream_started()
                while True:
                    # Only a stream that has caught up is expected to speak regularly.
                    timeout = self._settings.idle_timeout if self._mirror.stream_caught_up() else None
                    try:
                        event = await asyncio.wait_for(anext(events), timeout)
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        log.warning("revocation stream silent for %.1fs; reopening", self._settings.idle_timeout)
                        break
                    if not self._mirror.same_epoch(event):
                        break
                    self._mirror.apply(event)
                    if self._mirror.stream_caught_up():
                        backoff.reset()
            except AuthorityError as failure:
                error = failure
                if failure.code is grpc.StatusCode.OUT_OF_RANGE:
                    self._mirror.restart()
            except Exception as failure:  # keep following whatever went wrong
                error = failure
            finally:
                await events.aclose()
            if self._client.closed:
                log.debug("revocation stream ended: the client was closed")
                return
            _log_stream_end(error, backoff.fresh)
            await asyncio.sleep(backoff.next())
