"""Sign-ins on PostgreSQL: IssueToken calls per second with one and two replicas, server
CPU per replacing sign-in against a bare grpc.aio server's empty call (at the bare
server's own rate, the goal, and paced to the sign-ins' rate, reported), and where a
sign-in's time goes, stage by stage.

``python -m bench.signins --database-url postgresql+asyncpg://postgres@127.0.0.1/postgres``

The bare server here is a minimal one of this module's own (the health service only, no
interceptors, no logging, on uvloop). The stage timers wrap the store's methods in this process
only, for an in-process run of sign-ins: the server code carries no timer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.load import Outcome, Phase, run_phase
from bench.report import Goal, at_most, table
from bench.servers import BENCH_KEY_ENCRYPTION_KEY, Databases, _free_port, _serving, cpu_seconds, start_authority

SUBJECTS = 64
# Reported beside the goal: a server's CPU per call rises as its rate falls (each wake of
# its loop finds fewer calls to share it), and sign-ins run at a fraction of the bare
# server's rate, so this compares the two at the sign-ins' own rate.
PACED = "IssueToken (1 replica) / bare call paced to the sign-in rate, by server CPU"
# On uvloop, as the authority and bench/bare.py's floor.
BARE_SERVER = """
import asyncio, sys, grpc, uvloop
from grpc_health.v1 import health, health_pb2_grpc
async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main())
"""


def _replacing_sign_ins(count: int) -> list[str]:
    # Each subject signs in from a new device every time: every sign-in replaces one.
    return [f"bench-subject-{n % SUBJECTS} device-{n}" for n in range(count)]


def _phases(targets: list[str], seconds: float, concurrency: int) -> tuple[list[Outcome], float]:
    """Runs one IssueToken phase against each target at once; returns them and the wall time."""
    outcomes: list[Outcome] = []
    items = _replacing_sign_ins(100_000)

    def one(n: int, target: str) -> None:
        phase = Phase(f"issue-{n}", target, "issue", items[n::len(targets)], 1, concurrency, seconds)
        outcomes.append(run_phase(phase, lambda _: None))

    threads = [threading.Thread(target=one, args=(n, t)) for n, t in enumerate(targets)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, time.monotonic() - started


def _bare_floor(seconds: float, concurrency: int, rate: float = 0.0) -> tuple[float, float]:
    """(calls per second, server CPU µs per call) of the bare server's health Check; with
    ``rate``, its load paced to that many calls per second."""
    target = f"127.0.0.1:{_free_port()}"
    process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, target])
    try:
        deadline = time.monotonic() + 60
        while not _serving(target):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare server did not start")
            time.sleep(0.01)
        cpu = cpu_seconds(process.pid)
        outcome = run_phase(Phase("bare", target, "health", [""], 1, concurrency, seconds, rate=rate),
                            lambda _: None)
        return outcome.rate, (cpu_seconds(process.pid) - cpu) / max(outcome.calls, 1) * 1e6
    finally:
        process.terminate()
        process.wait(timeout=15)


async def _throughput(url: str, replicas: int, seconds: float, concurrency: int, workdir: Path) -> dict[str, float]:
    servers = [start_authority(url, workdir, f"signins-{replicas}-{n}", log_level="WARNING") for n in range(replicas)]
    try:
        cpu = [server.cpu_seconds() for server in servers]
        outcomes, _ = await asyncio.to_thread(_phases, [s.target for s in servers], seconds, concurrency)
        calls = sum(o.calls for o in outcomes)
        spent = sum(server.cpu_seconds() - before for server, before in zip(servers, cpu, strict=True))
        return {
            "sign_ins_per_second": sum(o.rate for o in outcomes),
            "errors": sum(o.errors for o in outcomes),
            "server_cpu_us_per_sign_in": spent / max(calls, 1) * 1e6,
            "p50_ms": sorted(l for o in outcomes for l in o.latencies)[calls // 2] * 1e3 if calls else 0.0,
        }
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def _timed(owner: Any, names: list[str], spent: dict[str, float]) -> Iterator[None]:
    """Wraps ``owner``'s methods ``names`` (coroutines or not) with timers, for the block."""
    originals = {name: getattr(owner, name) for name in names}

    def wrap(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        if asyncio.iscoroutinefunction(method):
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await method(*args, **kwargs)
                finally:
                    spent[name] += time.perf_counter() - started
            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return timed

    for name, method in originals.items():
        setattr(owner, name, wrap(name, method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(owner, name, method)


async def _stages(url: str, count: int) -> dict[str, float]:
    """Mean µs per replacing sign-in in each stage, one sign-in at a time, in process."""
    from authority.app import Authority
    from authority.config import Settings
    from authority.sessions import Sessions
    from authority.store.signin import SignInUnit

    settings = Settings(listen="127.0.0.1:0", database_url=url, key_encryption_key=BENCH_KEY_ENCRYPTION_KEY)
    authority = await Authority.open(settings)
    # Every stage is shown, 0 where a sign-in has none (the read, for these).
    spent: dict[str, float] = defaultdict(float, dict.fromkeys(("live_sessions", "_tokens", "write"), 0.0))
    try:
        for n in range(20):  # warm the pool and the statement caches
            await authority.sessions.sign_in(f"stage-{n % 4}", f"warm-{n}")
        # The read (one round trip; none for these sign-ins on PostgreSQL, which replace
        # unread under the default policy), the token, the write with its commit (one round
        # trip); the rest is the pool's checkout, the policy and the mirror.
        with _timed(SignInUnit, ["live_sessions", "write"], spent), _timed(Sessions, ["_tokens"], spent):
            started, cpu = time.perf_counter(), time.process_time()
            for n in range(count):
                await authority.sessions.sign_in(f"stage-{n % 4}", f"device-{n}")
            total, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await authority.store.close()
    stages = {name: seconds / count * 1e6 for name, seconds in spent.items()}
    stages["checkout_policy_and_rest"] = total / count * 1e6 - sum(stages.values())
    stages["total"] = total / count * 1e6
    # This process's CPU per sign-in without gRPC (the follower's reads included).
    stages["process_cpu"] = cpu / count * 1e6
    return stages


async def main(admin_url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Measures everything once; returns the report rows."""
    databases = Databases(admin_url)
    report: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            report["bare_floor"] = dict(zip(("calls_per_second", "server_cpu_us_per_call"),
                                            _bare_floor(seconds, concurrency), strict=True))
            for replicas in (1, 2):
                url = await databases.create(f"signins{replicas}")
                report[f"replicas_{replicas}"] = await _throughput(url, replicas, seconds, concurrency, Path(workdir))
            report["stages_us"] = await _stages(await databases.create("stages"), 300)
    finally:
        await databases.drop_all()
    floor = report["bare_floor"]["server_cpu_us_per_call"]
    one = report["replicas_1"]
    report["sign_in_cpu_over_bare"] = one["server_cpu_us_per_sign_in"] / floor
    _, paced = await asyncio.to_thread(_bare_floor, seconds, concurrency, one["sign_ins_per_second"])
    report["sign_in_cpu_over_bare_paced_to_its_rate"] = one["server_cpu_us_per_sign_in"] / paced
    return report


SIGN_INS = "sign_ins"
STAGES = "sign_in_stages"
table(SIGN_INS, ("PostgreSQL sign-ins (each replaces a device)", "sign-ins/s", "server CPU us/sign-in", "p50 ms",
                 "errors"),
      lambda r: (f"{r['sign_ins_per_second']:,.0f}", f"{r['server_cpu_us_per_sign_in']:,.0f}", f"{r['p50_ms']:.1f}",
                 f"{r['errors']:.0f}"),
      right=(1, 2, 3, 4))
table(STAGES, ("a sign-in's stages, in process, one at a time", "mean us"), lambda r: (f"{r['us']:,.0f}",),
      right=(1,))


async def measure(run: Any, databases: Databases, bare_cpu_us: float) -> list[Goal]:
    """The report's rows: sign-ins per second with 1 and 2 replicas, the stage breakdown,
    and the goal on server CPU per sign-in against ``bare_cpu_us`` (the bare server's
    empty call, measured in the same run)."""
    size = run.size
    rows = run.rows(SIGN_INS)
    for replicas in (1, 2):
        run.say(f"sign-ins on PostgreSQL, {replicas} replica(s) ...")
        url = await databases.create(f"signins{replicas}")
        rows[f"{replicas} replica(s)"] = await _throughput(url, replicas, size.seconds, size.concurrency, run.workdir)
    run.say("timing a sign-in's stages ...")
    stages = await _stages(await databases.create("stages"), 30 if size.seconds < 5 else 300)
    run.rows(STAGES).update({name: {"us": us} for name, us in stages.items()})
    one = rows["1 replica(s)"]
    spent = one["server_cpu_us_per_sign_in"]
    run.say("the bare server paced to the 1-replica sign-in rate ...")
    rate, paced_us = await asyncio.to_thread(_bare_floor, size.seconds, size.concurrency, one["sign_ins_per_second"])
    run.facts[PACED] = f"{spent / paced_us:.2f}x ({spent:,.0f} us against {paced_us:,.0f} us at {rate:,.0f} calls/s)"
    name = "IssueToken replacing a device (1 replica) / bare grpc.aio call, by server CPU"
    return [at_most(name, spent / bare_cpu_us, 3, "×", f"{spent:,.0f} us against {bare_cpu_us:,.0f} us")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get(
        "AUTHORITY_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(arguments.database_url, arguments.seconds, arguments.concurrency)), indent=2))
