"""Several ``authority serve`` replicas on one PostgreSQL database, as real processes.

Revocations made through one replica are enforced by every other within a second, and a
consumer's feed resumes on any replica; the single-device rule holds when sign-ins are
spread over all of them; a replica killed mid-storm loses no acknowledged revocation; a
replica cut off from PostgreSQL (through a fault-injecting proxy, never by stopping the
shared server) fails closed and recovers alone, and a slow link is not an outage; a
rotated key is published everywhere before anyone signs with it; replicas starting
together on an empty database migrate once and make one key.

Three replicas (the "trio") run for the whole module on one database; tests use fresh
subjects, so they do not disturb each other. Tests that kill, cut off or start replicas
start their own.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
import pytest_asyncio
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.duration_pb2 import Duration
from sqlalchemy.engine import make_url

from authority.config import Algorithm
from authority.keys import activation_time, generate_key, rotate_key, stored_private_key
from authority.store import KeyRecord, Store
from authority.store.migrate import prepare_schema
from authority.store.store import KEYS_LOCK
from authority.store.store import MIGRATIONS_LOCK
from tests.conftest import TEST_KEY_ENCRYPTION_KEY, postgres_database
from tests.support.calls import named_in_time, new_subject
from tests.support.proxy import TcpProxy
from tests.support.replicas import Replica, ReplicaSet

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Every replica stores its keys sealed, as production on PostgreSQL must.
BASE_SETTINGS = {"key_encryption_key": TEST_KEY_ENCRYPTION_KEY}
CALL_TIMEOUT = 10.0
# The issue's loose bound on cross-replica visibility (the benchmark holds the 50 ms goal).
VISIBLE_WITHIN = 1.0
# Replicas behind the proxy: a short staleness bound and a fast poll, so outages are quick.
MAX_STALENESS = 2.0
POLL_INTERVAL = 0.2
RECOVER_WITHIN = 10.0
# A slow link: every chunk each way held back this long (a 20 ms round trip, ten times
# loopback's). One read of the log and the keys takes about a dozen round trips, and the
# view is as old as two reads and a poll: near 0.7 s, well inside MAX_STALENESS even on
# a loaded machine.
SLOW_LINK = 0.01
# How long before it signs a rotated key is published.
PUBLISH_AHEAD = 2.0


# Whether a transaction of this database has written (it holds a transaction id) and is
# still open: a revocation caught between its first write and its commit.
WRITING_TRANSACTION_OPEN = """
    SELECT count(*) > 0 FROM pg_stat_activity
    WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()
"""

REPLACE = pb.SESSION_POLICY_REPLACE
REJECT = pb.SESSION_POLICY_REJECT
HEARTBEAT = pb.REVOCATION_EVENT_KIND_HEARTBEAT
REVOCATION = pb.REVOCATION_EVENT_KIND_REVOCATION
CAUGHT_UP = pb.REVOCATION_EVENT_KIND_CAUGHT_UP


# ---------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_url() -> AsyncIterator[str]:
    """One database for the whole module."""
    async with postgres_database() as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def trio_set(shared_url: str) -> AsyncIterator[ReplicaSet]:
    replicas = ReplicaSet(shared_url, name="trio", **BASE_SETTINGS)
    try:
        await replicas.start(3)
        yield replicas
    finally:
        await replicas.close()


@pytest.fixture
def trio(trio_set: ReplicaSet) -> Iterator[list[Replica]]:
    """Three replicas on the module's database; their log lines of a failed test are shown."""
    marks = trio_set.marks()
    yield trio_set.replicas[:3]
    logged = trio_set.report(marks)
    print(logged)  # pytest shows it only when the test failed
    assert "Traceback" not in logged, "a replica logged an unexpected failure"


OpenReplicas = Callable[..., ReplicaSet]


