"""A real Patroni cluster fails over under a storm through two `authority serve` replicas,
and nothing acknowledged is lost.

Three PostgreSQL members managed by Patroni and etcd (tests/support/patroni.py), with
synchronous_mode on; two replicas on one URL naming every member with
target_session_attrs=read-write. Each scenario runs a storm of sign-ins and revocations
(bounded in count and time) while a fault happens:

- the leader's postgres crashes alone, and Patroni restarts it in place (no failover);
- a planned switchover (patronictl switchover) to the synchronous standby;
- the leader node dies (its Patroni and its postgres SIGKILLed), and Patroni promotes
  the synchronous standby once the leader key expires.

Afterwards: every acknowledged sign-in's session exists; every acknowledged revocation
refuses its token on both replicas; no subject has two live sessions; no watcher of the
revocation feed skipped a committed revocation or saw one twice within an epoch; every
failed call said UNAVAILABLE (never INTERNAL or UNKNOWN); and while a replica could not
read the log, it never answered "valid" beyond max_staleness. The time until the
replicas serve again is measured and printed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import TEST_KEY_ENCRYPTION_KEY
from tests.support.calls import new_subject
from tests.support.patroni import PatroniCluster
from tests.support.replicas import Replica, ReplicaSet

pytestmark = [pytest.mark.ha, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

MAX_STALENESS = 2.0
POLL_INTERVAL = 0.2
CALL_TIMEOUT = 5.0
# The storm: this many workers, at most this many subjects each, for at most this long
# after the fault (which comes once the storm has made BEFORE_FAULT sign-ins).
WORKERS = 4
SUBJECTS_PER_WORKER = 60
BEFORE_FAULT = 20  # acknowledged sign-ins
STORM_AFTER_FAULT = 25.0
SERVING_WITHIN = 45.0
# What a failed call may say: "not available now", or the client's own deadline.
RETRYABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
# How long past max_staleness a replica may still vouch from its last good read (the
# poll interval and a scheduling margin on two busy cores).
STALENESS_MARGIN = 1.5


@pytest.fixture(scope="module")
def cluster() -> Iterator[PatroniCluster]:
    running = PatroniCluster.start(members=3)
    yield running
    running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(cluster: PatroniCluster) -> AsyncIterator[list[Replica]]:
    replicas = ReplicaSet(
        cluster.url("postgres"), name="ha", key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
        max_staleness=f"{MAX_STALENESS}s", revocation_poll_interval=f"{POLL_INTERVAL}s",
    )
    try:
        yield await replicas.start(2)
    finally:
        await replicas.close()


@dataclasses.dataclass
class Probe:
    """One call the storm or a probe made: when, on which replica, and what it answered."""

    replica: str
    kind: str
    started: float
    ended: float
    outcome: str


@dataclasses.dataclass
class Storm:
    """What the storm was told, and what it saw."""

    signed_in: dict[str, pb.IssueTokenResponse] = dataclasses.field(default_factory=dict)  # session id: response
    replaced: set[str] = dataclasses.field(default_factory=set)  # session ids a later acked sign-in replaced
    revoked: set[str] = dataclasses.field(default_factory=set)  # session ids whose revocation was acked
    subjects: set[str] = dataclasses.field(default_factory=set)
    calls: list[Probe] = dataclasses.field(default_factory=list)
    streams: dict[str, list[list[pb.RevocationEvent]]] = dataclasses.field(default_factory=dict)


async def call(storm: Storm, replica: Replica, kind: str, rpc: Awaitable[Any]) -> Any | None:
    """The answer, or None for a failed call; every call is recorded."""
    started = time.monotonic()
    try:
        answer = await rpc
        outcome = "OK"
        if kind == "validate":
            outcome = "VALID" if answer.valid else pb.InvalidReason.Name(answer.reason)
        return answer
    except grpc.aio.AioRpcError as error:
        outcome, answer = error.code().name, None
        return None
    finally:
        storm.calls.append(Probe(replica.name, kind, started, time.monotonic(), outcome))


async def worker(storm: Storm, pair: list[Replica], seed: int, stop: asyncio.Event) -> None:
    """Subject after subject: a laptop sign-in, a phone sign-in on the other replica that
    signs the laptop out, and every other time a revocation of the phone's session."""
    rng = random.Random(seed)
    for n in range(SUBJECTS_PER_WORKER):
        if stop.is_set():
            return
        first, second = rng.sample(pair, 2)
        subject = new_subject()
        storm.subjects.add(subject)
        request = pb.IssueTokenRequest(subject=subject, device_id="laptop", policy=pb.SESSION_POLICY_REPLACE)
        laptop = await call(storm, first, "sign_in", first.stub.IssueToken(request, timeout=CALL_TIMEOUT))
        if laptop is None:
            await asyncio.sleep(0.1)  # a caller's backoff before retrying UNAVAILABLE
        else:
            storm.signed_in[laptop.session_id] = laptop
        request = pb.IssueTokenRequest(subject=subject, device_id="phone", policy=pb.SESSION_POLICY_REPLACE)
        phone = await call(storm, second, "sign_in", second.stub.IssueToken(request, timeout=CALL_TIMEOUT))
        if phone is None:
            await asyncio.sleep(0.1)  # a caller's backoff before retrying UNAVAILABLE
            continue
        storm.signed_in[phone.session_id] = phone
        storm.replaced.update(phone.replaced_session_ids)
        if n % 2:
            revoke = pb.RevokeTokenRequest(session_id=phone.session_id)
            if await call(storm, first, "revoke", first.stub.RevokeToken(revoke, timeout=CALL_TIMEOUT)) is not None:
                storm.revoked.add(phone.session_id)


