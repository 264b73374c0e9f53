"""Load from separate processes: each worker runs its own event loop and channel, keeps a
fixed number of calls in flight, and reports every call's latency.

Workers are started with the ``spawn`` method (grpc does not survive ``fork`` in a
process that has already used it), get ready (connect, a few warm-up calls), wait at a
barrier so they all start together, then call until the phase's time is up or, for
a phase that must never repeat a request (cold tokens), until their requests run out.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import multiprocessing
import multiprocessing.synchronize
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

WARMUP_CALLS = 20
# The request a bound token's proof is made for, in the validate-bound phases (bench/proofs.py).
PROOF_METHOD = "POST"
PROOF_URI = "https://bench.example.com/bench.v1.Bench/Call"


@dataclasses.dataclass(frozen=True)
class Phase:
    """One load run: which RPC, with what requests, how hard and for how long."""

    name: str
    target: str
    # "health", "validate", "validate-bound" (a bound token and its proof), "check" (ext_authz), "issue", "http" (GETs, bench.http_load),
    # or "introspect" (HTTP: target is the base URL)
    rpc: str
    # validate, check, http: tokens; validate-bound: "token proof" pairs; issue: "subject device" pairs; health: unused
    items: Sequence[str]
    workers: int
    concurrency: int
    seconds: float
    # Each item at most once (cold tokens): a worker stops when its share runs out.
    once: bool = False
    # Calls per second across the workers, each call sent no sooner than its turn (0:
    # as fast as the calls in flight allow). The server's CPU per call depends on its
    # rate (the more calls one wake of its loop finds, the less each costs), so a paced
    # phase compares servers at the same rate.
    rate: float = 0.0


@dataclasses.dataclass
class Outcome:
    """What a phase measured."""

    name: str
    calls: int
    errors: int
    seconds: float
    latencies: list[float]  # seconds, sorted

    @property
    def rate(self) -> float:
        """Successful calls per second."""
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, max(0, round(p / 100 * len(self.latencies)) - 1))
        return self.latencies[index]

    def summary(self) -> dict[str, Any]:
        """The numbers a report keeps (latencies in milliseconds)."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
        }


def merge(name: str, outcomes: Sequence[Outcome]) -> Outcome:
    """One outcome from several runs of the same phase (rounds run one after another)."""
    return Outcome(
        name=name,
        calls=sum(o.calls for o in outcomes),
        errors=sum(o.errors for o in outcomes),
        seconds=sum(o.seconds for o in outcomes),
        latencies=sorted(latency for o in outcomes for latency in o.latencies),
    )


def _requests(rpc: str, items: Sequence[str]) -> tuple[list[Any], Callable[[Any], Any]]:
    # Imported here, in the worker after spawn, like everything grpc.
    from authority_client.v1 import authority_pb2 as pb
    from grpc_health.v1 import health_pb2

    if rpc == "health":
        return [health_pb2.HealthCheckRequest()], lambda stubs: stubs[1].Check
    if rpc == "validate":
        return [pb.ValidateTokenRequest(token=t) for t in items], lambda stubs: stubs[0].ValidateToken
    if rpc == "validate-bound":
        pairs = [item.split(" ", 1) for item in items]
        return [
            pb.ValidateTokenRequest(
                token=t, proof=pb.ProofOfPossession(proof=p, http_method=PROOF_METHOD, http_uri=PROOF_URI)
            )
            for t, p in pairs
        ], lambda stubs: stubs[0].ValidateToken
    if rpc == "check":
        return [_check_request(t) for t in items], lambda stubs: stubs[2].Check
    pairs = [item.split(" ", 1) for item in items]
    return (
        [pb.IssueTokenRequest(subject=s, device_id=d) for s, d in pairs],
        lambda stubs: stubs[0].IssueToken,
    )


def _check_request(token: str) -> Any:
    """An ext_authz CheckRequest as Envoy sends one for ``GET /orders`` with the token."""
    from tests.support.checks import check_request

    return check_request(f"Bearer {token}")


