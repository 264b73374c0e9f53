"""PostgreSQL outages: the authority answers UNAVAILABLE, keeps validating, and recovers alone.

The authority reaches its database through a :class:`TcpProxy`; cutting the proxy resets
every connection and refuses new ones, as a database that went away would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url

from authority.config import Settings
from authority.errors import SessionLimitReached, StoreUnavailable
from authority.store import Store
from authority.store.engine import create_engine
from authority.store.unavailable import connection_lost, translated
from tests.conftest import Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, sign_in
from tests.support.proxy import TcpProxy

CALL_TIMEOUT = 15.0  # a hang fails the call, not the test run
ANSWER_WITHIN = 12.0  # an outage must be reported within this long
RECOVER_WITHIN = 10.0

T = TypeVar("T")


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """PostgreSQL only: an outage is a network failure, which SQLite cannot have."""
    return postgres_url


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = await TcpProxy.start(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    await proxy.close()


@pytest.fixture
def proxied_url(postgres_url: str, proxy: TcpProxy) -> str:
    """The test database, reached through the proxy."""
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def running(start_server: StartServer, proxied_url: str) -> Running:
    """An authority whose every database connection goes through the proxy."""
    return await start_server(database_url=proxied_url)


async def unavailable(call: Callable[[], Awaitable[Any]], *secrets: str) -> tuple[str, str, float]:
    """(status name, details, seconds) of a call made while the store is down.

    The details are checked here for leaked secrets; the caller asserts on the status.
    """
    started = time.monotonic()
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        elapsed = time.monotonic() - started
        details = error.details() or ""
        leaked = [s for s in (*secrets, "postgresql", "asyncpg", "127.0.0.1:") if s and s in details]
        assert not leaked, f"{error.code().name} details leak {leaked}: {details!r}"
        return error.code().name, details, elapsed
    return "OK", "", time.monotonic() - started


async def eventually(call: Callable[[], Awaitable[T]], within: float = RECOVER_WITHIN) -> T:
    """The call's answer once the store is back, retrying UNAVAILABLE for up to ``within``."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.wait_for(call(), CALL_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


def issue(stub: Stub, subject: str, device_id: str) -> Callable[[], Awaitable[pb.IssueTokenResponse]]:
    return lambda: stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id=device_id), timeout=CALL_TIMEOUT)


def revoke(stub: Stub, **target: str) -> Callable[[], Awaitable[pb.RevokeTokenResponse]]:
    return lambda: stub.RevokeToken(pb.RevokeTokenRequest(**target), timeout=CALL_TIMEOUT)


async def test_every_call_that_needs_the_store_answers_unavailable_promptly(
    running: Running, proxy: TcpProxy, postgres_url: str, proxied_url: str
) -> None:
    stub, subject = running.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    database = make_url(postgres_url).database or ""
    secrets = (postgres_url, proxied_url, database, laptop.access_token, laptop.refresh_token)
    proxy.cut()

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "IssueToken": issue(stub, subject, "phone"),
        "RefreshToken": lambda: stub.RefreshToken(
            pb.RefreshTokenRequest(refresh_token=laptop.refresh_token), timeout=CALL_TIMEOUT
        ),
        "RevokeToken(token)": revoke(stub, token=laptop.access_token),
        "RevokeToken(session_id)": revoke(stub, session_id=laptop.session_id),
        "RevokeToken(subject)": revoke(stub, subject=subject),
        "ListSessions": lambda: stub.ListSessions(pb.ListSessionsRequest(subject=subject), timeout=CALL_TIMEOUT),
    }
    answers = {name: await unavailable(call, *secrets) for name, call in calls.items()}

    assert {name: code for name, (code, _, _) in answers.items()} == dict.fromkeys(calls, "UNAVAILABLE"), answers
    slow = {name: round(seconds, 2) for name, (_, _, seconds) in answers.items() if seconds >= ANSWER_WITHIN}
    assert not slow, f"answered too slowly: {slow}"


