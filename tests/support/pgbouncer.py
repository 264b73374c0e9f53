"""A real PgBouncer (the Debian package's) in transaction pooling mode, for tests.

    bouncer = PgBouncer.start("127.0.0.1", 5432, pool_size=3)   # every database, user postgres
    url = bouncer.url("mydb")        # postgresql+asyncpg://postgres@127.0.0.1:PORT/mydb
    bouncer.stop()

A few server connections serve every client, so two clients' transactions meet on one
server connection, as in production. Startup parameters other than PgBouncer's own are
refused (no ``ignore_startup_parameters``): a client that sends them fails at once. Runs
as the PostgreSQL user when the tests run as root (PgBouncer refuses root). Without the
``pgbouncer`` binary the tests fail under CI and skip, loudly, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.pgcluster import as_postgres, free_port, private_directory

START_TIMEOUT = 20.0


def pgbouncer_binary() -> str:
    """The pgbouncer executable; fails (CI) or skips loudly (elsewhere) without one."""
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if found is None:
        problem = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip("SKIPPING PGBOUNCER TESTS: " + problem)
    return found


class PgBouncer:
    """One running pgbouncer process in transaction pooling mode."""

    def __init__(self, root: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.port = port
        self.process = process

    @classmethod
    def start(cls, host: str, port: int, *, pool_size: int = 3) -> PgBouncer:
        """Starts pgbouncer in front of ``host:port`` and waits until it listens."""
        binary = pgbouncer_binary()
        root = private_directory("pgbouncer")
        listen = free_port()
        (root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port} user=postgres\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {listen}\nunix_socket_dir =\n"
            "auth_type = any\npool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 500\n"
            "server_reset_query =\n"
            f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
        )
        os.chown(root / "pgbouncer.ini", root.stat().st_uid, root.stat().st_gid)
        process = subprocess.Popen(as_postgres(binary, str(root / "pgbouncer.ini")),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bouncer = cls(root, listen, process)
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on" not in bouncer.log() or "127.0.0.1" not in bouncer.log():
            if process.poll() is not None or time.monotonic() > deadline:
                bouncer.stop()
                raise RuntimeError("pgbouncer did not start:\n" + bouncer.log())
            time.sleep(0.05)  # polling its log for "listening on", bounded by the deadline
        return bouncer

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` through this pgbouncer."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        """pgbouncer's log, for a failed test's report."""
        path = self.root / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stops pgbouncer and removes its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
