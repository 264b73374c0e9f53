"""The servers a benchmark runs against, each in a process of its own: the authority
(``authority serve``, exactly as an operator starts it) and databases to put under it."""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

@dataclasses.dataclass
class ServedAuthority:
    """A running ``authority serve`` process."""

    process: subprocess.Popen[bytes]
    target: str
    # From starting the process to its "listening" line: imports, schema check, keys,
    # and loading every live revocation.
    startup_seconds: float
    log_path: Path
    # The HTTP endpoints' base URL, when started with them.
    http_url: str = ""

    def rss_bytes(self) -> int:
        """The process's resident memory now."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the process has used so far."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        """SIGTERM, then a graceful stop within 15 s (SIGKILL after that)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process ``pid`` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


BENCH_KEY_ENCRYPTION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def start_authority(
    database_url: str, workdir: Path, name: str, log_level: str = "INFO", http: bool = False,
    source: Path | None = None, env: dict[str, str] | None = None,
) -> ServedAuthority:
    """Starts ``authority serve`` on a free loopback port and waits until its health
    service answers SERVING (whatever the log level, which may hide the start-up lines);
    with ``http``, the HTTP endpoints too, on another free port.

    ``source``: run the server (and client package) from that source tree instead, an
    earlier version exported by :func:`bench.previous.export`. ``env``: more ``AUTHORITY_*``
    settings (``AUTHORITY_WORKERS``, say)."""
    log_path = workdir / f"{name}.log"
    paths = {} if source is None else {"PYTHONPATH": f"{source}{os.pathsep}{source / 'clients' / 'python'}"}
    settings = env or {}
    env = {
        **os.environ,
        **paths,
        "AUTHORITY_LOG_LEVEL": log_level,
        "AUTHORITY_LOG_FORMAT": "json",
        # As in production: signing keys sealed under a key-encryption key.
        "AUTHORITY_KEY_ENCRYPTION_KEY": BENCH_KEY_ENCRYPTION_KEY,
        **settings,
    }
    target = f"127.0.0.1:{_free_port()}"
    http_url = ""
    if http:
        http_target = f"127.0.0.1:{_free_port()}"
        env["AUTHORITY_HTTP_LISTEN"] = http_target
        http_url = f"http://{http_target}"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "authority.cli", "serve", "--listen", target, "--database-url", database_url],
            stdout=subprocess.DEVNULL, stderr=log_file, cwd=workdir, env=env,
        )
    deadline = started + 180
    while not _serving(target):
        if process.poll() is not None or time.perf_counter() > deadline:
            process.kill()
            raise RuntimeError(f"authority serve ({name}) did not start:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.01)
    return ServedAuthority(process, target, time.perf_counter() - started, log_path, http_url)


def driver_url(url: str) -> str:
    """A SQLAlchemy asyncpg URL as asyncpg itself takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class Databases:
    """Fresh PostgreSQL databases for one benchmark run, all dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._created: list[str] = []

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(driver_url(self._admin_url), timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create(self, purpose: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"authority_bench_{purpose}_{secrets.token_hex(4)}"
        await self._admin(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self._admin_url.rsplit("/", 1)[0] + "/" + name

    async def drop_all(self) -> None:
        """Drops every database this run created."""
        for name in self._created:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()

    async def server_version(self) -> str:
        """The PostgreSQL server's version string."""
        connection = await asyncpg.connect(driver_url(self._admin_url), timeout=10)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()


async def add_revocations(database_url: str, count: int, expires_at: float) -> float:
    """Appends ``count`` live revocations straight into the store's log table, in one
    server-side batch insert; returns the seconds it took. Session ids have the length
    of real ones (22 characters), so the mirror holds what it would in production; each
    was replaced by a sign-in on a device with a 16-character id and a 40-character name."""
    if count <= 0:
        return 0.0
    connection = await asyncpg.connect(driver_url(database_url), timeout=10)
    started = time.perf_counter()
    try:
        await connection.execute(
            """
            INSERT INTO revocation_log (session_id, token_id, subject, reason, revoked_at, expires_at, cause,
                                     replaced_by_device_id, replaced_by_device_name)
            SELECT substr(md5(random()::text || g::text), 1, 22), NULL, 'bench-' || g, 'bench', $1, $2, 1,
                   substr(md5(g::text), 1, 16), 'Firefox 133 on Linux x86_64, ' || lpad(g::text, 11, '0')
            FROM generate_series(1, $3::int) AS g
            """,
            time.time(), expires_at, count,
        )
    finally:
        await connection.close()
    return time.perf_counter() - started