async def prober(storm: Storm, replica: Replica, token: str, subject: str, stop: asyncio.Event) -> None:
    """Asks one replica, over and over, to validate a live token and to read the store."""
    while not stop.is_set():
        await call(storm, replica, "validate",
                   replica.stub.ValidateToken(pb.ValidateTokenRequest(token=token), timeout=CALL_TIMEOUT))
        await call(storm, replica, "read",
                   replica.stub.ListSessions(pb.ListSessionsRequest(subject=subject), timeout=CALL_TIMEOUT))
        await asyncio.sleep(0.05)  # pacing the probe, not waiting for a condition


async def watcher(storm: Storm, replica: Replica, stop: asyncio.Event) -> None:
    """A consumer of the revocation feed: resumes after its position within an epoch,
    starts again from 0 (a new segment) on OUT_OF_RANGE. Each segment is kept."""
    segments = storm.streams.setdefault(replica.name, [[]])
    position, epoch = 0, ""
    while not stop.is_set():
        stream = replica.stub.WatchRevocations(
            pb.WatchRevocationsRequest(after_sequence=position, epoch=epoch))
        try:
            async for event in stream:
                if event.epoch != epoch and position:
                    break  # another epoch than our position's: start again
                epoch = event.epoch
                if event.kind == pb.REVOCATION_EVENT_KIND_REVOCATION:
                    segments[-1].append(event)
                if event.kind in (pb.REVOCATION_EVENT_KIND_REVOCATION, pb.REVOCATION_EVENT_KIND_CAUGHT_UP,
                                  pb.REVOCATION_EVENT_KIND_HEARTBEAT):
                    position = max(position, event.sequence)
                if stop.is_set():
                    break
            else:
                continue
            position, epoch = 0, ""
            segments.append([])
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.OUT_OF_RANGE:
                position, epoch = 0, ""
                segments.append([])
            else:
                await asyncio.sleep(0.1)  # backoff before reconnecting
        finally:
            stream.cancel()


async def first_success_after(pair: list[Replica], since: float, within: float) -> dict[str, float]:
    """Seconds from ``since`` until each replica took a sign-in again."""
    deadline = time.monotonic() + within
    back: dict[str, float] = {}
    while len(back) < len(pair):
        assert time.monotonic() < deadline, f"replicas not serving after {within} s: {back}"
        for replica in pair:
            if replica.name in back:
                continue
            request = pb.IssueTokenRequest(subject=new_subject(), device_id="probe")
            try:
                await replica.stub.IssueToken(request, timeout=CALL_TIMEOUT)
                back[replica.name] = time.monotonic() - since
            except grpc.aio.AioRpcError as error:
                assert error.code().name in RETRYABLE, error.details()
                await asyncio.sleep(0.1)  # between retries while the cluster fails over
    return back


