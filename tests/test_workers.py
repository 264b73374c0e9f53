"""``authority serve --workers N``: real processes sharing one port.

Both workers answer on the shared port, a revocation through one is refused by the other
within the staleness bound, a port another program holds is refused before any worker
starts, SIGTERM stops them all, a killed worker is started again, and a worker whose
parent was killed outright stops on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from authority.config import load_settings
from tests.conftest import TEST_KEY_ENCRYPTION_KEY

AUTHORITY = str(Path(sys.executable).with_name("authority"))
START_SECONDS = 60.0
# One channel per connection: grpc otherwise shares one connection among a process's channels.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# How many new connections it may take to reach both workers: each lands on one at random,
# so all of them on the same one has a chance of 2 ** -63.
CONNECTIONS_TO_REACH_BOTH = 64


class Served:
    """A running ``authority serve --workers``: its process and every line it has logged."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode())
                self._changed.notify_all()
        async with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    async def line(self, pattern: str, after: int = 0, within: float = START_SECONDS) -> re.Match[str]:
        """The first line from index ``after`` on that matches ``pattern``, waited for."""
        compiled = re.compile(pattern)

        def found() -> re.Match[str] | None:
            for text in self.lines[after:]:
                if text == "":
                    raise AssertionError(f"the output ended before {pattern!r}:\n{''.join(self.lines)[-3000:]}")
                if match := compiled.search(text):
                    return match
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(found), within)
            match = found()
            assert match is not None
            return match

    async def workers(self, count: int) -> dict[int, tuple[int, int]]:
        """Each worker's pid and metrics port, once all ``count`` serve."""
        await self.line(rf"listening on \S+ with {count} workers")
        found = {}
        for index in range(count):
            pid = int((await self.line(rf"worker {index} \(pid (\d+)\) listening on")).group(1))
            port = int((await self.line(rf"worker {index} metrics on http://127\.0\.0\.1:(\d+)/metrics")).group(1))
            found[index] = (pid, port)
        return found

    @property
    def target(self) -> str:
        match = re.search(r"listening on (\S+:\d+) with", "".join(self.lines))
        assert match is not None
        return match.group(1)


@asynccontextmanager
async def _serve(
    database_url: str, cwd: Path, *args: str, new_session: bool = False, **env: str
) -> AsyncIterator[Served]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", database_url, *args,
        stderr=asyncio.subprocess.PIPE, cwd=cwd, start_new_session=new_session,
        env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY, "AUTHORITY_LOG_FORMAT": "text",
             **env},
    )
    served = Served(process)
    try:
        yield served
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        await served._reader


