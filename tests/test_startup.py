"""A start that fails says why, plainly and early, and leaves nothing behind: the database
by name and the cause, a busy port before the store is touched, no traceback from a
driver thread, no schema written by a server that refuses to start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authority.api.readiness import ServiceWhenReady
from authority.api.servicer import TokenAuthorityService
from authority.store import Store
from authority.store.reach import describe as describe_store
from tests.conftest import POSTGRES_URL, TEST_KEY_ENCRYPTION_KEY, _driver_url, _require_postgres, _with_database

AUTHORITY = str(Path(sys.executable).with_name("authority"))
# The environment of a newcomer's shell: no AUTHORITY_* variable but the key-encryption key.
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")}
WITH_KEK = {**CLEAN, "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY}


async def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=WITH_KEK if env is None else env, cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _postgres(database: str, user: str = "postgres", password: str = "") -> str:
    base = _with_database(POSTGRES_URL, database)
    scheme, rest = base.split("://", 1)
    location = rest.rpartition("@")[2]
    return f"{scheme}://{user}{':' + password if password else ''}@{location}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Database errors name the target and the cause.


@pytest.mark.parametrize("command", [["serve", "--listen", "127.0.0.1:0"], ["migrate"], ["keys", "rotate"]])
async def test_a_sqlite_file_in_a_missing_directory_is_named_with_its_cause(command: list[str], tmp_path: Path) -> None:
    path = tmp_path / "missing" / "authority.db"

    code, _, err = await _run(*command, "--database-url", f"sqlite+aiosqlite:///{path}")

    assert code == 2
    assert f"cannot use the database (SQLite file {path}): the directory {path.parent} does not exist" in err
    assert "Traceback" not in err


async def test_postgres_refusing_connections_is_named_without_the_password() -> None:
    url = f"postgresql+asyncpg://postgres:hunter2-secret@127.0.0.1:{_free_port()}/authority"

    for command in (["serve", "--listen", "127.0.0.1:0"], ["migrate"], ["keys", "list"]):
        code, out, err = await _run(*command, "--database-url", url)

        assert code == 2, command
        assert 'PostgreSQL database "authority" on 127.0.0.1:' in err
        assert "connection refused" in err
        assert "hunter2-secret" not in err + out
        assert "Traceback" not in err


async def test_postgres_authentication_and_a_missing_database_are_said() -> None:
    await _require_postgres()

    code, _, err = await _run("migrate", "--database-url", _postgres("postgres", user="no_such_role_here"))
    assert code == 2
    assert "as user no_such_role_here): authentication failed" in err

    code, _, err = await _run("keys", "list", "--database-url", _postgres("no_such_database_here"))
    assert code == 2
    assert 'PostgreSQL database "no_such_database_here"' in err and "the database does not exist" in err
    assert "Traceback" not in err


async def test_config_names_the_database_and_whether_it_answers(tmp_path: Path) -> None:
    code, out, err = await _run("config", "--database-url", f"postgresql+asyncpg://postgres:pw@127.0.0.1:{_free_port()}/x")
    assert code == 0
    assert "database: PostgreSQL database \"x\"" in err and "connection refused" in err
    assert "pw@" not in out + err

    code, _, err = await _run("config", cwd=tmp_path)
    assert code == 0
    assert f"database: SQLite file {tmp_path / 'authority.db'} (not there yet" in err
    assert not (tmp_path / "authority.db").exists()


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("?host=pg1:5432&host=pg2:6432", "pg1:5432, pg2:6432"),
        ("?host=pg1,pg2&port=5432,6432", "pg1:5432, pg2:6432"),
        ("?host=pg1", "pg1:5432"),
        ("?host=pg1&port=6432", "pg1:6432"),
    ],
)
def test_the_database_is_named_by_the_hosts_its_query_gives(query: str, where: str) -> None:
    # Regression: a URL whose hosts are all in its query was described as on localhost:5432.
    url = "postgresql+asyncpg://authority:hunter2@/authority" + query

    assert describe_store(url) == f'PostgreSQL database "authority" on {where} as user authority'


@pytest.mark.parametrize(
    ("url", "environ", "where"),
    [
        ("postgresql+asyncpg://authority:hunter2@/authority", {},
         "the default PostgreSQL socket (/run/postgresql, /var/run/postgresql, /tmp) or localhost:5432"),
        ("postgresql+asyncpg://authority:hunter2@/authority?port=6432", {"PGPORT": "7000"},
         "the default PostgreSQL socket (/run/postgresql, /var/run/postgresql, /tmp) or localhost:6432"),
        ("postgresql+asyncpg://authority:hunter2@/authority", {"PGPORT": "7000"},
         "the default PostgreSQL socket (/run/postgresql, /var/run/postgresql, /tmp) or localhost:7000"),
        ("postgresql+asyncpg://authority:hunter2@/authority", {"PGHOST": "/srv/pg"}, "/srv/pg (PGHOST), port 5432"),
        ("postgresql+asyncpg://authority:hunter2@db.internal/authority", {"PGHOST": "/srv/pg"}, "db.internal:5432"),
    ],
)
def test_a_url_with_no_host_is_described_where_asyncpg_connects(
    monkeypatch: pytest.MonkeyPatch, url: str, environ: dict[str, str], where: str
) -> None:
    # Regression: a URL naming no host was described as on localhost:5432, where asyncpg
    # (as libpq) tries PGHOST, else the Unix socket, and localhost only last.
    for name in ("PGHOST", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    described = describe_store(url)

    assert described == f'PostgreSQL database "authority" on {where} as user authority'
    assert "hunter2" not in described


async def test_a_database_url_query_the_driver_cannot_take_stops_the_start_in_one_line(tmp_path: Path) -> None:
    for url, says in (
        ("postgresql+asyncpg://app:hunter2@127.0.0.1/authority?foo=1", "foo is not a connection parameter"),
        ("postgresql+asyncpg://app:hunter2@/authority?host=127.0.0.1,127.0.0.2", "needs a port for every host"),
        (f"sqlite+aiosqlite:///file:{tmp_path / 'a.db'}?uri=true", "uri (SQLite's URI filenames) is not supported"),
    ):
        for command in (["serve", "--listen", "127.0.0.1:0"], ["keys", "list"]):
            code, out, err = await _run(*command, "--database-url", url)

            assert code == 2, (command, err)
            assert len(err.strip().splitlines()) == 1
            assert err.startswith(f"authority {command[0]}: database_url: {says}")
            assert "hunter2" not in out + err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no SQLite file was made by a read-only command


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_while_the_store_opens_stops_at_once_not_after_the_connect_timeout(workers: str) -> None:
    # Regression: the stop waited for the database's connect timeout (5 s), then exited 2
    # saying the database did not answer.
    loop = asyncio.get_running_loop()
    with socket.socket() as silent:  # accepts, and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.setblocking(False)
        url = f"postgresql+asyncpg://postgres:pw@127.0.0.1:{silent.getsockname()[1]}/authority"
        process = await asyncio.create_subprocess_exec(
            AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--workers", workers, "--database-url", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=WITH_KEK,
        )
        try:
            connection, _ = await asyncio.wait_for(loop.sock_accept(silent), 60)  # the store is opening
            with connection:
                asked = time.monotonic()
                process.send_signal(signal.SIGTERM)
                _, err = await asyncio.wait_for(process.communicate(), 30)
                took = time.monotonic() - asked
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert process.returncode == 0, err.decode()
    assert took < 3.0, f"took {took:.1f}s to stop"
    assert "the stop came before the store was open" in err.decode()
    assert "cannot use the database" not in err.decode() and "Traceback" not in err.decode()


# Commands that only read never create a database.


async def test_keys_list_elsewhere_creates_no_database_and_says_so(tmp_path: Path) -> None:
    code, out, err = await _run("keys", "list", cwd=tmp_path)

    assert code == 2
    assert f"authority keys: no database at {tmp_path / 'authority.db'}" in err
    assert list(tmp_path.iterdir()) == []


async def test_keys_list_on_an_empty_postgres_database_writes_no_schema(postgres_url: str) -> None:
    code, _, err = await _run("keys", "list", "--database-url", postgres_url)

    assert code == 2
    assert "no schema yet" in err
    assert await _tables(postgres_url) == []


async def test_every_store_command_names_its_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    where = f"SQLite file {tmp_path / 'a.db'}"

    assert f"migrated the schema of {where}" in (await _run("migrate", "--database-url", url))[1]
    assert f"the schema of {where} is up to date" in (await _run("migrate", "--database-url", url))[1]
    assert f"no signing keys yet in {where}" in (await _run("keys", "list", "--database-url", url))[1]
    assert f"in {where}, published now" in (await _run("keys", "rotate", "--database-url", url))[1]
    assert f"signing keys in {where}:" in (await _run("keys", "list", "--database-url", url))[1]


# Settings are checked before the database is touched.


async def _tables(url: str) -> list[str]:
    connection = await asyncpg.connect(_driver_url(url), timeout=5)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return sorted(row["tablename"] for row in rows)


async def test_postgres_without_a_kek_is_refused_before_any_write(postgres_url: str) -> None:
    code, _, err = await _run("serve", "--listen", "127.0.0.1:0", "--database-url", postgres_url, env=CLEAN)

    assert code == 2
    assert "authority serve: key_encryption_key:" in err
    assert await _tables(postgres_url) == []  # no schema, no alembic_version


# No traceback at exit.


def test_a_failed_sqlite_connect_leaves_no_thread_to_report_into_a_closed_loop(tmp_path: Path) -> None:
    """Regression: aiosqlite's worker thread, stopped after a failed connect, reported to
    a loop that had closed meanwhile ("RuntimeError: Event loop is closed")."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'authority.db'}"
    failures: list[BaseException | None] = []
    hook, threading.excepthook = threading.excepthook, lambda args: failures.append(args.exc_value)

    async def fail_once() -> None:
        store = Store.open(url)
        try:
            with pytest.raises(Exception):
                async with store.transaction():
                    pass
        finally:
            await store.close()

    try:
        deadline = time.monotonic() + 30
        for _ in range(100):
            asyncio.run(fail_once())
            assert time.monotonic() < deadline
        # The last connects' worker threads may still be ending: their reports must reach
        # the hook above. aiosqlite names them after their function; started from this
        # thread, they are not daemons.
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name or (thread.name.startswith("Thread-") and thread.daemon):
                thread.join(timeout=5)
    finally:
        threading.excepthook = hook
    assert failures == []