async def test_validation_answers_from_memory_while_the_store_is_cut(running: Running, proxy: TcpProxy) -> None:
    stub = running.stub
    live = await sign_in(stub, new_subject(), "laptop")
    revoked = await sign_in(stub, new_subject(), "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(token=revoked.access_token))
    proxy.cut()

    cut_off = await unavailable(issue(stub, new_subject(), "phone"))
    reasons = [await asyncio.wait_for(reason(stub, t.access_token), CALL_TIMEOUT) for t in (live, revoked)]

    assert cut_off[0] == "UNAVAILABLE", cut_off  # the store really is out of reach
    assert reasons == ["VALID", "REVOKED"]


async def test_a_revoked_token_is_refused_with_its_cause_at_once_while_the_store_is_slow(
    start_server: StartServer, proxied_url: str, proxy: TcpProxy
) -> None:
    """The replacing device is read from the store, but a REVOKED answer never waits long
    for it (explanation_wait, here its default rather than the tests' longer wait): the
    cause comes from memory, the rest follows once the store answers."""
    stub = (await start_server(database_url=proxied_url, explanation_wait=Settings.explanation_wait)).stub
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone", device_name="the phone")
    proxy.delay(2.0)
    try:
        started = time.monotonic()
        slow = await asyncio.wait_for(stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token)),
                                      CALL_TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        proxy.delay(0)

    assert slow.reason == pb.INVALID_REASON_REVOKED
    assert slow.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
    assert slow.replaced_by_device_name == ""  # not read in time: left out of this answer
    assert elapsed < 1.5, elapsed
    deadline = time.monotonic() + RECOVER_WITHIN
    while True:  # the read went on, and a later answer has it
        later = await stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token), timeout=CALL_TIMEOUT)
        if later.replaced_by_device_id or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert (later.replaced_by_device_id, later.replaced_by_device_name) == ("phone", "the phone")
    assert later.revoked_at.seconds > 0


async def test_the_same_server_recovers_when_the_store_comes_back(running: Running, proxy: TcpProxy) -> None:
    stub, subject = running.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    proxy.cut()
    during = await unavailable(issue(stub, subject, "phone"))
    proxy.resume()

    phone = await eventually(issue(stub, subject, "phone"))
    tablet = await sign_in(stub, subject, "tablet")

    assert during[0] == "UNAVAILABLE", during
    assert list(phone.replaced_session_ids) == [laptop.session_id]
    assert list(tablet.replaced_session_ids) == [phone.session_id]
    assert [await reason(stub, t.access_token) for t in (laptop, phone, tablet)] == ["REVOKED", "REVOKED", "VALID"]
    assert await live_sessions(stub, subject) == [tablet.session_id]


@contextlib.contextmanager
def returned_to_pool(engine: Any) -> Iterator[list[Any]]:
    """The asyncpg connections ``engine``'s pool takes back during the block, each once."""
    returned: dict[int, Any] = {}

    def checked_in(dbapi_connection: Any, _record: Any) -> None:
        returned[id(dbapi_connection.driver_connection)] = dbapi_connection.driver_connection

    connections: list[Any] = []
    event.listen(engine, "checkin", checked_in)
    try:
        yield connections
    finally:
        event.remove(engine, "checkin", checked_in)
        connections.extend(returned.values())