@pytest_asyncio.fixture(loop_scope="module")
async def open_replicas() -> AsyncIterator[OpenReplicas]:
    """Replica sets of the test's own (``open_replicas(url, name, **settings)``), stopped after it."""
    sets: list[ReplicaSet] = []

    def open_set(database_url: str, name: str, **settings: str) -> ReplicaSet:
        replicas = ReplicaSet(database_url, name=name, **{**BASE_SETTINGS, **settings})
        sets.append(replicas)
        return replicas

    yield open_set
    for replicas in sets:
        await replicas.close()
    logged = "\n".join(replicas.report() for replicas in sets)
    print(logged)
    assert "Traceback" not in logged, "a replica logged an unexpected failure"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxy(shared_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(shared_url)
    proxy = await TcpProxy.start(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    await proxy.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied_set(shared_url: str, proxy: TcpProxy) -> AsyncIterator[ReplicaSet]:
    proxied = make_url(shared_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    replicas = ReplicaSet(
        proxied,
        name="proxied",
        **BASE_SETTINGS,
        max_staleness=f"{MAX_STALENESS}s",
        revocation_poll_interval=f"{int(POLL_INTERVAL * 1000)}ms",
    )
    try:
        await replicas.start_one()
        yield replicas
    finally:
        await replicas.close()


@pytest.fixture
def behind_proxy(proxied_set: ReplicaSet, proxy: TcpProxy) -> Iterator[Replica]:
    """A replica on the module's database whose every connection goes through the proxy,
    with a short staleness bound; the proxy forwards promptly again after each test."""
    marks = proxied_set.marks()
    yield proxied_set.replicas[0]
    proxy.delay(0)
    proxy.resume()
    logged = proxied_set.report(marks)
    print(logged)
    assert "Traceback" not in logged, "the replica logged an unexpected failure"


# ---------------------------------------------------------------- calls


async def sign_in(replica: Replica, subject: str, device_id: str, policy: int = REPLACE) -> pb.IssueTokenResponse:
    request = pb.IssueTokenRequest(subject=subject, device_id=device_id, policy=policy)  # type: ignore[arg-type]
    return await replica.stub.IssueToken(request, timeout=CALL_TIMEOUT)


async def revoke(replica: Replica, **target: str) -> int:
    answer = await replica.stub.RevokeToken(pb.RevokeTokenRequest(**target), timeout=CALL_TIMEOUT)
    return int(answer.revoked_sessions)


async def refresh(replica: Replica, refresh_token: str) -> pb.IssueTokenResponse:
    request = pb.RefreshTokenRequest(refresh_token=refresh_token)
    return await replica.stub.RefreshToken(request, timeout=CALL_TIMEOUT)


async def live_sessions(replica: Replica, subject: str) -> list[str]:
    answer = await replica.stub.ListSessions(pb.ListSessionsRequest(subject=subject), timeout=CALL_TIMEOUT)
    return [session.session_id for session in answer.sessions]


async def status_of(call: Awaitable[Any]) -> str:
    """OK, or the status code name the call failed with."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code().name
    return "OK"


async def rejected_after(replica: Replica, token: str, since: float, within: float = 5.0) -> float:
    """Seconds from ``since`` (a monotonic time) until ``replica`` answers REVOKED for ``token``.

    Gives up after ``within`` and returns infinity, so a slow replica fails an assert
    with a number rather than hanging.
    """
    while (outcome := await replica.outcome(token)) != "REVOKED":
        assert outcome == "VALID", f"{replica.name}: {outcome}"
        if time.monotonic() - since > within:
            return float("inf")
        await asyncio.sleep(0.002)
    return time.monotonic() - since


async def caught_up(replicas: list[Replica]) -> None:
    """Returns once every replica has read the revocation log up to now.

    For each replica, a marker session is revoked through another one and awaited here:
    the log is read in sequence order, and every entry committed earlier has a lower
    sequence, so a replica that rejects the marker has applied all of them.
    """
    for n, observer in enumerate(replicas):
        through = replicas[(n + 1) % len(replicas)]
        marker = await sign_in(through, new_subject(), "marker")
        await revoke(through, session_id=marker.session_id)
        seconds = await rejected_after(observer, marker.access_token, time.monotonic(), RECOVER_WITHIN)
        assert seconds < RECOVER_WITHIN, f"{observer.name} did not catch up with the log"


async def outcomes(replica: Replica, tokens: list[str]) -> list[str]:
    """The outcome of every token on ``replica``, a few calls at a time."""
    answers: list[str] = []
    for start in range(0, len(tokens), 50):
        answers += await asyncio.gather(*(replica.outcome(t) for t in tokens[start:start + 50]))
    return answers


async def signing_kids(replica: Replica) -> set[str]:
    answer = await replica.stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=CALL_TIMEOUT)
    return {key["kid"] for key in json.loads(answer.jwks_json)["keys"]}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def next_event(stream: Any, kind: int, *skipping: int, within: float = 5.0) -> pb.RevocationEvent:
    """The next event of ``kind`` on a WatchRevocations stream, skipping heartbeats, key sets
    and the kinds named in ``skipping``; any other event fails the test."""
    while True:
        event: pb.RevocationEvent = await asyncio.wait_for(stream.read(), within)
        if event.kind == kind:
            return event
        assert event.kind in (HEARTBEAT, pb.REVOCATION_EVENT_KIND_SIGNING_KEYS, *skipping), event


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = RECOVER_WITHIN) -> float:
    """Seconds until ``check`` holds; infinity if it has not within ``within``."""
    started = time.monotonic()
    while not await _holds(check):
        if time.monotonic() - started > within:
            return float("inf")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def until(condition: Callable[[], bool], failure: str, within: float = 30.0) -> None:
    """Returns once ``condition`` holds; fails the test with ``failure`` after ``within``."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.01)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    return await result if inspect.isawaitable(result) else bool(result)


# ---------------------------------------------------------------- cross-replica revocation


@pytest.mark.parametrize("target", ["token", "session_id", "subject"])
async def test_a_revocation_through_one_replica_is_enforced_by_every_replica(
    trio: list[Replica], target: str
) -> None:
    a, b, c = trio
    subject = new_subject()
    laptop = await sign_in(a, subject, "laptop")
    assert [await r.outcome(laptop.access_token) for r in trio] == ["VALID"] * 3
    value = {"token": laptop.access_token, "session_id": laptop.session_id, "subject": subject}[target]

    revoked = await revoke(b, **{target: value})
    returned = time.monotonic()
    at_once = await b.outcome(laptop.access_token)
    seconds = {r.name: await rejected_after(r, laptop.access_token, returned) for r in (a, c)}

    assert revoked == 1
    assert at_once == "REVOKED"
    assert all(s < VISIBLE_WITHIN for s in seconds.values()), seconds
    assert [await live_sessions(r, subject) for r in trio] == [[], [], []]


async def test_revocation_visibility_across_replicas_stays_under_a_second(trio: list[Replica]) -> None:
    """Time from RevokeToken returning on one replica to ValidateToken rejecting on another,
    each replica in turn the revoker; the p50/p99 are printed for the record."""
    samples: list[float] = []
    for n in range(30):
        revoker = trio[n % 3]
        laptop = await sign_in(trio[(n + 1) % 3], new_subject(), "laptop")
        await revoke(revoker, session_id=laptop.session_id)
        returned = time.monotonic()
        for observer in trio:
            if observer is not revoker:
                samples.append(await rejected_after(observer, laptop.access_token, returned))

    p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
    print(f"cross-replica revocation visibility over {len(samples)} samples: "
          f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms")
    assert max(samples) < VISIBLE_WITHIN, sorted(samples)[-5:]


async def test_a_second_device_through_another_replica_signs_the_first_out_everywhere(trio: list[Replica]) -> None:
    a, b, c = trio
    subject = new_subject()
    laptop = await sign_in(a, subject, "laptop")

    phone = await sign_in(b, subject, "phone")
    returned = time.monotonic()
    seconds = {r.name: await rejected_after(r, laptop.access_token, returned) for r in (a, c)}

    assert list(phone.replaced_session_ids) == [laptop.session_id]
    assert await b.outcome(laptop.access_token) == "REVOKED"
    assert all(s < VISIBLE_WITHIN for s in seconds.values()), seconds
    assert [await r.outcome(phone.access_token) for r in trio] == ["VALID"] * 3
    assert [await live_sessions(r, subject) for r in trio] == [[phone.session_id]] * 3


async def test_a_sign_in_on_one_replica_makes_another_say_replaced_by_sign_in_and_by_which_device(
    trio: list[Replica],
) -> None:
    a, b, _ = trio
    subject = new_subject()
    laptop = await sign_in(b, subject, "laptop")
    watching = b.stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=0))
    await next_event(watching, CAUGHT_UP, REVOCATION)
    events = b.stub.WatchSessionEvents(pb.WatchSessionEventsRequest())
    while (await asyncio.wait_for(events.read(), CALL_TIMEOUT)).kind != pb.SESSION_EVENT_KIND_CAUGHT_UP:
        pass

    phone = await a.stub.IssueToken(
        pb.IssueTokenRequest(subject=subject, device_id="phone-7", device_name="the phone"), timeout=CALL_TIMEOUT
    )
    await rejected_after(b, laptop.access_token, time.monotonic())
    answer = await named_in_time(
        lambda: b.stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token), timeout=CALL_TIMEOUT),
        lambda validated: bool(validated.replaced_by_device_name),
        within=CALL_TIMEOUT,
    )
    revoked = await next_event(watching, REVOCATION)
    watching.cancel()
    seen = []
    while len(seen) < 2:
        event = await asyncio.wait_for(events.read(), CALL_TIMEOUT)
        if event.subject == subject:
            seen.append(event)
    events.cancel()

    assert answer.reason == pb.INVALID_REASON_REVOKED
    assert answer.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
    assert (answer.replaced_by_device_id, answer.replaced_by_device_name) == ("phone-7", "the phone")
    assert (revoked.session_id, revoked.cause, revoked.replaced_by_device_id) == (
        laptop.session_id, pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN, "phone-7")
    assert [(e.kind, e.session_id) for e in seen] == [
        (pb.SESSION_EVENT_KIND_SESSION_ENDED, laptop.session_id),
        (pb.SESSION_EVENT_KIND_SIGNED_IN, phone.session_id),
    ]


