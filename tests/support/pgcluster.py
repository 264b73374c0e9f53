"""Private PostgreSQL servers in temporary directories, for tests of server states.

    primary = PgCluster.create("primary", max_connections=20)   # initdb + start
    standby = primary.standby("standby")                        # pg_basebackup -R + start
    primary.url("postgres")          # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
    primary.stop("immediate"); standby.promote(); ...; cluster.destroy()

PostgreSQL refuses to run as root, so every server command runs as the ``postgres``
user (``runuser``) when the tests run as root. The directories live under the system
temporary directory, owned by that user. When the PostgreSQL server binaries are missing
the tests fail under CI and skip, loudly, elsewhere (:func:`require_server_binaries`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import pytest

START_TIMEOUT = 60.0
_BIN_CANDIDATES = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
BIN = Path(os.environ.get("AUTHORITY_TEST_PG_BIN", _BIN_CANDIDATES[0] if _BIN_CANDIDATES else "/nonexistent"))
RUN_AS = "postgres"


def require_server_binaries() -> None:
    """Fails (CI) or skips loudly (elsewhere) without initdb, pg_ctl and a postgres user."""
    problem = ""
    if not (BIN / "initdb").exists():
        problem = f"no PostgreSQL server binaries in {BIN} (set AUTHORITY_TEST_PG_BIN)"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            problem = f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip("SKIPPING PRIVATE POSTGRESQL TESTS: " + problem)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_postgres(*argv: str | Path) -> list[str]:
    """The command line that runs ``argv`` as the PostgreSQL user (root cannot)."""
    command = [str(part) for part in argv]
    # From /, not the checkout's folder, which that user may not be allowed to enter (a
    # clone under a 0700 directory): Patroni then never bootstraps. Every path is absolute.
    return ["runuser", "-u", RUN_AS, "--", "env", "--chdir=/", *command] if os.geteuid() == 0 else command


def private_directory(prefix: str) -> Path:
    """A fresh temporary directory the PostgreSQL user owns."""
    path = Path(tempfile.mkdtemp(prefix=f"authority-{prefix}-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def run(*argv: str | Path, check: bool = True, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Runs a server command as the PostgreSQL user; raises with its output if it fails."""
    done = subprocess.run(as_postgres(*argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


class PgCluster:
    """One private PostgreSQL server: a data directory, a port, and its log."""

    def __init__(self, name: str, root: Path, port: int) -> None:
        self.name = name
        self.root = root
        self.data = root / "data"
        self.port = port
        self.logfile = root / "server.log"

    @classmethod
    def create(cls, name: str, **settings: str | int) -> PgCluster:
        """initdb, configure (loopback, trust, replication allowed) and start."""
        cluster = cls(name, private_directory(name), free_port())
        run(BIN / "initdb", "-D", cluster.data, "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        cluster.configure(**{"wal_level": "replica", "max_wal_senders": 5, "fsync": "off",
                             "synchronous_commit": "on", "full_page_writes": "off", **settings})
        cluster.start()
        return cluster

    def configure(self, **settings: str | int) -> None:
        """Appends settings to postgresql.conf (read at the next start or reload)."""
        lines = {"listen_addresses": "127.0.0.1", "port": self.port, "unix_socket_directories": str(self.root),
                 **settings}
        with (self.data / "postgresql.conf").open("a") as conf:  # appending keeps the owner
            conf.writelines(f"{key} = '{str(value).replace(chr(39), chr(39) * 2)}'\n" for key, value in lines.items())

    def start(self, *, wait: bool = True) -> None:
        """pg_ctl start; with ``wait``, until it accepts connections (or reaches recovery)."""
        run(BIN / "pg_ctl", "start", "-D", self.data, "-l", self.logfile, "-w" if wait else "-W",
            "-t", str(int(START_TIMEOUT)))

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """pg_ctl stop in ``mode`` (smart, fast, immediate); without ``wait``, returns at once."""
        run(BIN / "pg_ctl", "stop", "-D", self.data, "-m", mode, "-w" if wait else "-W", check=False)

    def promote(self) -> None:
        """Promotes a standby and waits until it takes writes."""
        run(BIN / "pg_ctl", "promote", "-D", self.data, "-w", "-t", str(int(START_TIMEOUT)))

    def standby(self, name: str, *, start: bool = True, port: int = 0, **settings: str | int) -> PgCluster:
        """A streaming standby of this server, from a base backup (-R writes standby.signal)."""
        standby = PgCluster(name, private_directory(name), port or free_port())
        run(BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-D", standby.data, "-R", "-X", "stream", "-c", "fast")
        standby.configure(**settings)
        if start:
            standby.start()
        return standby

    def starting_up(self, name: str) -> PgCluster:
        """A server that stays "starting up": a base backup without its WAL, whose
        restore_command hangs, so the startup process never finds its first checkpoint."""
        server = PgCluster(name, private_directory(name), free_port())
        run(BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-D", server.data, "-X", "none", "-c", "fast")
        (server.data / "standby.signal").touch()
        os.chown(server.data / "standby.signal", server.data.stat().st_uid, server.data.stat().st_gid)
        server.configure(restore_command="sleep 20; false", primary_conninfo="")
        server.start(wait=False)
        return server

    def base_backup(self, name: str, port: int = 0) -> PgCluster:
        """A base backup of this server (pg_basebackup) as a server of its own on ``port``,
        not started: restore it with :meth:`restore`."""
        return self.standby(name, start=False, port=port)

    def restore(self) -> None:
        """Starts a base backup as a restored primary: archive recovery to the end of the
        WAL it holds, then a new timeline (recovery.signal, not standby.signal)."""
        (self.data / "standby.signal").rename(self.data / "recovery.signal")
        self.configure(restore_command="false", primary_conninfo="", recovery_target_timeline="current")
        self.start()

    def url(self, database: str = "postgres", query: str = "") -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def host(self) -> str:
        """HOST:PORT for a multi-host URL."""
        return f"127.0.0.1:{self.port}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        """A plain asyncpg connection (no target_session_attrs), for the test's own use."""
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database=database, timeout=5)

    def log(self) -> str:
        """The server's log, for a failed test's report."""
        with contextlib.suppress(OSError):
            return self.logfile.read_text(errors="replace")
        return ""

    def destroy(self) -> None:
        """Stops the server (immediately) and removes its directory."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