async def _drive(
    phase: Phase, items: Sequence[str], ready: multiprocessing.synchronize.Barrier, done: Any
) -> tuple[int, int, float, array.array[float]]:
    import grpc
    from authority_client.v1 import authority_pb2_grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc
    from grpc_health.v1 import health_pb2_grpc

    requests, pick = _requests(phase.rpc, items)
    async with grpc.aio.insecure_channel(phase.target) as channel:
        stubs = (authority_pb2_grpc.TokenAuthorityStub(channel), health_pb2_grpc.HealthStub(channel),
                 external_auth_pb2_grpc.AuthorizationStub(channel))
        call = pick(stubs)
        from grpc_health.v1 import health_pb2

        for _ in range(WARMUP_CALLS):
            await stubs[1].Check(health_pb2.HealthCheckRequest(), timeout=30)  # type: ignore[attr-defined]
        if not phase.once:  # a once-only phase must not spend a request before the clock starts
            for i in range(WARMUP_CALLS):
                await call(requests[i % len(requests)], timeout=30)
        await asyncio.to_thread(ready.wait)
        latencies: array.array[float] = array.array("d")
        errors = 0
        next_index = 0
        started = time.perf_counter()
        deadline = started + phase.seconds
        total = len(requests)
        # This worker's share of the rate: the n-th call no sooner than started + n * gap.
        gap = phase.workers / phase.rate if phase.rate > 0 else 0.0

        async def caller() -> None:
            nonlocal next_index, errors
            clock = time.perf_counter
            while True:
                if clock() >= deadline or (phase.once and next_index >= total):
                    return
                request = requests[next_index % total]
                turn = started + next_index * gap
                if turn >= deadline:
                    return
                next_index += 1
                if turn > clock():
                    await asyncio.sleep(turn - clock())
                begun = clock()
                try:
                    await call(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(clock() - begun)
                done.value += 1

        await asyncio.gather(*(caller() for _ in range(phase.concurrency)))
        elapsed = time.perf_counter() - started
    return len(latencies), errors, elapsed, latencies


def _worker(phase: Phase, items: Sequence[str], ready: Any, done: Any, results: Any) -> None:
    from bench import http_load, introspect

    try:
        if phase.rpc == "introspect":
            outcome = asyncio.run(introspect.drive(phase, items, ready, done))
        elif phase.rpc == "http":
            outcome = asyncio.run(http_load.drive(phase, items, ready, done))
        else:
            outcome = asyncio.run(_drive(phase, items, ready, done))
        calls, errors, elapsed, latencies = outcome
        results.put((calls, errors, elapsed, latencies.tobytes()))
    except BaseException as error:  # reported by the parent, not lost in a child
        results.put(("error", repr(error), 0, b""))
        raise


def run_phase(phase: Phase, progress: Callable[[str], None]) -> Outcome:
    """Runs ``phase`` from ``phase.workers`` processes and gathers what they measured."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(phase.workers + 1)
    done = context.Value("q", 0, lock=False)
    results = context.Queue()
    shares = [list(phase.items[i :: phase.workers]) or list(phase.items) for i in range(phase.workers)]
    processes = [
        context.Process(target=_worker, args=(phase, shares[i], ready, done, results), daemon=True)
        for i in range(phase.workers)
    ]
    for process in processes:
        process.start()
    ready.wait(timeout=120)
    started = time.monotonic()
    gathered: list[Any] = []
    next_report = started + 1.0
    while len(gathered) < phase.workers:
        try:
            gathered.append(results.get(timeout=0.2))
        except Exception:
            pass
        now = time.monotonic()
        if now >= next_report and len(gathered) < phase.workers:
            elapsed = now - started
            progress(f"  {phase.name}: {elapsed:4.1f}s  {done.value:>9,} calls  {done.value / elapsed:>9,.0f}/s")
            next_report = now + 1.0
        if now - started > phase.seconds + 120:
            raise RuntimeError(f"{phase.name}: workers did not finish")
    for process in processes:
        process.join(timeout=10)
    failures = [g[1] for g in gathered if g[0] == "error"]
    if failures:
        raise RuntimeError(f"{phase.name}: a load worker failed: {failures[0]}")
    latencies: list[float] = []
    for _, _, _, raw in gathered:
        chunk: array.array[float] = array.array("d")
        chunk.frombytes(raw)
        latencies.extend(chunk)
    latencies.sort()
    return Outcome(
        name=phase.name,
        calls=sum(g[0] for g in gathered),
        errors=sum(g[1] for g in gathered),
        # The workers ran side by side: the phase lasted as long as the slowest.
        seconds=max(g[2] for g in gathered),
        latencies=latencies,
    )


def stderr_progress(line: str) -> None:
    """Progress on stderr, so stdout keeps only the table."""
    print(line, file=sys.stderr, flush=True)