async def test_a_refresh_token_replayed_on_another_replica_revokes_the_session_everywhere(trio: list[Replica]) -> None:
    a, b, c = trio
    laptop = await sign_in(a, new_subject(), "laptop")
    traded = await refresh(b, laptop.refresh_token)
    # Traded again: a replay of the first token is theft, not a retry within the grace.
    refreshed = await refresh(b, traded.refresh_token)

    replayed = await status_of(refresh(c, laptop.refresh_token))  # the copy an attacker kept
    returned = time.monotonic()
    seconds = {r.name: await rejected_after(r, refreshed.access_token, returned) for r in (a, b)}

    assert refreshed.session_id == laptop.session_id
    assert replayed == "UNAUTHENTICATED"
    assert await c.outcome(refreshed.access_token) == "REVOKED"
    assert all(s < VISIBLE_WITHIN for s in seconds.values()), seconds
    assert await status_of(refresh(a, refreshed.refresh_token)) == "UNAUTHENTICATED"


async def test_a_refresh_retried_on_another_replica_within_the_grace_keeps_the_session(trio: list[Replica]) -> None:
    """A reply lost on one replica, the retry answered by another: same session, one live pair."""
    a, b, c = trio
    laptop = await sign_in(a, new_subject(), "laptop")
    lost = await refresh(b, laptop.refresh_token)

    retried = await refresh(c, laptop.refresh_token)

    assert retried.session_id == laptop.session_id
    assert await a.outcome(retried.access_token) == "VALID"
    assert await status_of(refresh(a, lost.refresh_token)) == "UNAUTHENTICATED"  # the lost pair's token died