async def _validations(port: int) -> tuple[int, float]:
    """A worker's pid (from ``authority_worker``) and the ValidateToken calls it answered."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    pid, calls = 0, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "authority_worker":
                pid = int(sample.labels["pid"])
            if sample.name == "authority_rpcs_total" and sample.labels["method"].endswith("/ValidateToken"):
                calls += sample.value
    return pid, calls


async def _validate(target: str, token: str) -> pb.ValidateTokenResponse:
    async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
        return await authority_pb2_grpc.TokenAuthorityStub(channel).ValidateToken(
            pb.ValidateTokenRequest(token=token), timeout=10
        )


async def _counts(ports: list[int]) -> list[float]:
    return [(await _validations(port))[1] for port in ports]


async def _answered_by(ports: list[int], before: list[float]) -> int:
    """Which worker's count went up since ``before`` (waited for: it is counted as the call ends)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = await _counts(ports)
        moved = [index for index, (a, b) in enumerate(zip(before, now, strict=True)) if b > a]
        if moved:
            assert len(moved) == 1, now
            return moved[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no worker counted the call")


async def test_two_workers_answer_on_one_port_and_share_revocations(database_url: str, tmp_path: Path) -> None:
    async with _serve(database_url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0") as served:
        workers = await served.workers(2)
        pids = {pid for pid, _ in workers.values()}
        assert len(pids) == 2 and served.process.pid not in pids
        ports = [port for _, port in workers.values()]
        assert {(await _validations(port))[0] for port in ports} == pids
        async with grpc.aio.insecure_channel(served.target) as channel:
            issued = await authority_pb2_grpc.TokenAuthorityStub(channel).IssueToken(
                pb.IssueTokenRequest(subject="alice", device_id="laptop"), timeout=10
            )

        # New connections until each worker has answered one, remembering one of each.
        reached: dict[int, grpc.aio.Channel] = {}
        try:
            for _ in range(CONNECTIONS_TO_REACH_BOTH):
                channel = grpc.aio.insecure_channel(served.target, options=OWN_CONNECTION)
                before = await _counts(ports)
                answer = await authority_pb2_grpc.TokenAuthorityStub(channel).ValidateToken(
                    pb.ValidateTokenRequest(token=issued.access_token), timeout=10
                )
                assert answer.valid
                index = await _answered_by(ports, before)
                if index in reached:
                    await channel.close()
                else:
                    reached[index] = channel
                if len(reached) == 2:
                    break
            assert set(reached) == {0, 1}, "every connection reached the same worker"

            # Revoked through worker 0, refused by worker 1 within the staleness bound.
            first, second = (authority_pb2_grpc.TokenAuthorityStub(reached[i]) for i in (0, 1))
            await first.RevokeToken(pb.RevokeTokenRequest(token=issued.access_token), timeout=10)
            revoked_at = time.monotonic()
            max_staleness = load_settings({}).max_staleness
            while True:
                answer = await second.ValidateToken(pb.ValidateTokenRequest(token=issued.access_token),
                                                    timeout=10)
                if not answer.valid:
                    break
                assert time.monotonic() - revoked_at < max_staleness, "worker 1 still accepts a revoked token"
                await asyncio.sleep(0.01)
            assert answer.reason == pb.INVALID_REASON_REVOKED
        finally:
            for channel in reached.values():
                await channel.close()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # exited; a zombie waits only for its reaper


async def _until_gone(pids: set[int], within: float) -> None:
    deadline = time.monotonic() + within
    while not all(_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
        await asyncio.sleep(0.05)


async def test_sigterm_stops_every_worker_gracefully(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0") as served:
        pids = {pid for pid, _ in (await served.workers(2)).values()}

        served.process.send_signal(signal.SIGTERM)

        assert await asyncio.wait_for(served.process.wait(), 30) == 0
        await _until_gone(pids, 1)  # the parent waited for them
        await served._reader
        output = "".join(served.lines)
        assert output.count("authority.api.server: stopped") == 2
        assert "Traceback" not in output and " ERROR " not in output


def _signals(pid: int, field: str) -> int:
    """A process's signal mask ``field`` (SigBlk, SigIgn, SigCgt) from /proc; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    match = re.search(rf"^{field}:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return int(match.group(1), 16) if match else 0


async def _until_python_catches_sigint(pid: int) -> None:
    """Waits until a just-spawned worker's interpreter has installed its own SIGINT
    handler (KeyboardInterrupt) and the worker has not yet ignored SIGINT: the window in
    which a Ctrl-C used to end it in a traceback."""
    bit = 1 << (signal.SIGINT - 1)
    deadline = time.monotonic() + START_SECONDS
    while not _signals(pid, "SigCgt") & bit:
        assert not _signals(pid, "SigIgn") & bit, "the worker was past its start before it could be signalled"
        assert time.monotonic() < deadline, "the worker's interpreter never caught SIGINT"
        await asyncio.sleep(0.002)


def _group(leader: int) -> set[int]:
    """The live processes of the process group ``leader`` leads."""
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if fields[2] == str(leader) and fields[0] not in ("Z", "X"):
                    members.add(int(entry.name))
    return members


async def test_a_ctrl_c_reaching_a_starting_worker_is_dropped_not_a_traceback(tmp_path: Path) -> None:
    # Regression: a SIGINT landing while a worker still imported ended it in a
    # KeyboardInterrupt traceback, and the start failed.
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0") as served:
        pid = int((await served.line(r"worker 0 started \(pid (\d+)\)")).group(1))
        await _until_python_catches_sigint(pid)

        os.kill(pid, signal.SIGINT)

        assert (await served.workers(2))[0][0] == pid  # it went on to serve
        served.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.process.wait(), 30) == 0
        await served._reader
        output = "".join(served.lines)
        assert "Traceback" not in output and "KeyboardInterrupt" not in output


async def test_a_ctrl_c_while_workers_are_spawned_stops_them_all_without_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "3", new_session=True) as served:
        pid = int((await served.line(r"worker 1 started \(pid (\d+)\)")).group(1))
        await _until_python_catches_sigint(pid)

        os.killpg(served.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does

        assert await asyncio.wait_for(served.process.wait(), 30) == 0
        deadline = time.monotonic() + 5
        while left := _group(served.process.pid):
            assert time.monotonic() < deadline, f"left running: {left}"
            await asyncio.sleep(0.05)
        await served._reader
        output = "".join(served.lines)
        assert "Traceback" not in output and "KeyboardInterrupt" not in output


async def test_a_killed_worker_is_started_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0") as served:
        old_pid, _ = (await served.workers(2))[1]
        mark = len(served.lines)

        os.kill(old_pid, signal.SIGKILL)

        await served.line(rf"worker 1 \(pid {old_pid}\) exited with status -9 .*starting it again", mark)
        new_pid = int((await served.line(r"worker 1 \(pid (\d+)\) listening on", mark)).group(1))
        port = int((await served.line(r"worker 1 metrics on http://127\.0\.0\.1:(\d+)/metrics", mark)).group(1))
        assert new_pid != old_pid
        assert (await _validations(port))[0] == new_pid
        assert served.process.returncode is None


async def test_workers_stop_when_their_parent_is_killed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0") as served:
        pids = {pid for pid, _ in (await served.workers(2)).values()}

        served.process.kill()

        await served.process.wait()
        await _until_gone(pids, 30)


def _holder(reuse_port: bool) -> socket.socket:
    holder = socket.socket()
    if reuse_port:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "holder-with-so-reuseport"])
async def test_a_port_another_program_holds_is_refused_not_shared(reuse_port: bool, tmp_path: Path) -> None:
    database = tmp_path / "authority.db"
    with _holder(reuse_port) as holder:
        port = holder.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            AUTHORITY, "serve", "--workers", "2", "--listen", f"127.0.0.1:{port}",
            "--database-url", f"sqlite+aiosqlite:///{database}",
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY},
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 2
    assert f"authority serve: listen: 127.0.0.1:{port} is already in use" in err.decode()
    assert "worker 0 started" not in err.decode()
    assert not database.exists()


async def test_a_taken_http_port_is_refused_too(tmp_path: Path) -> None:
    with _holder(reuse_port=True) as holder:
        port = holder.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            AUTHORITY, "serve", "--workers", "2", "--listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{port}",
            "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}",
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY},
        )
        _, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 2
    assert f"authority serve: http_listen: 127.0.0.1:{port} is already in use" in err.decode()


async def test_a_worker_that_cannot_start_fails_the_start(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "authority.db"
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--workers", "2", "--listen", "127.0.0.1:0", "--database-url", f"sqlite+aiosqlite:///{path}",
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY},
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)

    text = err.decode()
    assert process.returncode == 2
    assert f"worker 0: cannot use the database (SQLite file {path}): the directory {path.parent} does not exist" in text
    assert "worker 1 started" not in text  # the first starts alone, and its failure ends the start
    assert "Traceback" not in text


async def test_workers_auto_is_one_per_core(tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    assert load_settings({"AUTHORITY_WORKERS": "auto"}).workers == cores
    if not 2 <= cores <= 4:
        pytest.skip(f"serving one worker per core takes {cores} processes here")
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--metrics-listen", "127.0.0.1:0", AUTHORITY_WORKERS="auto") as served:
        assert len({pid for pid, _ in (await served.workers(cores)).values()}) == cores


@pytest.mark.parametrize("text", ["0", "-1", "65", "many"])
def test_a_bad_worker_count_is_refused_naming_the_option(text: str) -> None:
    from authority.errors import ConfigError

    with pytest.raises(ConfigError, match="^workers: "):
        load_settings({"AUTHORITY_WORKERS": text})


async def test_the_http_port_is_shared_by_the_workers_too(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    async with _serve(url, tmp_path, "--workers", "2", "--metrics-listen", "127.0.0.1:0",
                      "--http-listen", "127.0.0.1:0") as served:
        await served.workers(2)
        ports = {int(match) for match in re.findall(r"HTTP endpoints on http://127\.0\.0\.1:(\d+)", "".join(served.lines))}
        assert len(ports) == 1  # both workers on the one port the parent picked
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.get(f"http://127.0.0.1:{ports.pop()}/healthz")
        assert answer.json() == {"status": "SERVING"}


def test_each_worker_gets_a_metrics_port_of_its_own() -> None:
    from authority.api.workers import worker_settings

    settings = load_settings({"AUTHORITY_WORKERS": "3", "AUTHORITY_METRICS_LISTEN": "9100"})
    each = worker_settings(settings, "127.0.0.1:50051", "")
    assert [s.metrics_listen for s in each] == ["127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102"]
    picked = worker_settings(load_settings({"AUTHORITY_WORKERS": "2", "AUTHORITY_METRICS_LISTEN": "127.0.0.1:0"}),
                             "127.0.0.1:50051", "")
    assert [s.metrics_listen for s in picked] == ["127.0.0.1:0", "127.0.0.1:0"]
    assert {s.listen for s in each} == {"127.0.0.1:50051"}
