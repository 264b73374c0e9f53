"""Every core (``serve --workers``) and sign-ins on SQLite.

- ValidateToken warm against ``authority serve --workers 1`` and ``--workers 2``, in
  interleaved rounds, each server's CPU counted over its whole process tree (parent and
  workers). The load comes from :data:`LOAD_PROCESSES` processes, one connection each: the
  kernel gives each connection to one worker, so the share each worker served is reported.
- IssueToken replacing a device on SQLite, with 1 and 2 workers (one file, one writer).
- The time of an ``fdatasync`` of a 4 KiB append in the directory the database lives in:
  with ``synchronous=FULL`` in WAL mode every commit waits for one, so its inverse is the
  most sign-ins and revocations per second SQLite can acknowledge durably here.

``python -m bench.workers`` runs these alone, with the full run's sizes (``--tiny``: seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc

from bench.load import Outcome, Phase, merge, run_phase, stderr_progress
from bench.report import Goal, at_least
from bench.servers import ServedAuthority, start_authority

if TYPE_CHECKING:
    from bench.run import Run

# Four connections over two workers: all four on one worker has a chance of 1 in 8, and
# the per-worker share in the report shows it when it happens.
LOAD_PROCESSES = 4
FSYNC_SAMPLES = 500


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers and multiprocessing's resource tracker)."""
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").iterdir():
            try:
                pids += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                pass
        index += 1
    return pids