async def test_pooled_connections_the_server_ended_are_replaced_at_checkout_and_no_call_fails(
    start_server: StartServer, postgres_url: str
) -> None:
    """The pool pings nothing per checkout (authority.store.postgres): a pooled connection
    the server ended while idle (a restart, a failover, an administrator) is refused when it
    is checked out and replaced by a new one, so no call fails for it."""
    running = await start_server(database_url=postgres_url)
    engine = running.server.authority.store.engine.sync_engine
    handed_out: list[Any] = []

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        handed_out.append(dbapi_connection.driver_connection)

    with returned_to_pool(engine) as returned:
        await asyncio.gather(*(sign_in(running.stub, new_subject(), "laptop") for _ in range(8)))
    ended = [c for c in returned if not c.is_closed()]
    assert ended, "the sign-ins returned no connection to the pool"
    observer = await asyncpg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(False))
    try:
        await observer.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid",
                               [c.get_server_pid() for c in ended])
        deadline = time.monotonic() + RECOVER_WITHIN
        while not all(c.is_closed() for c in ended):
            assert time.monotonic() < deadline, "the ended connections were never seen closed"
            await asyncio.sleep(0.01)
    finally:
        await observer.close()
    event.listen(engine, "checkout", checked_out)

    phones = await asyncio.gather(*(sign_in(running.stub, new_subject(), "phone") for _ in range(8)))

    assert all(phone.session_id for phone in phones)
    assert handed_out and not any(c.is_closed() for c in handed_out)
    assert not {id(c) for c in handed_out} & {id(c) for c in ended}


async def test_a_pooled_connection_ended_by_the_server_before_its_close_arrives_answers_unavailable(
    running: Running, proxy: TcpProxy, postgres_url: str
) -> None:
    """A server ending a connection (a switchover, an administrator) sends a FATAL error,
    then closes it. An idle connection that has the error but not yet the close looks open
    to the pool, and asyncpg refuses its next statement with InternalClientError ("another
    operation is in progress"). The proxy holds the close back, so that the window stays
    open: the calls that get such a connection answer UNAVAILABLE, never INTERNAL, and the
    authority serves again once the closes arrive."""
    store = running.server.authority.store
    with returned_to_pool(store.engine.sync_engine) as returned:
        async with contextlib.AsyncExitStack() as held_at_once:  # four connections into the pool
            for _ in range(4):
                await held_at_once.enter_async_context(store.driver())
    pooled = [c for c in returned if not c.is_closed()]
    assert len(pooled) >= 4, "the pool holds fewer connections than were returned to it"
    proxy.hold_ends()
    observer = await asyncpg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(False))
    try:
        await observer.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid",
                               [c.get_server_pid() for c in pooled])
    finally:
        await observer.close()
    deadline = time.monotonic() + RECOVER_WITHIN
    while proxy.held < len(pooled):
        assert time.monotonic() < deadline, "the server never ended the pooled connections"
        await asyncio.sleep(0.01)
    stuck = sum(not c.is_closed() for c in pooled)
    assert stuck >= 2  # the error has reached them, the close has not

    subject = new_subject()
    answers = {
        "IssueToken": await unavailable(issue(running.stub, subject, "phone")),
        "ListSessions": await unavailable(
            lambda: running.stub.ListSessions(pb.ListSessionsRequest(subject=subject), timeout=CALL_TIMEOUT)
        ),
    }
    left_open = sum(not c.is_closed() for c in pooled)
    proxy.release_ends()
    back = await eventually(issue(running.stub, new_subject(), "tablet"))

    assert {name: code for name, (code, _, _) in answers.items()} == {
        "IssueToken": "UNAVAILABLE", "ListSessions": "UNAVAILABLE"
    }, answers
    assert left_open <= stuck - 2  # each call closed the connection it drew, never to pool it again
    assert back.session_id


