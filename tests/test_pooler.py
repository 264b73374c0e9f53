"""The main pool through a real PgBouncer 1.18 in transaction mode; LISTEN and the
maintenance lock on a session URL of their own.

PgBouncer here serves many clients from three server connections, refuses startup
parameters, and has no prepared-statement support: what asyncpg does by default fails at
once. Sign-ins, the single-device race and cross-replica revocation must still hold, with
two `authority serve` replicas; and transaction pooling with no listener URL must be
refused at start, never left to lose notifications silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import pytest_asyncio
from authority_client.v1 import authority_pb2 as pb
from sqlalchemy.engine import make_url

from authority.errors import StoreUnavailable
from authority.store import Store
from authority.store.store import MAINTENANCE_LOCK
from tests.conftest import POSTGRES_URL, TEST_KEY_ENCRYPTION_KEY, postgres_database
from tests.support.calls import new_subject
from tests.support.pgbouncer import PgBouncer
from tests.support.replicas import AUTHORITY, Replica, ReplicaSet

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALL_TIMEOUT = 10.0
VISIBLE_WITHIN = 2.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def direct_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    server = make_url(POSTGRES_URL)
    running = PgBouncer.start(server.host or "127.0.0.1", server.port or 5432, pool_size=3)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pooled_url(bouncer: PgBouncer, direct_url: str) -> str:
    return bouncer.url(make_url(direct_url).database or "postgres")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(direct_url: str, pooled_url: str) -> AsyncIterator[list[Replica]]:
    replicas = ReplicaSet(
        pooled_url, name="pooled", key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        database_transaction_pooling="true", listen_database_url=direct_url,
        # A long poll: a revocation reaches the other replica by NOTIFY, or not in time.
        revocation_poll_interval="4s", max_staleness="10s",
    )
    try:
        yield await replicas.start(2)
    finally:
        await replicas.close()


async def test_the_pooler_refuses_what_asyncpg_does_by_default(pooled_url: str) -> None:
    """The harness is the real thing: startup parameters are refused."""
    url = make_url(pooled_url)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await asyncpg.connect(host=url.host, port=url.port, user="postgres", database=url.database,
                              server_settings={"lock_timeout": "5s"}, timeout=5)


async def test_the_store_through_the_pooler_sets_its_timeouts_in_every_transaction(
    pooled_url: str, direct_url: str, pair: list[Replica]
) -> None:
    store = Store.open(pooled_url, listen_url=direct_url, transaction_pooling=True)
    try:
        async with store.transaction() as tx:
            settings = (await tx.conn.exec_driver_sql(
                "SELECT current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout')"
            )).one()
        assert tuple(settings) == ("5s", "3s")
        # Many transactions at once over three server connections: no statement clashes.
        await asyncio.gather(*(store.last_sequence() for _ in range(60)))
    finally:
        await store.close()


async def sign_in(replica: Replica, subject: str, device_id: str) -> pb.IssueTokenResponse:
    request = pb.IssueTokenRequest(subject=subject, device_id=device_id, policy=pb.SESSION_POLICY_REPLACE)
    return await replica.stub.IssueToken(request, timeout=CALL_TIMEOUT)


async def test_sign_ins_through_the_pooler(pair: list[Replica]) -> None:
    a, b = pair
    signed = [await sign_in(pair[n % 2], new_subject(), "laptop") for n in range(20)]
    for replica in pair:
        assert [await replica.outcome(s.access_token) for s in signed] == ["VALID"] * 20
    assert a.running and b.running


async def test_the_single_device_race_through_the_pooler(pair: list[Replica]) -> None:
    subject, devices = new_subject(), 30
    results = await asyncio.gather(*(sign_in(pair[n % 2], subject, f"device-{n}") for n in range(devices)))
    tokens = [r.access_token for r in results]
    deadline = time.monotonic() + VISIBLE_WITHIN * 3
    while True:
        seen = [[await replica.outcome(t) for t in tokens] for replica in pair]
        if all(answers.count("VALID") == 1 for answers in seen) or time.monotonic() > deadline:
            break
    assert all(answers.count("VALID") == 1 for answers in seen), seen
    assert seen[0].index("VALID") == seen[1].index("VALID")
    listed = await pair[0].stub.ListSessions(pb.ListSessionsRequest(subject=subject), timeout=CALL_TIMEOUT)
    assert [s.session_id for s in listed.sessions] == [results[seen[0].index("VALID")].session_id]


async def test_a_revocation_reaches_the_other_replica_by_notification(pair: list[Replica]) -> None:
    a, b = pair
    samples = []
    for n in range(5):
        revoker, observer = pair[n % 2], pair[(n + 1) % 2]
        laptop = await sign_in(observer, new_subject(), "laptop")
        assert await observer.outcome(laptop.access_token) == "VALID"
        await revoker.stub.RevokeToken(pb.RevokeTokenRequest(session_id=laptop.session_id), timeout=CALL_TIMEOUT)
        returned = time.monotonic()
        while await observer.outcome(laptop.access_token) != "REVOKED":
            assert time.monotonic() - returned < VISIBLE_WITHIN, "the revocation was not notified"
        samples.append(time.monotonic() - returned)
    # Well under the 4 s poll: the LISTEN connection on the session URL carried it.
    assert max(samples) < VISIBLE_WITHIN, samples


async def test_transaction_pooling_without_a_listener_url_is_refused_at_start(pooled_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        AUTHORITY, "serve", "--listen", "127.0.0.1:0", "--database-url", pooled_url,
        env={"PATH": "/usr/bin:/bin", "AUTHORITY_DATABASE_TRANSACTION_POOLING": "true",
             "AUTHORITY_KEY_ENCRYPTION_KEY": TEST_KEY_ENCRYPTION_KEY},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode != 0
    assert "listen_database_url" in stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_a_replica_through_the_pooler_answers_unavailable_when_pgbouncer_is_gone(
    direct_url: str, pair: list[Replica]
) -> None:
    """PgBouncer's own errors (no server, pool closed) are "not available now" too."""
    lone = PgBouncer.start("127.0.0.1", 1, pool_size=1)  # in front of nothing
    store = Store.open(lone.url("postgres"), listen_url=direct_url, transaction_pooling=True)
    try:
        with pytest.raises(StoreUnavailable):
            await store.last_sequence()
    finally:
        await store.close()
        lone.stop()


async def test_the_maintenance_lock_is_held_on_the_session_url(pooled_url: str, direct_url: str) -> None:
    """A session-level advisory lock through transaction pooling would be taken on one
    server connection and live on after ours moved on; it goes to the session URL."""
    first = Store.open(pooled_url, listen_url=direct_url, transaction_pooling=True)
    second = Store.open(pooled_url, listen_url=direct_url, transaction_pooling=True)
    try:
        async with first.exclusive(MAINTENANCE_LOCK) as mine:
            async with second.exclusive(MAINTENANCE_LOCK) as theirs:
                assert mine and not theirs
        async with second.exclusive(MAINTENANCE_LOCK) as theirs_now:
            assert theirs_now  # released when the first block ended
    finally:
        await first.close()
        await second.close()
    assert first.session_engine.url.port == make_url(direct_url).port != first.engine.url.port