async def test_a_revocation_feed_resumes_on_another_replica_from_its_last_sequence(trio: list[Replica]) -> None:
    """A consumer behind a load balancer reconnects to whichever replica answers: sequences
    are the log's, not a replica's, so it resumes on any of them and misses nothing."""
    a, b, c = trio
    sessions = [await sign_in(trio[n % 3], new_subject(), "laptop") for n in range(6)]
    ours = {s.session_id for s in sessions}
    on_a = a.stub.WatchRevocations(pb.WatchRevocationsRequest())
    await next_event(on_a, CAUGHT_UP, REVOCATION)  # past the module's earlier revocations
    for replica, signed_in in zip((a, b, c), sessions[:3]):
        await revoke(replica, session_id=signed_in.session_id)
    before = [await next_event(on_a, REVOCATION) for _ in range(3)]
    on_a.cancel()
    for replica, signed_in in zip((c, b, a), sessions[3:]):  # while the consumer is away
        await revoke(replica, session_id=signed_in.session_id)

    on_b = b.stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=before[-1].sequence))
    after = [await next_event(on_b, REVOCATION) for _ in range(3)]
    caught_up = await next_event(on_b, CAUGHT_UP)
    on_b.cancel()

    sequences = [event.sequence for event in before + after]
    assert [event.session_id for event in before + after] == [s.session_id for s in sessions]
    assert sequences == sorted(set(sequences))
    assert caught_up.sequence == after[-1].sequence
    assert {event.session_id for event in before + after} == ours


# ---------------------------------------------------------------- the single-device race