# Thirty processes take long on a machine busy with other work; bounded below, and here.
@pytest.mark.timeout(360)
async def test_thirty_failed_starts_print_no_traceback(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'authority.db'}"
    deadline = time.monotonic() + 300

    async def start() -> str:
        code, _, err = await _run("serve", "--listen", "127.0.0.1:0", "--database-url", url)
        assert code == 2
        return err

    errors: list[str] = []
    for _ in range(10):  # 3 at a time: a busy machine is where the race showed
        errors += await asyncio.gather(start(), start(), start())
        assert time.monotonic() < deadline, "30 failed starts took too long"

    assert len(errors) == 30
    assert [err for err in errors if "Traceback" in err or "Exception in thread" in err] == []
    assert all("the directory" in err and "does not exist" in err for err in errors)


# A busy port is said plainly, before the store, and never shared.


@pytest.fixture(params=["plain", "reuseport"])
def held_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A port another process-like holder listens on, with or without SO_REUSEPORT."""
    holder = socket.socket()
    if request.param == "reuseport":
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield int(holder.getsockname()[1])
    holder.close()


async def test_a_busy_port_is_refused_plainly_before_the_store_is_opened(held_port: int, tmp_path: Path) -> None:
    database = tmp_path / "authority.db"

    code, _, err = await _run("serve", "--listen", f"127.0.0.1:{held_port}", "--database-url",
                              f"sqlite+aiosqlite:///{database}")

    assert code == 2
    assert f"authority serve: listen: 127.0.0.1:{held_port} is already in use" in err
    assert not database.exists()  # refused before the database was opened
    assert "live revocations" not in err and "Failed to add port" not in err


@pytest.mark.parametrize("held_port", ["plain"], indirect=True)
@pytest.mark.parametrize("option", ["http_listen", "metrics_listen"])
async def test_a_busy_http_or_metrics_port_is_refused_before_the_store_is_opened(
    held_port: int, tmp_path: Path, option: str
) -> None:
    database = tmp_path / "authority.db"

    code, _, err = await _run("serve", "--listen", "127.0.0.1:0", f"--{option.replace('_', '-')}",
                              f"127.0.0.1:{held_port}", "--database-url", f"sqlite+aiosqlite:///{database}")

    assert code == 2
    assert f"authority serve: {option}: 127.0.0.1:{held_port} is already in use" in err
    assert not database.exists()  # refused before the schema and a signing key were written


@pytest.fixture
async def locked_sqlite(tmp_path: Path) -> AsyncIterator[tuple[str, sqlite3.Connection]]:
    """A SQLite file another connection holds the write lock on, so a start waits."""
    path = tmp_path / "authority.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    yield f"sqlite+aiosqlite:///{path}", holder
    holder.close()


async def test_health_says_not_serving_until_the_authority_is_ready(
    locked_sqlite: tuple[str, sqlite3.Connection],
) -> None:
    url, holder = locked_sqlite
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", url,
        stderr=asyncio.subprocess.PIPE, env=WITH_KEK,
    )
    try:
        assert process.stderr is not None
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
            assert line, "authority serve exited before binding"
            assert "listening on" not in line, "ready while the store was locked"
            if "not serving until the store is open" in line:
                port = int(line.split("bound 127.0.0.1:")[1].split(";")[0])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="")
            assert (await health.Check(check, timeout=5)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await authority_pb2_grpc.TokenAuthorityStub(channel).GetSigningKeys(
                    pb.GetSigningKeysRequest(), timeout=5
                )
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "starting" in (caught.value.details() or "")

            holder.execute("ROLLBACK")
            deadline = time.monotonic() + 30
            while (await health.Check(check, timeout=5)).status != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "never became SERVING"
                await asyncio.sleep(0.05)
            keys = await authority_pb2_grpc.TokenAuthorityStub(channel).GetSigningKeys(
                pb.GetSigningKeysRequest(), timeout=5
            )
            assert keys.jwks_json
    finally:
        process.kill()
        await process.wait()


# Unknown variables, mistyped flags, an authority that is not there.


async def test_an_unknown_setting_variable_is_warned_about_with_the_closest_name(tmp_path: Path) -> None:
    env = {**WITH_KEK, "AUTHORITY_MAX_SESSION_PER_SUBJECT": "2", "AUTHORITY_TARGET": "127.0.0.1:1",
           "AUTHORITY_TEST_POSTGRES_URL": "x", "AUTHORITY_API_KEY": "x"}

    code, _, err = await _run("config", env=env, cwd=tmp_path)

    assert code == 0
    assert ("AUTHORITY_MAX_SESSION_PER_SUBJECT is not a setting of the authority and is ignored; "
            "did you mean AUTHORITY_MAX_SESSIONS_PER_SUBJECT?") in err
    for documented in ("AUTHORITY_TARGET", "AUTHORITY_TEST_POSTGRES_URL", "AUTHORITY_API_KEY "):
        assert documented not in err


async def test_a_mistyped_flag_prints_the_subcommands_usage() -> None:
    code, _, err = await _run("token", "issue", "alice", "laptop", "--polcy", "reject")

    assert code == 2
    assert err.startswith("usage: authority token issue ")
    assert "unrecognized arguments: --polcy" in err


async def test_an_admin_command_with_no_authority_says_so() -> None:
    target = f"127.0.0.1:{_free_port()}"

    code, _, err = await _run("token", "issue", "alice", "laptop", "--target", target)

    assert code == 1
    assert err.strip() == f'authority token issue: no authority answering at {target} (is "authority serve" running?)'

    code, out, _ = await _run("demo", "--target", target)
    assert code == 1
    assert f'BAD  no authority answering at {target} (is "authority serve" running?)' in out


async def test_config_prints_every_duration_one_way(tmp_path: Path) -> None:
    env = {**WITH_KEK, "AUTHORITY_MAX_STALENESS": "2500ms", "AUTHORITY_REVOCATION_POLL_INTERVAL": "250ms"}

    _, out, _ = await _run("config", env=env, cwd=tmp_path)

    shown = dict(line.split()[:2] for line in out.splitlines())
    assert shown["max_staleness"] == "2.5s"
    assert shown["revocation_poll_interval"] == "250ms"
    assert shown["access_token_ttl"] == "15m"
    assert (await _run("config", cwd=tmp_path))[1].split("max_staleness")[1].split()[0] == "5s"


def test_a_servicer_whose_unary_handlers_do_not_map_their_errors_is_refused_at_attach() -> None:
    # Attached calls go straight to the servicer's handlers: one raising a bare exception
    # would reach grpc, which sends its text to the caller as UNKNOWN.
    class Unmapped(TokenAuthorityService):
        async def ValidateToken(self, request: Any, context: Any) -> Any:
            raise RuntimeError("secret detail")

    standing_in = ServiceWhenReady()
    with pytest.raises(TypeError, match="ValidateToken"):
        standing_in.attach(Unmapped.__new__(Unmapped))
    standing_in.attach(TokenAuthorityService.__new__(TokenAuthorityService))