@pytest.mark.parametrize(
    ("message", "lost"),
    [
        ("cannot switch to state 12; another operation (2) is in progress", True),
        ('cannot switch to state 12; protocol is in the "failed" state', True),
        ("cannot process message 'E': protocol is in an unexpected state 0.", True),
        ("no encoder for OID 1234", False),  # a value no codec takes: a fault, not the database
    ],
)
def test_among_asyncpg_internal_client_errors_only_a_stuck_protocol_means_the_connection_is_lost(
    message: str, lost: bool
) -> None:
    error = asyncpg.InternalClientError(message)
    wrapped = exc.InternalError("SELECT 1", None, error)  # as SQLAlchemy's asyncpg dialect wraps it

    assert (translated(error) is not None, translated(wrapped) is not None) == (lost, lost)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (ConnectionResetError("reset by peer"), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), True),
        (asyncpg.AdminShutdownError("terminating connection due to administrator command"), True),
        (asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"), True),
        (TimeoutError(), False),  # a statement given up, whatever became of its connection
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), False),
        (asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"), False),
        (asyncpg.DivisionByZeroError("division by zero"), False),
        (asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"), False),  # a fault
    ],
)
def test_a_driver_error_counts_as_a_lost_connection_only_when_it_says_so(error: BaseException, lost: bool) -> None:
    assert connection_lost(error) is lost
    assert connection_lost(exc.OperationalError("SELECT 1", None, error)) is lost  # wrapped, it says the same


async def test_a_revocation_acknowledged_before_the_cut_survives_a_restart(
    start_server: StartServer, running: Running, proxy: TcpProxy, proxied_url: str
) -> None:
    subject = new_subject()
    revoked = await sign_in(running.stub, subject, "laptop")
    kept = await sign_in(running.stub, new_subject(), "laptop")
    await running.stub.RevokeToken(pb.RevokeTokenRequest(token=revoked.access_token))
    proxy.cut()
    during = await unavailable(issue(running.stub, subject, "phone"))
    proxy.resume()
    await eventually(lambda: live_sessions(running.stub, subject))
    await running.server.stop(None)

    restarted = await start_server(database_url=proxied_url)

    assert during[0] == "UNAVAILABLE", during
    assert await reason(restarted.stub, revoked.access_token) == "REVOKED"
    assert await reason(restarted.stub, kept.access_token) == "VALID"
    assert await live_sessions(restarted.stub, subject) == []


async def test_a_sign_in_refused_during_a_cut_leaves_no_session(running: Running, proxy: TcpProxy) -> None:
    stub, subject = running.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    proxy.cut()

    during = await unavailable(issue(stub, subject, "phone"))
    proxy.resume()

    assert during[0] == "UNAVAILABLE", during
    assert await eventually(lambda: live_sessions(stub, subject)) == [laptop.session_id]
    assert await reason(stub, laptop.access_token) == "VALID"


async def test_a_sign_in_cut_off_during_its_write_is_written_whole_or_not_at_all(
    running: Running, proxy: TcpProxy, postgres_url: str
) -> None:
    """The cut lands while the sign-in's write (one statement that commits: the phone's
    session, the laptop's revoked and logged) is at the database and its answer on the way
    back: the caller is told UNAVAILABLE, and the write stuck whole or not at all."""
    stub, subject = running.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    observer = await asyncpg.connect(make_url(postgres_url).set(drivername="postgresql").render_as_string(False))
    try:
        proxy.delay(0.1)  # COMMIT now reaches the database at least 0.2 s after the last insert
        started = time.monotonic()
        call = asyncio.ensure_future(unavailable(issue(stub, subject, "phone")))
        while not await _writing(observer):
            assert not call.done(), "the sign-in's write never reached the database"
            assert time.monotonic() - started < CALL_TIMEOUT, "the sign-in hung"
            await asyncio.sleep(0.01)
        proxy.cut()
        during = await call
        proxy.delay(0)
        proxy.resume()
        listed = await eventually(lambda: live_sessions(stub, subject))
        stored = await observer.fetch("SELECT device_id, revoked_at FROM sessions WHERE subject = $1", subject)
        logged = await observer.fetchval("SELECT count(*) FROM revocation_log WHERE subject = $1", subject)
    finally:
        await observer.close()

    assert during[0] == "UNAVAILABLE", during
    if listed == [laptop.session_id]:  # not at all
        assert [tuple(row) for row in stored] == [("laptop", None)]
        assert logged == 0
        assert await reason(stub, laptop.access_token) == "VALID"
    else:  # whole
        assert len(listed) == 1
        assert {row["device_id"]: row["revoked_at"] is None for row in stored} == {"laptop": False, "phone": True}
        assert logged == 1
        deadline = time.monotonic() + RECOVER_WITHIN  # once this replica's follower reads it
        while await eventually(lambda: reason(stub, laptop.access_token)) != "REVOKED":
            assert time.monotonic() < deadline, "the written revocation was never enforced"
            await asyncio.sleep(0.05)