async def run_scenario(cluster: PatroniCluster, pair: list[Replica], fault: Callable[[], None]) -> tuple[Storm, float]:
    """Runs the storm, injects ``fault``, measures recovery and checks every invariant."""
    storm = Storm()
    control_subject = new_subject()
    control = await pair[0].stub.IssueToken(
        pb.IssueTokenRequest(subject=control_subject, device_id="control"), timeout=CALL_TIMEOUT)
    stop_storm, stop_watch = asyncio.Event(), asyncio.Event()
    watchers = [asyncio.create_task(watcher(storm, r, stop_watch)) for r in pair]
    probes = [asyncio.create_task(prober(storm, r, control.access_token, control_subject, stop_storm)) for r in pair]
    workers = [asyncio.create_task(worker(storm, pair, seed, stop_storm)) for seed in range(WORKERS)]
    deadline = time.monotonic() + SERVING_WITHIN
    while len(storm.signed_in) < BEFORE_FAULT:  # the storm is under way before the fault
        assert time.monotonic() < deadline, "the storm never got going"
        await asyncio.sleep(0.05)
    faulted = time.monotonic()
    await asyncio.to_thread(fault)
    back = await first_success_after(pair, faulted, SERVING_WITHIN)
    remaining = STORM_AFTER_FAULT - (time.monotonic() - faulted)
    if remaining > 0:  # the storm goes on until its count or its time runs out
        await asyncio.wait(workers, timeout=remaining)
    stop_storm.set()
    await asyncio.gather(*workers, *probes)
    recovered = max(back.values())
    outcomes = collections.Counter(c.outcome for c in storm.calls)
    print(f"\nserving again after {', '.join(f'{k} {v:.1f} s' for k, v in back.items())}; calls: {dict(outcomes)}; "
          f"watchers restarted from 0: {[len(v) - 1 for v in storm.streams.values()]}")
    # The storm and the fault were real: sign-ins, replacements and revocations were
    # acknowledged, and calls were refused in the gap.
    assert storm.revoked and storm.replaced and len(storm.signed_in) > 20, "the storm did too little"
    assert outcomes["UNAVAILABLE"] > 0, "no call saw the fault"
    await check_invariants(cluster, pair, storm, faulted, stop_watch, watchers)
    return storm, recovered


async def committed(cluster: PatroniCluster) -> tuple[set[str], dict[str, int], set[str]]:
    """From the primary: every session id, live sessions per subject, revoked session ids in the log."""
    leader = cluster.leader()
    assert leader is not None
    connection = await asyncpg.connect(host="127.0.0.1", port=leader.pg_port, user="postgres", database="postgres")
    try:
        sessions = {r[0] for r in await connection.fetch("SELECT session_id FROM sessions")}
        live = {r[0]: r[1] for r in await connection.fetch(
            "SELECT subject, count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1 GROUP BY subject",
            time.time())}
        logged = {r[0] for r in await connection.fetch("SELECT session_id FROM revocation_log")}
    finally:
        await connection.close()
    return sessions, live, logged


