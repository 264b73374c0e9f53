"""Every "not available now" state of a real PostgreSQL is StoreUnavailable (UNAVAILABLE), never a bug.

Each state is produced on a private server (tests/support/pgcluster.py): starting up,
shutting down, in recovery (a hot standby), read-only, no primary among several hosts,
too many connections. The store must say "unavailable, try again", which gRPC callers
retry, and never let the driver's own exception (asyncpg's CannotConnectNowError,
InternalClientError, ...) through as INTERNAL. A replica pointed at a standby never
writes there and never believes its view of the revocation log current.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority.app import Authority
from authority.config import Settings
from authority.errors import StoreUnavailable
from authority.store import Store
from authority.store.migrate import prepare_schema
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, StartServer
from tests.support.calls import new_subject, sign_in
from tests.support.pgcluster import PgCluster, require_server_binaries

ANSWER_WITHIN = 20.0


@pytest.fixture(scope="module")
def primary() -> Iterator[PgCluster]:
    require_server_binaries()
    cluster = PgCluster.create("primary", max_connections=30)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def standby(primary: PgCluster) -> Iterator[PgCluster]:
    cluster = primary.standby("standby", hot_standby="on")
    yield cluster
    cluster.destroy()


@pytest.fixture
def fresh() -> Iterator[list[PgCluster]]:
    """Servers made for one test, destroyed after it."""
    made: list[PgCluster] = []
    yield made
    for cluster in made:
        cluster.destroy()


@pytest.fixture
async def database(primary: PgCluster) -> AsyncIterator[str]:
    """A fresh database on the private primary, with the schema; its name."""
    name = f"authority_{time.monotonic_ns()}"
    admin = await primary.connect()
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    store = Store.open(primary.url(name))
    await prepare_schema(store, upgrade=False)
    await store.close()
    yield name


async def until_replicated(standby: PgCluster, database: str) -> None:
    """Waits until the database and its schema have reached the standby."""
    deadline = time.monotonic() + ANSWER_WITHIN
    while True:
        try:
            connection = await standby.connect(database)
            try:
                if await connection.fetchval("SELECT to_regclass('log_epoch') IS NOT NULL"):
                    return
            finally:
                await connection.close()
        except asyncpg.PostgresError:
            pass
        assert time.monotonic() < deadline, standby.log()


async def assert_unavailable(url: str) -> StoreUnavailable:
    """Reads, writes and the log state on ``url`` all fail as StoreUnavailable; the error."""
    store = Store.open(url)
    try:
        with pytest.raises(StoreUnavailable) as read:
            await store.last_sequence()
        with pytest.raises(StoreUnavailable):
            await store.renew_epoch()
        with pytest.raises(StoreUnavailable):
            await store.log_state()
        return read.value
    finally:
        await store.close()


async def test_a_server_starting_up_is_unavailable(primary: PgCluster, fresh: list[PgCluster]) -> None:
    starting = primary.starting_up("starting")
    fresh.append(starting)
    # The state itself, as the driver reports it: asyncpg's CannotConnectNowError.
    deadline = time.monotonic() + ANSWER_WITHIN
    while True:
        try:
            await (await starting.connect()).close()
            pytest.fail("a server that cannot find its checkpoint accepted a connection")
        except asyncpg.CannotConnectNowError as error:
            assert "starting up" in str(error)
            break
        except OSError:  # not listening yet
            assert time.monotonic() < deadline, starting.log()
    await assert_unavailable(starting.url())


async def test_a_server_shutting_down_is_unavailable(primary: PgCluster, fresh: list[PgCluster]) -> None:
    closing = primary.standby("closing", start=False)
    fresh.append(closing)
    (closing.data / "standby.signal").unlink()
    closing.start()
    held = await closing.connect()  # a smart shutdown waits for this session to end
    try:
        closing.stop("smart", wait=False)
        deadline = time.monotonic() + ANSWER_WITHIN
        while True:
            try:
                await (await closing.connect()).close()
            except asyncpg.CannotConnectNowError as error:
                assert "shutting down" in str(error)
                break
            assert time.monotonic() < deadline, "the server never began shutting down:\n" + closing.log()
        await assert_unavailable(closing.url())
    finally:
        await held.close()


async def test_a_standby_is_unavailable_and_never_current(standby: PgCluster, database: str) -> None:
    # A URL naming only the standby, with no target_session_attrs: still refused.
    await assert_unavailable(standby.url("postgres"))
    # A replica pointed at it does not start: it never serves from a log that has stopped.
    settings = Settings(listen="127.0.0.1:0", database_url=standby.url("postgres"),
                        key_encryption_key=TEST_KEY_ENCRYPTION_KEY)
    with pytest.raises(StoreUnavailable):
        await Authority.open(settings)


async def test_a_standby_slipping_past_the_session_check_is_not_the_log(standby: PgCluster, database: str) -> None:
    # target_session_attrs=any is refused by the settings; a Store built on it directly
    # reads the standby, and still refuses to call its log the log.
    await until_replicated(standby, database)
    store = Store.open(standby.url(database, "target_session_attrs=any"))
    try:
        with pytest.raises(StoreUnavailable):
            await store.log_state()
    finally:
        await store.close()


async def test_a_read_only_primary_refuses_writes_as_unavailable(primary: PgCluster, database: str) -> None:
    store = Store.open(primary.url(database))
    admin = await primary.connect()
    try:
        await store.renew_epoch()  # a pooled connection, opened while writable
        await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await admin.execute("SELECT pg_reload_conf()")
        # Each backend applies the reload when it next reads a command: until the pooled
        # connection has, the write may still pass. Then it fails read-only (SQLSTATE 25006).
        deadline = time.monotonic() + ANSWER_WITHIN
        while True:
            try:
                await store.renew_epoch()
            except StoreUnavailable:
                break
            assert time.monotonic() < deadline, "the primary never turned read-only"
        # A new connection: refused at connect by target_session_attrs=read-write.
        await assert_unavailable(primary.url(database))
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        await store.close()


async def test_no_primary_among_many_hosts_is_unavailable(standby: PgCluster) -> None:
    gone = PgCluster("gone", standby.root, 1)  # nothing listens on port 1
    hosts = f"host={standby.host()}&host={gone.host()}&target_session_attrs=read-write"
    error = await assert_unavailable(f"postgresql+asyncpg://postgres@/postgres?{hosts}")
    assert "standby" not in str(error) and "127.0.0.1" not in str(error)


async def test_many_hosts_find_the_primary(primary: PgCluster, standby: PgCluster, database: str) -> None:
    await until_replicated(standby, database)
    hosts = f"host={standby.host()}&host={primary.host()}&target_session_attrs=read-write"
    store = Store.open(f"postgresql+asyncpg://postgres@/{database}?{hosts}")
    try:
        await store.renew_epoch()
        assert (await store.log_state()).host == primary.host()
    finally:
        await store.close()


async def test_too_many_connections_is_unavailable(primary: PgCluster, fresh: list[PgCluster]) -> None:
    small = PgCluster.create("small", max_connections=3, superuser_reserved_connections=0)
    fresh.append(small)
    held = []
    try:
        while True:
            try:
                held.append(await small.connect())
            except asyncpg.TooManyConnectionsError:
                break
            assert len(held) <= 3
        await assert_unavailable(small.url())
    finally:
        for connection in held:
            await connection.close()


async def test_a_sign_in_on_a_read_only_primary_answers_unavailable_never_internal(
    primary: PgCluster, database: str, start_server: StartServer
) -> None:
    running = await start_server(database_url=primary.url(database), max_staleness=2.0,
                                 revocation_poll_interval=0.2)
    signed = await sign_in(running.stub, new_subject(), "phone")
    admin = await primary.connect()
    try:
        await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await admin.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + ANSWER_WITHIN
        while True:  # until every pooled connection has applied the reload
            try:
                await sign_in(running.stub, new_subject(), "phone")
            except grpc.aio.AioRpcError as refused:
                assert refused.code() is grpc.StatusCode.UNAVAILABLE, refused.details()
                break
            assert time.monotonic() < deadline, "the primary never turned read-only"
        # Still the primary, and readable: validation goes on answering from a current view.
        answer = await running.stub.ValidateToken(pb.ValidateTokenRequest(token=signed.access_token))
        assert answer.valid
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
    deadline = time.monotonic() + ANSWER_WITHIN
    while True:  # writable again: sign-ins succeed once the reload reached the pool
        try:
            await sign_in(running.stub, new_subject(), "phone")
            break
        except grpc.aio.AioRpcError as refused:
            assert refused.code() is grpc.StatusCode.UNAVAILABLE, refused.details()
            assert time.monotonic() < deadline, "sign-ins never came back"


@pytest.fixture
def settings(postgres_url: str) -> Settings:
    """start_server's base settings; each test names its private database."""
    return Settings(listen="127.0.0.1:0", database_url=postgres_url, leeway=0,
                    key_encryption_key=TEST_KEY_ENCRYPTION_KEY)



