"""Counts and observations of the per-call path, applied to their Prometheus series in batches.

A Prometheus series takes a lock and a few Python calls for each increment; a call's
observation (its status counted, its latency observed, its outcome counted) made three
of those per RPC, each one between the call's other work, with caches cold. Applied in
batches, back to back, they cost less: over 30 paired rounds each, in five runs, on
this project's machine, warm ValidateToken went from 0.78 to 0.81 of the bare
gRPC server's CPU per call, together with the log lines made in batches too
(:mod:`authority.ops.logs`). Single rounds range from 0.65 to 0.98, so one run of
``scripts/bench`` cannot show so small a step; see README "Since that run: the per-call
updates in batches".

So the per-call path only queues an update (:meth:`Tally.add`, or :meth:`Deferred.inc`
on a pre-bound child); the queue is applied once it holds :data:`BATCH` updates, and
whenever the registry is collected: a :class:`Tally` is a collector of its own,
registered before every series, so a scrape (from any thread) first applies what is
queued, and what it shows is exact. Between scrapes at most :data:`BATCH` updates wait.
The queue is a :class:`collections.deque`, whose appends and pops are atomic, so the
event loop and a scraping thread may apply it at once and each update still counts once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.registry import Collector

# Updates queued before the per-call path applies them itself.
BATCH = 256

Apply = Callable[[float], Any]


class Tally(Collector):
    """The queue of updates (a series' ``inc`` or ``observe`` and its amount)."""

    def __init__(self, batch: int = BATCH) -> None:
        self._pending: deque[tuple[Apply, float]] = deque()
        self._batch = batch

    def add(self, apply: Apply, amount: float) -> None:
        """Queues ``apply(amount)``: ``child.inc`` and 1, or ``child.observe`` and seconds."""
        pending = self._pending
        pending.append((apply, amount))
        if len(pending) >= self._batch:
            self.apply()

    def apply(self) -> None:
        """Applies every queued update."""
        pop = self._pending.popleft
        while True:
            try:
                apply, amount = pop()
            except IndexError:
                return
            apply(amount)

    def describe(self) -> Iterable[Any]:
        """No series of its own (and no collection when registered)."""
        return ()

    def collect(self) -> Iterable[Any]:
        """Applies what is queued, so the series collected after it are exact."""
        self.apply()
        return ()


class Deferred:
    """A pre-bound counter child whose ``inc`` goes through the tally."""

    __slots__ = ("_inc", "_tally")

    def __init__(self, child: Any, tally: Tally) -> None:
        self._inc: Apply = child.inc
        self._tally = tally

    def inc(self, amount: float = 1.0) -> None:
        """Counts ``amount`` (applied with the tally's next batch or scrape)."""
        self._tally.add(self._inc, amount)