async def _writing(observer: asyncpg.Connection) -> bool:
    """Whether a sign-in's write has reached the test database (it has been seen at it)."""
    query = """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND query ILIKE 'SELECT * FROM authority_sign_in%'
    """
    return bool(await observer.fetchval(query))


async def test_a_connection_whose_statement_failed_is_closed_not_pooled_again(postgres_url: str) -> None:
    """A statement that failed on the driver's connection (on a failover: a read-only
    server, a connection ending mid-answer) may leave asyncpg in the middle of an
    operation, which no check at checkout sees: that connection is closed. A refusal of the
    domain's, between statements, keeps it."""
    store = Store(create_engine(postgres_url, connections=1))
    try:
        async with store.driver(writes=False) as driver:
            first = driver.get_server_pid()
        with pytest.raises(SessionLimitReached):
            async with store.driver(writes=False) as driver:
                await driver.fetchval("SELECT 1")
                raise SessionLimitReached("a refusal between statements")
        async with store.driver(writes=False) as driver:
            kept = driver.get_server_pid()
        with pytest.raises(asyncpg.PostgresError):
            async with store.driver(writes=False) as driver:
                await driver.fetchval("SELECT 1 / 0")
        async with store.driver(writes=False) as driver:
            after_failure = driver.get_server_pid()
            answer = await asyncio.wait_for(driver.fetchval("SELECT 41 + 1"), CALL_TIMEOUT)
    finally:
        await store.close()

    assert kept == first
    assert after_failure != first
    assert answer == 42


async def test_errors_of_what_goes_straight_to_the_driver_are_reported_by_whether_the_connection_was_lost(
    proxied_url: str, proxy: TcpProxy
) -> None:
    """SQLAlchemy's handle_error hook (the metrics' store error counter) never sees the
    checkouts and statements of Store.driver, so the store reports those itself."""
    store = Store(create_engine(proxied_url, connections=1))
    reported: list[bool] = []
    store.driver_errors = reported.append
    try:
        with pytest.raises(SessionLimitReached):
            async with store.driver(writes=False) as driver:
                await driver.fetchval("SELECT 1")
                raise SessionLimitReached("a refusal of the domain's, not an error of the store")
        with pytest.raises(asyncpg.PostgresError):
            async with store.driver(writes=False) as driver:
                await driver.fetchval("SELECT 1 / 0")
        with pytest.raises(StoreUnavailable):
            async with store.driver(writes=False) as driver:
                proxy.cut()  # resets the pooled connection, and refuses new ones
                await asyncio.wait_for(driver.fetchval("SELECT 1"), CALL_TIMEOUT)
        with pytest.raises(StoreUnavailable):
            async with store.driver(writes=False):
                pass  # the checkout itself fails: a new connection, refused
    finally:
        proxy.resume()
        await store.close()

    assert reported == [False, True, True]


async def test_a_store_on_connections_of_its_own_reports_its_driver_errors_as_the_one_it_was_made_from(
    postgres_url: str,
) -> None:
    """The log follower reads through Store.dedicated: its errors count as the authority's."""
    store = Store.open(postgres_url)
    follower = store.dedicated()
    reported: list[bool] = []
    store.driver_errors = reported.append  # set after the dedicated store was made, as the metrics do
    try:
        with pytest.raises(asyncpg.PostgresError):
            async with follower.driver(writes=False) as driver:
                await driver.fetchval("SELECT 1 / 0")
    finally:
        await follower.close()
        await store.close()

    assert reported == [False]
