"""Fixtures: a real authority server on port 0, on SQLite and on a real PostgreSQL.

PostgreSQL is the machine's (127.0.0.1:5432, user postgres) unless
AUTHORITY_TEST_POSTGRES_URL names another. Every test that uses it gets a database of
its own, created here and dropped afterwards. When PostgreSQL cannot be reached those
tests fail under CI and are skipped, loudly, elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2_grpc
from sqlalchemy.engine import make_url

from authority.api.server import AuthorityServer, create_server
from authority.config import Settings

POSTGRES_URL = os.environ.get(
    "AUTHORITY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
STORES = ["sqlite", "postgres"]
# Test servers store their signing keys encrypted, as production on PostgreSQL must.
TEST_KEY_ENCRYPTION_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
# A REVOKED answer waits this long for why and by which device (explanation_wait; 250 ms
# by default), so that a test asserting the device's name is not at the mercy of a
# loaded machine's first read.
TEST_EXPLANATION_WAIT = 2.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test runs on asyncio's loop; one marked ``both_loops`` runs on uvloop
    too, the loop ``authority serve`` runs on (authority/api/loops.py)."""
    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _driver_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(_driver_url(POSTGRES_URL), timeout=5)


_reachable: str | None = None  # "" once PostgreSQL answered, else why it did not


async def _require_postgres() -> None:
    """Fails (under CI) or skips (elsewhere) when the test PostgreSQL cannot be reached."""
    global _reachable
    if _reachable is None:
        try:
            await (await _admin()).close()
            _reachable = ""
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
            shown = make_url(POSTGRES_URL).render_as_string(hide_password=True)
            _reachable = f"PostgreSQL at {shown} is unreachable ({error!r}); set AUTHORITY_TEST_POSTGRES_URL"
    if _reachable:
        if os.environ.get("CI"):
            pytest.fail(_reachable)
        pytest.skip("SKIPPING POSTGRESQL TESTS: " + _reachable)


async def _admin_execute(statement: str) -> None:
    admin = await _admin()
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards; for fixtures wider than one
    test (the ``postgres_url`` fixture is the per-test form). Skips or fails as it does."""
    await _require_postgres()
    database = f"authority_test_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{database}"')
    try:
        yield _with_database(POSTGRES_URL, database)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    await _require_postgres()
    database = f"authority_test_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{database}"')
    yield _with_database(POSTGRES_URL, database)
    await _admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """The kind of store a test runs on: every store test runs on both."""
    return str(request.param)


@pytest.fixture
async def database_url(store: str, tmp_path: Any) -> AsyncIterator[str]:
    """An empty database of the parametrised kind."""
    if store == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
        return
    await _require_postgres()
    database = f"authority_test_{secrets.token_hex(6)}"
    await _admin_execute(f'CREATE DATABASE "{database}"')
    yield _with_database(POSTGRES_URL, database)
    await _admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a test server: port 0, the test's database, no leeway, keys encrypted."""
    return Settings(
        listen="127.0.0.1:0", database_url=database_url, leeway=0, key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        explanation_wait=TEST_EXPLANATION_WAIT,
    )


class Clock:
    """A clock the test moves; it starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclasses.dataclass
class Running:
    """A started authority and a stub connected to it."""

    server: AuthorityServer
    channel: grpc.aio.Channel
    stub: authority_pb2_grpc.TokenAuthorityStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def http_url(self) -> str:
        """The HTTP endpoints' base URL; start the server with ``http_listen="127.0.0.1:0"``."""
        assert self.server.http is not None, "this server was started without http_listen"
        return f"{self.server.http.scheme}://127.0.0.1:{self.server.http.port}"


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server(settings: Settings) -> AsyncIterator[StartServer]:
    """Starts authority servers (with optional setting overrides); stops them at the end."""
    started: list[Running] = []

    async def start(clock: Callable[[], float] = time.time, **overrides: Any) -> Running:
        server = await create_server(dataclasses.replace(settings, **overrides), clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        running = Running(server, channel, authority_pb2_grpc.TokenAuthorityStub(channel))
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.channel.close()
        await running.server.stop(None)


@pytest.fixture
async def authority(start_server: StartServer) -> Running:
    """One authority with the default test settings."""
    return await start_server()


@pytest.fixture
def stub(authority: Running) -> authority_pb2_grpc.TokenAuthorityStub:
    """A stub for the default test authority."""
    return authority.stub