def _cpu_by_process(pid: int) -> dict[int, float]:
    """CPU seconds (user and system) of ``pid`` and of each of its descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        result[each] = (int(fields[11]) + int(fields[12])) / ticks
    return result


def _listeners(port: int) -> int:
    """How many sockets listen on ``port`` (each worker has its own, with SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                count += 1
    return count


def start_workers(run: Run, url: str, name: str, workers: int) -> ServedAuthority:
    """``authority serve --workers N``, returned once all N listen."""
    run.say(f"starting authority ({name}, {workers} worker(s)) ...")
    served = start_authority(url, run.workdir, name, run.server_log_level, env={"AUTHORITY_WORKERS": str(workers)})
    port = int(served.target.rpartition(":")[2])
    deadline = time.monotonic() + 120
    while _listeners(port) < workers:
        if served.process.poll() is not None or time.monotonic() > deadline:
            served.stop()
            raise RuntimeError(f"authority serve ({name}) did not start {workers} workers")
        time.sleep(0.01)
    return served


def fsync_seconds(directory: Path, samples: int = FSYNC_SAMPLES) -> list[float]:
    """Sorted times of ``fdatasync`` after a 4 KiB append, in ``directory``: what one SQLite
    commit waits for at ``synchronous=FULL`` in WAL mode (SQLite syncs with fdatasync on Linux)."""
    descriptor, path = tempfile.mkstemp(dir=directory, prefix="fsync-")
    page = os.urandom(4096)
    times = []
    try:
        for _ in range(samples):
            os.write(descriptor, page)
            started = time.perf_counter()
            os.fdatasync(descriptor)
            times.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        os.unlink(path)
    return sorted(times)


def _interleaved(run: Run, specs: list[tuple[str, ServedAuthority, Phase]]) -> dict[str, Outcome]:
    """Each phase once per round, rounds one after another; CPU charged over process trees."""
    outcomes: dict[str, list[Outcome]] = {name: [] for name, _, _ in specs}
    cpu: dict[str, dict[int, float]] = {name: {} for name, _, _ in specs}
    for number in range(run.size.rounds):
        for name, server, phase in specs:
            run.say(f"{name} (round {number + 1} of {run.size.rounds}) ...")
            before = _cpu_by_process(server.process.pid)
            outcomes[name].append(run_phase(phase, run.say))
            for pid, seconds in _cpu_by_process(server.process.pid).items():
                cpu[name][pid] = cpu[name].get(pid, 0.0) + seconds - before.get(pid, 0.0)
    merged = {}
    for name, _, _ in specs:
        outcome = merged[name] = merge(name, outcomes[name])
        total = sum(cpu[name].values())
        # The busiest processes are the workers; the parent and resource tracker idle.
        shares = sorted((seconds / total for seconds in cpu[name].values()), reverse=True) if total else []
        run.throughput[name] = {
            **outcome.summary(), "server_cpu_us_per_call": round(total / max(outcome.calls, 1) * 1e6, 1),
            "cpu_share_per_process": [round(share, 3) for share in shares if share >= 0.01],
        }
        run.say(f"  {name}: {outcome.rate:,.0f}/s, p50 {outcome.percentile(50) * 1000:.3f} ms, "
                f"{total / max(outcome.calls, 1) * 1e6:,.0f} us server CPU per call, CPU shares {shares[:3]}")
    return merged


async def _sign_in_all(target: str, pairs: list[tuple[str, str]]) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = authority_pb2_grpc.TokenAuthorityStub(channel)
        token = ""
        for start in range(0, len(pairs), 32):
            issued = await asyncio.gather(*(
                stub.IssueToken(pb.IssueTokenRequest(subject=s, device_id=d), timeout=30)
                for s, d in pairs[start : start + 32]
            ))
            token = issued[-1].access_token
        return token


async def measure(run: Run) -> list[Goal]:
    """ValidateToken with 1 and 2 workers, SQLite sign-ins with 1 and 2, and fsync."""
    size = run.size
    database = run.workdir / "workers.db"
    url = f"sqlite+aiosqlite:///{database}"
    # One after the other: the first creates the schema and a key, the second finds them.
    servers = {count: start_workers(run, url, f"workers-{count}", count) for count in (1, 2)}
    try:
        token = await _sign_in_all(servers[1].target, [("bench-workers", "laptop")])
        names = {count: f"ValidateToken warm, --workers {count}" for count in servers}
        specs = [
            (names[count], server, Phase(names[count], server.target, "validate", [token], LOAD_PROCESSES,
                                         size.concurrency, size.seconds))
            for count, server in servers.items()
        ]
        results = _interleaved(run, specs)

        subjects = [f"bench-workers-{secrets.token_hex(3)}-{n}" for n in range(size.sign_in_subjects)]
        run.say(f"signing {len(subjects)} subjects in on a first device (SQLite) ...")
        await _sign_in_all(servers[1].target, [(s, "device-b") for s in subjects])
        items = [f"{s} device-a" for s in subjects] + [f"{s} device-b" for s in subjects]
        sign_in_names = {count: f"IssueToken replacing a device, SQLite, --workers {count}" for count in servers}
        sign_ins = _interleaved(run, [
            (sign_in_names[count], server, Phase(sign_in_names[count], server.target, "issue", items, size.workers,
                                                 size.concurrency, size.seconds))
            for count, server in servers.items()
        ])
    finally:
        for server in servers.values():
            server.stop()
    run.say(f"timing {FSYNC_SAMPLES} fdatasync calls beside the database ...")
    syncs = fsync_seconds(database.parent)
    p50 = statistics.median(syncs)
    run.facts["fdatasync of a 4 KiB append (bench directory), p50 / p99"] = (
        f"{p50 * 1e6:.0f} us / {syncs[int(len(syncs) * 0.99) - 1] * 1e6:.0f} us"
    )
    run.facts["SQLite durable commits per second at most (1 / fdatasync p50)"] = f"{1 / p50:,.0f}/s"
    one, two = results[names[1]], results[names[2]]
    cpu_one, cpu_two = (run.throughput[names[count]]["server_cpu_us_per_call"] for count in (1, 2))
    run.facts["ValidateToken warm, --workers 2 / --workers 1"] = (
        f"{two.rate / one.rate:.2f}x ({two.rate:,.0f}/s against {one.rate:,.0f}/s; server CPU per call "
        f"{cpu_two:,.0f} us against {cpu_one:,.0f} us)"
    )
    run.facts["IssueToken on SQLite, --workers 2 / --workers 1"] = (
        f"{sign_ins[sign_in_names[2]].rate / sign_ins[sign_in_names[1]].rate:.2f}x"
    )
    run.facts["IssueToken on SQLite (--workers 1) / durable commit ceiling"] = (
        f"{sign_ins[sign_in_names[1]].rate * p50:.2f}"
    )
    return [
        at_least("ValidateToken warm, --workers 2 / --workers 1", two.rate / one.rate, 1.0,
                 note=f"{os.cpu_count()} cores shared with {LOAD_PROCESSES} load processes"),
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.workers``: these measurements alone, printed as the report's table."""
    from bench.run import FULL, TINY, Run

    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long run")
    parser.add_argument("--server-log-level", default="INFO")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="authority-bench-") as workdir:
        run = Run(TINY if args.tiny else FULL, Path(workdir), args.server_log_level.upper(), stderr_progress)
        goals = asyncio.run(measure(run))
    rows = [f"{name}: {result}" for name, result in run.throughput.items()]
    rows += [f"{name}: {value}" for name, value in run.facts.items()]
    rows += [" | ".join(goal.row()) + (f" ({goal.note})" if goal.note else "") for goal in goals]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