async def test_after_a_promotion_the_pools_and_the_listener_find_the_new_primary(
    fresh: list[PgCluster], start_server: StartServer
) -> None:
    """Two replicas on a URL naming a primary and its standby; the primary goes, the
    standby is promoted. Both serve again by themselves, and a revocation through one
    reaches the other by NOTIFY again (well inside the 3 s poll): the LISTEN connection
    reconnected to the new primary too."""
    old = PgCluster.create("old-primary")
    fresh.append(old)
    new = old.standby("new-primary", hot_standby="on")
    fresh.append(new)
    url = f"postgresql+asyncpg://postgres@/postgres?host={old.host()}&host={new.host()}&target_session_attrs=read-write"
    a = await start_server(database_url=url, revocation_poll_interval=3.0, max_staleness=8.0)
    b = await start_server(database_url=url, revocation_poll_interval=3.0, max_staleness=8.0)

    async def notified_within(seconds: float) -> bool:
        signed = await sign_in(a.stub, new_subject(), "laptop")
        await b.stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed.session_id))
        revoked_at = time.monotonic()
        while time.monotonic() - revoked_at < seconds:
            answer = await a.stub.ValidateToken(pb.ValidateTokenRequest(token=signed.access_token))
            if answer.reason == pb.INVALID_REASON_REVOKED:
                return True
        return False

    assert await notified_within(1.0)
    old.stop("fast")
    new.promote()
    deadline = time.monotonic() + ANSWER_WITHIN
    for running in (a, b):
        while True:
            try:
                await sign_in(running.stub, new_subject(), "phone")
                break
            except grpc.aio.AioRpcError as refused:
                assert refused.code() is grpc.StatusCode.UNAVAILABLE, refused.details()
                assert time.monotonic() < deadline, "a replica never found the new primary"
    # Five revocations in a row seen within 0.3 s: the 3 s poll would catch one in ten.
    streak = 0
    while streak < 5:
        streak = streak + 1 if await notified_within(0.3) else 0
        assert time.monotonic() < deadline, "notifications never came back after the promotion"