async def check_invariants(
    cluster: PatroniCluster, pair: list[Replica], storm: Storm, faulted: float,
    stop_watch: asyncio.Event, watchers: list[asyncio.Task[None]],
) -> None:
    # Every failed call said "not available now".
    failures = {c.outcome for c in storm.calls} - {"OK", "VALID"} - RETRYABLE
    assert not failures, f"calls answered {failures}, not UNAVAILABLE"
    cluster.until(lambda: cluster.leader() is not None, "no leader after the scenario")
    sessions, live, logged = await committed(cluster)
    # Every acknowledged sign-in's session exists.
    lost = set(storm.signed_in) - sessions
    assert not lost, f"{len(lost)} acknowledged sign-ins lost"
    # The single-device invariant, for every subject.
    assert all(count <= 1 for count in live.values()), {s: c for s, c in live.items() if c > 1}
    # Every acknowledged revocation (and replacement) refuses its token on both replicas.
    refused = storm.revoked | storm.replaced
    assert refused <= logged, "an acknowledged revocation is not in the log"
    for replica in pair:
        deadline = time.monotonic() + 10
        for session_id in refused:
            token = storm.signed_in[session_id].access_token
            while True:
                answer = await replica.stub.ValidateToken(pb.ValidateTokenRequest(token=token), timeout=CALL_TIMEOUT)
                if answer.reason == pb.INVALID_REASON_REVOKED:
                    break
                assert time.monotonic() < deadline, f"{replica.name} accepts a revoked token"
    # No watcher skipped a committed revocation or saw one twice within an epoch.
    ours = {sid for sid in logged if sid in storm.signed_in}
    deadline = time.monotonic() + 10
    while not all(ours <= {e.session_id for seg in storm.streams.get(r.name, []) for e in seg} for r in pair):
        assert time.monotonic() < deadline, "a watcher never saw a committed revocation"
        await asyncio.sleep(0.1)
    stop_watch.set()
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    for name, segments in storm.streams.items():
        for segment in segments:
            sequences = [e.sequence for e in segment]
            assert sequences == sorted(set(sequences)), f"{name}: a revocation seen twice or out of order"
    for replica in pair:
        stale = stale_valid_answers([c for c in storm.calls if c.replica == replica.name])
        assert not stale, f"{replica.name} answered VALID from a view older than max_staleness: {stale[:3]}"


def stale_valid_answers(calls: list[Probe]) -> list[str]:
    """VALID answers given while the store was unreadable for longer than max_staleness.

    The store counts as unreadable around a VALID answer when the last good read ended
    more than max_staleness (and a margin) before it, a read failed in between, and the
    next good read began well after it (so the database was not just back)."""
    reads = [c for c in calls if c.kind == "read"]
    found = []
    for answer in calls:
        if answer.kind != "validate" or answer.outcome != "VALID":
            continue
        before = [r for r in reads if r.outcome == "OK" and r.ended <= answer.started]
        if not before:
            continue
        last_good = max(r.ended for r in before)
        failed_between = any(r.outcome != "OK" and r.started >= last_good and r.ended <= answer.started for r in reads)
        later = [r.started for r in reads if r.outcome == "OK" and r.started >= answer.ended]
        still_down = not later or min(later) - answer.ended > 0.5
        if answer.started - last_good > MAX_STALENESS + STALENESS_MARGIN and failed_between and still_down:
            found.append(f"VALID {answer.started - last_good:.1f} s after the last good read")
    return found


async def test_the_leaders_postgres_crashing_alone_is_restarted_in_place(
    cluster: PatroniCluster, pair: list[Replica]
) -> None:
    leader = cluster.leader()
    assert leader is not None
    _, recovered = await run_scenario(cluster, pair, leader.kill_postgres)
    cluster.until_healthy()
    assert cluster.leader() is leader, "Patroni failed over instead of restarting in place"
    assert recovered < SERVING_WITHIN


async def test_a_planned_switchover(cluster: PatroniCluster, pair: list[Replica]) -> None:
    leader, candidate = cluster.leader(), cluster.sync_standby()
    assert leader is not None and candidate is not None
    _, recovered = await run_scenario(cluster, pair, lambda: cluster.switchover(leader, candidate))
    cluster.until(lambda: cluster.leader() is candidate, "the switchover did not make the candidate leader")
    assert recovered < SERVING_WITHIN


async def test_the_leader_node_dying_fails_over_to_the_synchronous_standby(
    cluster: PatroniCluster, pair: list[Replica]
) -> None:
    cluster.until_healthy()
    leader, standby = cluster.leader(), cluster.sync_standby()
    assert leader is not None and standby is not None
    _, recovered = await run_scenario(cluster, pair, leader.kill_node)
    assert cluster.leader() is standby, "Patroni promoted another member than the synchronous standby"
    assert recovered < SERVING_WITHIN
