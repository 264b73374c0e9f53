"""A real Patroni cluster (Debian's patroni and etcd-server) on loopback, for failover tests.

    cluster = PatroniCluster.start(members=3)     # etcd, then 3 members; leader + sync standby
    cluster.url("postgres")                       # every member's host, target_session_attrs=read-write
    leader = cluster.leader()                     # from the Patroni REST API
    leader.kill_node()                            # SIGKILL its Patroni and its postgres together
    leader.kill_postgres()                        # SIGKILL its postmaster alone
    cluster.switchover(leader, candidate)         # patronictl switchover
    cluster.stop()

Everything lives in temporary directories on free loopback ports, and runs as the
``postgres`` user (PostgreSQL refuses root). Patroni uses etcd through its ``etcd3:``
section (the v3 API: no ``--enable-v2``), with ``synchronous_mode`` on, ``ttl: 10`` and
``loop_wait: 2``. Every wait polls a condition (the REST API, a connection) against a
deadline. Without the tools, tests fail under CI and skip, loudly, elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.pgcluster import BIN, as_postgres, free_port, private_directory, require_server_binaries

SCOPE = "authority"
TTL = 10
LOOP_WAIT = 2
RETRY_TIMEOUT = 4  # loop_wait + 2 * retry_timeout must not exceed ttl
HEALTHY_WITHIN = 90.0  # three members bootstrapping on two busy cores


def require_tools() -> None:
    """Fails (CI) or skips loudly (elsewhere) without patroni, patronictl and etcd."""
    require_server_binaries()
    missing = [tool for tool in ("patroni", "patronictl", "etcd") if shutil.which(tool) is None]
    if missing:
        problem = f"{', '.join(missing)} not installed (apt-get install patroni etcd-server; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip("SKIPPING PATRONI TESTS: " + problem)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first found by /proc parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


class Member:
    """One Patroni member: its process, its REST API and its PostgreSQL port."""

    def __init__(self, name: str, root: Path, api_port: int, pg_port: int, etcd: str) -> None:
        self.name = name
        self.root = root
        self.api_port = api_port
        self.pg_port = pg_port
        self.config = root / "patroni.yml"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config(etcd)

    def _write_config(self, etcd: str) -> None:
        config: dict[str, Any] = {
            "scope": SCOPE,
            "name": self.name,
            "log": {"dir": str(self.root), "level": "INFO"},
            "restapi": {"listen": f"127.0.0.1:{self.api_port}", "connect_address": f"127.0.0.1:{self.api_port}"},
            "etcd3": {"hosts": [etcd]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576, "synchronous_mode": True,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on",
                                       "max_wal_senders": 10, "max_replication_slots": 10,
                                       "synchronous_commit": "on", "max_connections": 100},
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth": "trust"}, "no-sync"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.pg_port}",
                "connect_address": f"127.0.0.1:{self.pg_port}",
                "data_dir": str(self.root / "data"),
                "bin_dir": str(BIN),
                "pgpass": str(self.root / "pgpass"),
                "authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "postgres"},
                                   "rewind": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(self.root), "fsync": "off"},
                "pg_hba": ["local all all trust", "host all all 127.0.0.1/32 trust",
                           "host replication all 127.0.0.1/32 trust"],
            },
        }
        # JSON is YAML; the file belongs to the user Patroni runs as.
        self.config.write_text(json.dumps(config, indent=1))
        os.chown(self.config, self.root.stat().st_uid, self.root.stat().st_gid)

    def start(self) -> None:
        """Starts this member's Patroni (which starts its PostgreSQL)."""
        self.process = subprocess.Popen(as_postgres("patroni", str(self.config)), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)

    def status(self) -> dict[str, Any] | None:
        """This member's REST API answer (``GET /patroni``), or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/patroni", timeout=2) as answer:
                return dict(json.load(answer))
        except urllib.error.HTTPError as error:  # 503 for a replica: the body is still the status
            with contextlib.suppress(ValueError):
                return dict(json.loads(error.read()))
            return None
        except (OSError, ValueError):
            return None

    def postmaster_pid(self) -> int | None:
        """The running postmaster's pid, from its pid file."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        return None

    def kill_node(self) -> None:
        """The node dies: SIGKILL its Patroni and every process below it (its postgres)."""
        assert self.process is not None
        victims = [self.process.pid, *_descendants(self.process.pid)]
        postmaster = self.postmaster_pid()
        if postmaster is not None:
            victims += [postmaster, *_descendants(postmaster)]
        for pid in dict.fromkeys(victims):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def kill_postgres(self) -> None:
        """PostgreSQL crashes alone: SIGKILL its postmaster and backends; Patroni lives on."""
        postmaster = self.postmaster_pid()
        assert postmaster is not None, "no postmaster running"
        for pid in [postmaster, *_descendants(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stops Patroni and its PostgreSQL (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            with contextlib.suppress(Exception):
                self.kill_postgres()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill_node()

    def log(self) -> str:
        """Patroni's log and PostgreSQL's, for a failed test's report."""
        parts = []
        for path in [self.root / "patroni.log", *sorted((self.root / "data" / "log").glob("*"))]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


class PatroniCluster:
    """etcd and the Patroni members of one cluster."""

    def __init__(self, root: Path, etcd: subprocess.Popen[bytes], etcd_port: int, members: list[Member]) -> None:
        self.root = root
        self.etcd = etcd
        self.etcd_port = etcd_port
        self.members = members

    @classmethod
    def start(cls, members: int = 3) -> PatroniCluster:
        """etcd, then the members; returns once there is a leader and a synchronous standby."""
        require_tools()
        root = private_directory("patroni")
        client, peer = free_port(), free_port()
        etcd = subprocess.Popen(
            as_postgres("etcd", "--name", "etcd", "--data-dir", str(root / "etcd"),
                        "--listen-client-urls", f"http://127.0.0.1:{client}",
                        "--advertise-client-urls", f"http://127.0.0.1:{client}",
                        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                        "--initial-cluster", f"etcd=http://127.0.0.1:{peer}"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        made = []
        for n in range(members):
            home = root / f"m{n}"
            home.mkdir()
            os.chown(home, root.stat().st_uid, root.stat().st_gid)
            made.append(Member(f"m{n}", home, free_port(), free_port(), f"127.0.0.1:{client}"))
        cluster = cls(root, etcd, client, made)
        try:
            cluster.until(lambda: cluster._etcd_healthy(), "etcd did not start", 30)
            made[0].start()  # the first bootstraps (initdb); the others then copy it
            cluster.until(lambda: cluster.leader() is not None, "no leader bootstrapped")
            for member in made[1:]:
                member.start()
            cluster.until_healthy()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health", timeout=2) as answer:
                return bool(json.load(answer).get("health") == "true")
        except (OSError, ValueError):
            return False

    def until(self, condition: Any, failure: str, within: float = HEALTHY_WITHIN) -> None:
        """Polls ``condition`` until true; fails with every member's log after ``within``."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(failure + "\n" + self.report())
            time.sleep(0.2)  # between polls of the REST API, bounded by the deadline

    def roles(self) -> dict[str, str]:
        """Each answering member's role and state, as its REST API reports them."""
        shown = {}
        for member in self.members:
            status = member.status()
            if status is not None:
                shown[member.name] = f"{status.get('role')}/{status.get('state')}"
        return shown

    def leader(self) -> Member | None:
        """The member running as primary, if exactly one does."""
        leaders = [m for m in self.members if (s := m.status()) and s.get("role") in ("master", "primary")
                   and s.get("state") == "running"]
        return leaders[0] if len(leaders) == 1 else None

    def sync_standby(self) -> Member | None:
        """The synchronous standby, as the leader's ``/cluster`` view names it."""
        leader = self.leader()
        if leader is None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{leader.api_port}/cluster", timeout=2) as answer:
                view = json.load(answer)
        except (OSError, ValueError):
            return None
        names = [m["name"] for m in view.get("members", []) if m.get("role") == "sync_standby"
                 and m.get("state") in ("running", "streaming")]
        return next((m for m in self.members if m.name in names), None)

    def until_healthy(self, members: int | None = None) -> None:
        """Waits for a leader, a synchronous standby, and ``members`` (default all) running."""
        expected = len(self.members) if members is None else members

        def healthy() -> bool:
            running = [r for r in self.roles().values() if r.endswith("/running") or r.endswith("/streaming")]
            return len(running) >= expected and self.leader() is not None and self.sync_standby() is not None

        self.until(healthy, f"the cluster did not become healthy ({expected} members)")

    def switchover(self, leader: Member, candidate: Member) -> None:
        """``patronictl switchover``, planned, to ``candidate``."""
        done = subprocess.run(
            as_postgres("patronictl", "-c", str(leader.config), "switchover", SCOPE, "--leader", leader.name,
                        "--candidate", candidate.name, "--force"),
            capture_output=True, text=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"patronictl switchover failed:\n{done.stdout}\n{done.stderr}")

    def url(self, database: str) -> str:
        """Every member's host in one URL; only the primary takes the authority's sessions."""
        hosts = "&".join(f"host=127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql+asyncpg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    def report(self) -> str:
        """Roles and every member's logs."""
        return f"roles: {self.roles()}\n" + "\n".join(f"===== {m.name}\n{m.log()}" for m in self.members)

    def stop(self) -> None:
        """Stops every member and etcd, and removes the directories."""
        for member in self.members:
            member.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.etcd.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.etcd.wait(10)
        if self.etcd.poll() is None:
            os.killpg(self.etcd.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