@pytest.mark.parametrize("policy", [REPLACE, REJECT], ids=["REPLACE", "REJECT"])
async def test_concurrent_sign_ins_spread_over_three_replicas_leave_one_valid_session(
    trio: list[Replica], policy: int
) -> None:
    subject, devices = new_subject(), 45
    calls = [sign_in(trio[n % 3], subject, f"device-{n}", policy) for n in range(devices)]

    results = await asyncio.gather(*calls, return_exceptions=True)
    await caught_up(trio)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    refused = [r for r in results if not isinstance(r, pb.IssueTokenResponse)]
    if policy == REPLACE:
        assert len(issued) == devices, refused
    else:
        assert len(issued) == 1
        assert {r.code() for r in refused if isinstance(r, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.FAILED_PRECONDITION
        }
        assert len(refused) == devices - 1, refused
    tokens = [r.access_token for r in issued]
    seen = {r.name: await outcomes(r, tokens) for r in trio}
    valid = {name: [i.session_id for i, o in zip(issued, answers) if o == "VALID"] for name, answers in seen.items()}
    assert all(len(v) == 1 for v in valid.values()), valid
    assert len({tuple(v) for v in valid.values()}) == 1, f"the replicas disagree: {valid}"
    assert all(set(answers) <= {"VALID", "REVOKED"} for answers in seen.values()), seen
    winner = valid[trio[0].name]
    assert [await live_sessions(r, subject) for r in trio] == [winner] * 3
    if policy == REPLACE:
        replaced = sorted(sid for r in issued for sid in r.replaced_session_ids)
        assert replaced == sorted(i.session_id for i in issued if i.session_id not in winner)


# ---------------------------------------------------------------- a replica killed mid-storm


async def test_a_replica_killed_during_a_sign_in_storm_loses_no_acknowledged_revocation(
    trio: list[Replica], shared_url: str, open_replicas: OpenReplicas
) -> None:
    """Sign-ins and logouts of several subjects hammer all replicas; one is SIGKILLed in
    the middle. Every revocation any replica acknowledged is enforced by the survivors and
    by a replica started afterwards, and no subject has more than one valid session."""
    victim = await open_replicas(shared_url, "victim").start_one()
    everyone = [*trio, victim]
    subjects = [new_subject() for _ in range(6)]
    acknowledged: list[tuple[str, pb.IssueTokenResponse]] = []  # (subject, sign-in)
    acknowledged_by: dict[str, int] = dict.fromkeys((r.name for r in everyone), 0)
    revoked_ok: set[str] = set()  # session ids whose revocation was acknowledged
    failures: list[tuple[str, str]] = []  # (replica, status)
    stop = asyncio.Event()

    async def worker(subject: str, w: int) -> None:
        n = 0
        mine: list[pb.IssueTokenResponse] = []
        while not stop.is_set():
            n += 1
            replica = everyone[(w + n) % len(everyone)]
            try:
                if n % 7 == 0 and w == 0:
                    # Sign the subject out everywhere: every session acknowledged so far ends.
                    before = {i.session_id for s, i in acknowledged if s == subject}
                    await revoke(replica, subject=subject)
                    revoked_ok.update(before)
                elif n % 3 == 0 and mine:
                    # A logout of one of this worker's earlier sessions, through another replica.
                    session_id = mine[-1].session_id
                    await revoke(replica, session_id=session_id)
                    revoked_ok.add(session_id)
                else:
                    issued = await sign_in(replica, subject, f"device-{w}-{n}")
                    mine.append(issued)
                    acknowledged.append((subject, issued))
                    acknowledged_by[replica.name] += 1
            except grpc.aio.AioRpcError as error:
                failures.append((replica.name, error.code().name))
                await asyncio.sleep(0.01)

    workers = [asyncio.create_task(worker(s, w)) for s in subjects for w in range(3)]
    # Killed once the storm is well under way on every replica, however loaded the machine.
    await until(lambda: min(acknowledged_by.values()) >= 5, "the storm did not get going")
    victim.kill()
    killed_at = len(acknowledged)
    await until(lambda: len(acknowledged) >= killed_at + 30 and len(failures) >= 3, "the storm stalled after the kill")
    stop.set()
    await asyncio.gather(*workers)
    await victim.process.wait()
    await caught_up(trio)

    assert {r for r, _ in failures} == {victim.name}, f"only the killed replica may fail: {failures}"
    assert {code for _, code in failures} == {"UNAVAILABLE"}, failures
    replaced = {sid for _, i in acknowledged for sid in i.replaced_session_ids}
    must_be_revoked = replaced | revoked_ok
    tokens = [i.access_token for _, i in acknowledged]
    # A replica started now loads the store's view: it has nothing to catch up on.
    restarted = await open_replicas(shared_url, "restarted").start_one()

    for replica in [*trio, restarted]:
        answers = await outcomes(replica, tokens)
        assert set(answers) <= {"VALID", "REVOKED"}, f"{replica.name}: {set(answers)}"
        lost = [
            i.session_id
            for (_, i), outcome in zip(acknowledged, answers)
            if i.session_id in must_be_revoked and outcome != "REVOKED"
        ]
        assert not lost, f"{replica.name} lost acknowledged revocations: {lost}"
        for subject in subjects:
            valid = [i.session_id for (s, i), o in zip(acknowledged, answers) if s == subject and o == "VALID"]
            live = await live_sessions(replica, subject)
            assert len(valid) <= 1 and len(live) <= 1, f"{replica.name} {subject}: valid {valid}, live {live}"
            assert set(valid) <= set(live), f"{replica.name} {subject}: valid {valid}, live {live}"
            assert not set(live) & must_be_revoked, f"{replica.name} {subject}: {live} was revoked"


# ---------------------------------------------------------------- PostgreSQL out of reach


class Traffic:
    """Validations of some tokens on one replica, every few milliseconds, with the send time
    of each, until stopped."""

    def __init__(self, replica: Replica, tokens: dict[str, str]) -> None:
        self.answers: list[tuple[float, str, str]] = []  # (sent at, token name, outcome)
        self._replica = replica
        self._tokens = tokens
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for name, token in self._tokens.items():
                sent = time.monotonic()
                self.answers.append((sent, name, await self._replica.outcome(token)))
            await asyncio.sleep(0.03)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def between(self, start: float, end: float) -> list[tuple[str, str]]:
        return [(name, outcome) for sent, name, outcome in self.answers if start <= sent < end]


class Feed:
    """A WatchRevocations stream on one replica, every event kept with the time it arrived."""

    def __init__(self, replica: Replica, heartbeat: float) -> None:
        request = pb.WatchRevocationsRequest()
        request.heartbeat_interval.CopyFrom(Duration(nanos=int(heartbeat * 1e9)))
        self._call = replica.stub.WatchRevocations(request)
        self.events: list[tuple[float, pb.RevocationEvent]] = []
        self.ended: str | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for event in self._call:
                self.events.append((time.monotonic(), event))
            self.ended = "OK"
        except grpc.aio.AioRpcError as error:
            self.ended = error.code().name

    def heartbeats(self, start: float, end: float = float("inf")) -> list[float]:
        return [at for at, event in self.events if event.kind == HEARTBEAT and start <= at < end]

    def revoked_sessions(self) -> set[str]:
        return {event.session_id for _, event in self.events if event.kind == REVOCATION}

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_replica_cut_off_from_postgresql_fails_closed_then_recovers_alone(
    trio: list[Replica], behind_proxy: Replica, proxy: TcpProxy
) -> None:
    """The proxy resets every connection of one replica to PostgreSQL and refuses new ones
    for a while, under a steady flow of validations and a revocation feed; a replica not
    behind the proxy revokes a token meanwhile."""
    replica, direct = behind_proxy, trio[0]
    subject = new_subject()
    laptop = await sign_in(replica, subject, "laptop")
    doomed = await sign_in(replica, new_subject(), "laptop")  # revoked elsewhere during the outage
    kept_subject = new_subject()
    kept = await sign_in(replica, kept_subject, "laptop")  # a logout of it is attempted during the outage
    feed = Feed(replica, heartbeat=0.2)
    traffic = Traffic(replica, {"laptop": laptop.access_token, "doomed": doomed.access_token})
    try:
        assert await eventually(lambda: bool(feed.heartbeats(0)), 5) < 5, "no heartbeat before the cut"

        proxy.cut()
        cut_at = time.monotonic()
        from_memory = await replica.outcome(laptop.access_token)
        writes = {
            "IssueToken": await status_of(sign_in(replica, subject, "phone")),
            "RefreshToken": await status_of(refresh(replica, laptop.refresh_token)),
            "RevokeToken": await status_of(revoke(replica, session_id=kept.session_id)),
        }
        revoked_elsewhere = await revoke(direct, session_id=doomed.session_id)
        await asyncio.sleep(max(0.0, cut_at + MAX_STALENESS + 1.0 - time.monotonic()))
        stale = [await replica.outcome(t.access_token) for t in (laptop, doomed, kept)]
        health_while_stale = await replica.serving()
        resumed_at = time.monotonic()
        proxy.resume()

        async def recovered() -> bool:
            with contextlib.suppress(grpc.aio.AioRpcError):
                return await replica.serving() == "SERVING" and await replica.outcome(laptop.access_token) == "VALID"
            return False

        recovered_in = await eventually(recovered)
        after = [await replica.outcome(t.access_token) for t in (laptop, doomed, kept)]
        heartbeat_back = await eventually(lambda: bool(feed.heartbeats(resumed_at)), 5)
        feed_got_revocation = await eventually(lambda: doomed.session_id in feed.revoked_sessions(), 5)
    finally:
        await traffic.stop()
        await feed.close()

    # Writes through the cut-off replica are refused, and none of them happened.
    assert writes == dict.fromkeys(writes, "UNAVAILABLE"), writes
    assert revoked_elsewhere == 1
    assert await live_sessions(direct, subject) == [laptop.session_id]
    assert await live_sessions(direct, kept_subject) == [kept.session_id]
    # Answers from memory until the view is max_staleness old, then UNAVAILABLE, never valid.
    assert from_memory == "VALID"
    early = traffic.between(cut_at, cut_at + MAX_STALENESS - POLL_INTERVAL - 0.5)
    assert early and all(outcome != "UNAVAILABLE" for _, outcome in early), early
    late = traffic.between(cut_at + MAX_STALENESS + 0.25, resumed_at)
    assert late and {outcome for _, outcome in late} == {"UNAVAILABLE"}, sorted(set(late))
    assert stale == ["UNAVAILABLE"] * 3
    assert health_while_stale == "NOT_SERVING"
    assert not feed.heartbeats(cut_at + 1.0, resumed_at), "heartbeats kept coming from a stale view"
    assert feed.ended is None, f"the feed ended: {feed.ended}"
    # Back on its own: serving, the revocation made elsewhere enforced, the feed alive.
    assert recovered_in < RECOVER_WITHIN
    assert after == ["VALID", "REVOKED", "VALID"]
    assert heartbeat_back < 5, "heartbeats did not resume"
    assert feed_got_revocation < 5, "the feed did not pass on the revocation made during the outage"
    # Once stale, the token revoked elsewhere never validates again: not while stale, and
    # not after the recovery (the log is read before the view is confirmed current).
    doomed_later = [o for name, o in traffic.between(cut_at + MAX_STALENESS + 0.25, float("inf")) if name == "doomed"]
    assert "VALID" not in doomed_later
    # The refresh refused during the outage did not use the refresh token up.
    refreshed = await refresh(replica, laptop.refresh_token)
    assert refreshed.session_id == laptop.session_id


async def test_a_slow_link_to_postgresql_keeps_the_replica_current(
    trio: list[Replica], behind_proxy: Replica, proxy: TcpProxy
) -> None:
    """Every chunk to and from PostgreSQL held back: slower, but still current and correct."""
    replica, direct = behind_proxy, trio[0]
    subject = new_subject()
    laptop = await sign_in(replica, subject, "laptop")
    doomed = await sign_in(direct, new_subject(), "laptop")
    traffic = Traffic(replica, {"laptop": laptop.access_token})
    try:
        proxy.delay(SLOW_LINK)
        slowed_at = time.monotonic()
        await revoke(direct, session_id=doomed.session_id)
        seen_in = await rejected_after(replica, doomed.access_token, time.monotonic(), MAX_STALENESS)
        phone = await sign_in(replica, subject, "phone")
        await asyncio.sleep(max(0.0, slowed_at + MAX_STALENESS + 1.0 - time.monotonic()))
        health = await replica.serving()
    finally:
        proxy.delay(0)
        await traffic.stop()

    answers = {outcome for _, outcome in traffic.between(slowed_at, float("inf"))}
    assert seen_in < MAX_STALENESS, "a revocation made elsewhere was not seen over the slow link"
    assert list(phone.replaced_session_ids) == [laptop.session_id]
    assert health == "SERVING"
    assert "UNAVAILABLE" not in answers, answers
    assert await rejected_after(direct, laptop.access_token, time.monotonic()) < VISIBLE_WITHIN


async def test_a_replica_partitioned_mid_revocation_does_not_stop_the_others_revoking(
    trio: list[Replica], behind_proxy: Replica, proxy: TcpProxy, shared_url: str
) -> None:
    """A silent partition, not a reset: the proxy stops passing anything on while the
    replica behind it is inside a revocation, so PostgreSQL sees an idle transaction that
    never ends, not a closed connection."""
    replica, healthy = behind_proxy, trio[0]
    stranded_subject = new_subject()
    stranded = await sign_in(replica, stranded_subject, "laptop")
    other = await sign_in(healthy, new_subject(), "laptop")
    observer = await asyncpg.connect(make_url(shared_url).set(drivername="postgresql").render_as_string(False))
    try:
        proxy.delay(0.05)  # slow enough to catch the revocation between its first write and COMMIT
        stuck = asyncio.ensure_future(status_of(revoke(replica, session_id=stranded.session_id)))
        deadline = time.monotonic() + CALL_TIMEOUT
        while not await observer.fetchval(WRITING_TRANSACTION_OPEN):
            assert not stuck.done() and time.monotonic() < deadline, "never saw the revocation write"
            await asyncio.sleep(0.01)
        proxy.delay(3600)  # the partition: nothing more gets through, and nothing is reset
        started = time.monotonic()
        request = pb.RevokeTokenRequest(session_id=other.session_id)
        elsewhere = await status_of(healthy.stub.RevokeToken(request, timeout=6))
        took = time.monotonic() - started
    finally:
        proxy.cut()  # the partition heals as a reset: PostgreSQL rolls the stranded transaction back
        proxy.delay(0)
        proxy.resume()
        await observer.close()
    stranded_answer = await asyncio.wait_for(stuck, CALL_TIMEOUT)

    assert stranded_answer == "UNAVAILABLE"
    assert await live_sessions(healthy, stranded_subject) == [stranded.session_id]  # it never committed
    assert elsewhere == "OK", f"a revocation through a healthy replica answered {elsewhere} after {took:.1f} s"


# ---------------------------------------------------------------- keys


async def test_a_rotated_key_is_published_by_every_replica_before_any_signs_with_it(
    trio: list[Replica], shared_url: str
) -> None:
    before = await sign_in(trio[0], new_subject(), "laptop")
    old_kid = kid_of(before.access_token)
    published: dict[str, float] = {}  # replica -> when it was first seen publishing the new key
    signed: dict[str, tuple[float, str]] = {}  # replica -> (when it was asked, token) of its first new-key token
    store = Store.open(shared_url)
    try:
        kek = base64.b64decode(TEST_KEY_ENCRYPTION_KEY)
        key = await rotate_key(store, Algorithm.EDDSA, time.time(), PUBLISH_AHEAD, kek)
    finally:
        await store.close()
    rotated_at = time.monotonic()

    async def watch_keys(replica: Replica) -> None:
        while replica.name not in published:
            if key.kid in await signing_kids(replica):
                published[replica.name] = time.monotonic()
            await asyncio.sleep(0.01)

    async def sign_until_new_key(replica: Replica) -> None:
        while replica.name not in signed:
            asked = time.monotonic()
            issued = await sign_in(replica, new_subject(), "laptop")
            if kid_of(issued.access_token) != old_kid:
                signed[replica.name] = (asked, issued.access_token)
            await asyncio.sleep(0.02)

    await asyncio.wait_for(
        asyncio.gather(*(watch_keys(r) for r in trio), *(sign_until_new_key(r) for r in trio)), PUBLISH_AHEAD + 10
    )

    assert max(published.values()) - rotated_at < VISIBLE_WITHIN, {n: t - rotated_at for n, t in published.items()}
    first_signed = min(asked for asked, _ in signed.values())
    assert max(published.values()) < first_signed, "a replica signed with a key not every replica published yet"
    assert first_signed - rotated_at > PUBLISH_AHEAD - 1.0, "the new key signed before its publish-ahead passed"
    assert {kid_of(token) for _, token in signed.values()} == {key.kid}
    tokens = [before.access_token, *(token for _, token in signed.values())]
    assert [await outcomes(r, tokens) for r in trio] == [["VALID"] * len(tokens)] * 3
    assert [{old_kid, key.kid} <= await signing_kids(r) for r in trio] == [True] * 3


async def test_a_rotated_key_the_replicas_cannot_open_does_not_stop_them_following_the_log() -> None:
    """A key stored sealed under another key-encryption key (keys rotate now refuses that
    slip, but a row can come from elsewhere: a restore, another deployment's tool). The
    replicas cannot sign with it, but their view of the revocation log is as current as ever."""
    async with postgres_database() as url:
        replicas = ReplicaSet(
            url,
            name="wrong-kek",
            **BASE_SETTINGS,
            max_staleness=f"{MAX_STALENESS}s",
            revocation_poll_interval=f"{int(POLL_INTERVAL * 1000)}ms",
        )
        try:
            a, b = await replicas.start(2)
            laptop = await sign_in(a, new_subject(), "laptop")
            phone = await sign_in(a, new_subject(), "phone")
            store = Store.open(url)
            try:
                now = time.time()
                key = generate_key(Algorithm.EDDSA, now, activates_at=activation_time(now, 3600))
                async with store.transaction() as tx:  # past rotate_key, which would refuse it
                    await tx.lock_keys()
                    await tx.insert_key(KeyRecord(key.kid, key.algorithm.value,
                                                  stored_private_key(key, secrets.token_bytes(32)),
                                                  key.created_at, key.activates_at))
            finally:
                await store.close()
            await asyncio.sleep(MAX_STALENESS + 1.0)

            assert [await r.serving() for r in (a, b)] == ["SERVING", "SERVING"]
            assert [await r.outcome(laptop.access_token) for r in (a, b)] == ["VALID", "VALID"]
            await revoke(a, session_id=phone.session_id)
            assert await rejected_after(b, phone.access_token, time.monotonic()) < VISIBLE_WITHIN
        finally:
            await replicas.close()  # before the database goes
            print(replicas.report())


# ---------------------------------------------------------------- migrations


async def test_replicas_starting_together_on_an_empty_database_make_one_schema_and_one_key(
    open_replicas: OpenReplicas,
) -> None:
    """The test holds the migration and key locks while three replicas start, so all three
    reach each at the same moment, however the machine schedules their start-up."""
    async with postgres_database() as url:
        holder = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            await holder.execute("SELECT pg_advisory_lock($1), pg_advisory_lock($2)", MIGRATIONS_LOCK, KEYS_LOCK)
            replicas = open_replicas(url, "fresh")
            starting = asyncio.ensure_future(replicas.start(3))
            await until_waiting(holder, {MIGRATIONS_LOCK: 3}, starting)
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK)
            # One migrates while the others wait; then all three find no key and wait to make one.
            await until_waiting(holder, {KEYS_LOCK: 3}, starting)
            await holder.execute("SELECT pg_advisory_unlock($1)", KEYS_LOCK)
            started = await asyncio.wait_for(starting, 60)
            versions = await holder.fetchval("SELECT count(*) FROM alembic_version")
            keys = await holder.fetchval("SELECT count(*) FROM signing_keys")
        finally:
            await holder.close()
        store = Store.open(url)
        try:
            migrated_again = await prepare_schema(store, upgrade=False)  # None: at the newest revision
        finally:
            await store.close()
        jwks = [await signing_kids(r) for r in started]
        laptop = await sign_in(started[0], new_subject(), "laptop")
        answers = [await r.outcome(laptop.access_token) for r in started]
        await replicas.close()
    logs = "".join(line for r in started for line in r.log)

    assert migrated_again is None
    assert (versions, keys) == (1, 1)
    assert len(jwks[0]) == 1 and jwks == [jwks[0]] * 3
    assert answers == ["VALID"] * 3
    assert logs.count("created the database schema") == 1
    assert logs.count("generated signing key") == 1


async def until_waiting(connection: asyncpg.Connection, waiting: dict[int, int], starting: asyncio.Future[Any]) -> None:
    """Returns once exactly ``waiting[lock]`` sessions wait for each advisory lock."""
    query = """
        SELECT (classid::bigint << 32) | objid::bigint AS lock, count(*) FROM pg_locks
        WHERE locktype = 'advisory' AND NOT granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        GROUP BY 1
    """
    deadline = time.monotonic() + 60
    while True:
        rows = {row["lock"]: row["count"] for row in await connection.fetch(query)}
        if rows == waiting:
            return
        if starting.done():
            starting.result()  # a replica that failed to start says why
            raise AssertionError(f"the replicas started without waiting for the locks: {rows}")
        assert time.monotonic() < deadline, f"never saw {waiting} waiting, last {rows}"
        await asyncio.sleep(0.02)
