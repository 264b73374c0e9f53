"""A sign-in that replaces every live session, whichever they are (the single-device rule
as it comes), is written on PostgreSQL without reading them first, in one round trip
(migration 0008). It must write exactly what the read-decide-write sign-in writes, and
every other sign-in must still read and decide."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from hypothesis import given
from hypothesis import strategies as st

from authority.config import Policy
from authority.policy import decide, replaces_every_live_session
from authority.store import SessionRecord
from authority.store.signin import SignInUnit
from tests.conftest import Clock, Running, StartServer
from tests.support.calls import live_sessions, new_subject, reason, rpc_error, sign_in, validate

REPLACED = pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The subjects whose live sessions a sign-in read, one entry per read."""
    seen: list[str] = []
    read = SignInUnit.live_sessions

    async def counted(self: SignInUnit, subject: str, now: float, idle_cutoff: float | None) -> list[SessionRecord]:
        seen.append(subject)
        return await read(self, subject, now, idle_cutoff)

    monkeypatch.setattr(SignInUnit, "live_sessions", counted)
    return seen


async def test_only_a_sign_in_replacing_every_live_session_skips_the_read_and_only_on_postgresql(
    start_server: StartServer, store: str, reads: list[str]
) -> None:
    plain = (await start_server()).stub
    classes = (await start_server(session_limits=("mobile=1", "desktop=1"))).stub
    subject = new_subject()

    laptop = await sign_in(plain, subject, "laptop")
    phone = await sign_in(plain, subject, "phone")
    unread = len(reads)
    await rpc_error(sign_in(plain, subject, "tablet", policy=pb.SESSION_POLICY_REJECT))
    expected = pb.SessionIds(session_ids=[phone.session_id])
    guarded = await sign_in(plain, subject, "tablet", expected_replacements=expected)
    await sign_in(classes, subject, "phone", device_class="mobile")

    # PostgreSQL reads nothing for the rule as it comes; SQLite reads in its own transaction.
    assert unread == (0 if store == "postgres" else 2)
    # REJECT (and its refusal's record), the guard, device classes: each reads.
    assert reads[unread:].count(subject) >= 3
    assert list(phone.replaced_session_ids) == [laptop.session_id]
    assert list(guarded.replaced_session_ids) == [phone.session_id]


async def _events(running: Running, subject: str) -> list[pb.SessionEvent]:
    stream = running.stub.WatchSessionEvents(pb.WatchSessionEventsRequest())
    events = []
    try:
        while (event := await asyncio.wait_for(stream.read(), 5)).kind != pb.SESSION_EVENT_KIND_CAUGHT_UP:
            events.append(event)
    finally:
        stream.cancel()
    return [e for e in events if e.subject == subject]


@pytest.mark.parametrize("device", ["tablet", "phone"])
async def test_replacing_unread_writes_what_a_decided_replacement_writes(
    start_server: StartServer, store: str, database_url: str, device: str
) -> None:
    """Two devices signed in (under a cap of two), then a new one, or the phone again,
    under the rule as it comes: unread on PostgreSQL, and guarded (so read and decided)
    for a second subject. The replies, the tokens' answers, the session events and the
    log entries are the same, in the same order (the device's own session first)."""
    two = await start_server(max_sessions_per_subject=2)
    one = await start_server()
    outcomes = []
    for guarded in (False, True):
        subject = new_subject()
        laptop = await sign_in(two.stub, subject, "laptop", device_name="the laptop", device_class="desktop")
        phone = await sign_in(two.stub, subject, "phone", device_name="the phone")
        both = pb.SessionIds(session_ids=[laptop.session_id, phone.session_id])
        guard = {"expected_replacements": both} if guarded else {}
        new = await sign_in(one.stub, subject, device, device_name="the new one", **guard)
        label = {laptop.session_id: "laptop", phone.session_id: "phone", new.session_id: "new"}
        # Refused at once on the replica that signed the new one in, with the cause and device.
        answers = [await validate(one.stub, t.access_token) for t in (laptop, phone)]
        events = await _events(one, subject)
        outcomes.append({
            "replaced": [label[s] for s in new.replaced_session_ids],
            "answers": [(a.reason, a.revocation_cause, a.replaced_by_device_id, a.replaced_by_device_name)
                        for a in answers],
            "events": [(e.kind, label.get(e.session_id, ""), e.device_id, e.device_class, e.device_name,
                        [label[s] for s in e.replaced_session_ids], e.cause) for e in events],
            "log": await _log(database_url, subject, label) if store == "postgres" else None,
            "live": await live_sessions(one.stub, subject) == [new.session_id],
            "new": await reason(one.stub, new.access_token),
        })

    unread, decided = outcomes
    assert unread == decided
    order = ["laptop", "phone"] if device == "tablet" else ["phone", "laptop"]
    assert unread["replaced"] == order
    assert unread["answers"] == [(pb.INVALID_REASON_REVOKED, REPLACED, device, "the new one")] * 2
    ended = pb.SESSION_EVENT_KIND_SESSION_ENDED
    assert [e[:2] for e in unread["events"]][-3:] == [(ended, order[0]), (ended, order[1]),
                                                       (pb.SESSION_EVENT_KIND_SIGNED_IN, "new")]
    assert unread["events"][-1][5] == order
    assert ("desktop", "the laptop") in [e[3:5] for e in unread["events"][-3:-1]]
    if unread["log"] is not None:
        assert [row[0] for row in unread["log"]] == order
    assert unread["live"] and unread["new"] == "VALID"


async def _log(database_url: str, subject: str, device_of: dict[str, str]) -> list[tuple[Any, ...]]:
    """The subject's revocation log entries, sessions named by device, in log order."""
    connection = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch(
            "SELECT r.session_id, r.token_id, r.reason, r.cause, r.replaced_by_device_id, r.replaced_by_device_name,"
            " r.expires_at = s.access_expires_at AS expires_with_token, r.revoked_at = s.revoked_at AS same_time"
            " FROM revocation_log r JOIN sessions s USING (session_id) WHERE r.subject = $1 ORDER BY r.sequence",
            subject,
        )
    finally:
        await connection.close()
    return [(device_of[row[0]], *row[1:]) for row in rows]


async def test_a_session_ended_idle_is_not_replaced_again(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock=clock, access_token_ttl=60, max_access_token_ttl=60, idle_timeout=120)
    subject = new_subject()
    await sign_in(running.stub, subject, "laptop")
    clock.advance(130)

    phone = await sign_in(running.stub, subject, "phone")

    assert list(phone.replaced_session_ids) == []
    assert [e.kind for e in await _events(running, subject)] == [pb.SESSION_EVENT_KIND_SIGNED_IN] * 2


async def test_concurrent_unread_and_decided_sign_ins_over_two_servers_keep_one_device(
    start_server: StartServer,
) -> None:
    """REPLACE sign-ins (unread on PostgreSQL) and REJECT ones (read and decided) of one
    subject at once on two replicas: one live session at the end, each session replaced
    at most once, and a REJECT sign-in admitted only with nobody to sign out."""
    servers = [(await start_server()).stub, (await start_server()).stub]
    subject = new_subject()
    calls: list[Awaitable[pb.IssueTokenResponse]] = []
    for n in range(40):
        policy = pb.SESSION_POLICY_REJECT if n % 2 else pb.SESSION_POLICY_REPLACE
        # Each replica takes both kinds.
        calls.append(sign_in(servers[n // 2 % 2], subject, f"device-{n}", policy=policy))

    results = await asyncio.gather(*calls, return_exceptions=True)

    issued = [r for r in results if isinstance(r, pb.IssueTokenResponse)]
    refused = [r for r in results if not isinstance(r, pb.IssueTokenResponse)]
    assert len(issued) >= 20
    assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() is grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    for n, result in enumerate(results):
        if n % 2 and isinstance(result, pb.IssueTokenResponse):
            assert list(result.replaced_session_ids) == []
    live = await live_sessions(servers[0], subject)
    replaced = [sid for r in issued for sid in r.replaced_session_ids]
    assert len(live) == 1 and live[0] not in replaced
    assert sorted(replaced) == sorted(r.session_id for r in issued if r.session_id not in live)
    # The database's answer (another replica's revocations reach a mirror a moment later):
    # only the live session's refresh token trades.
    refreshed = []
    for signed_in in issued:
        try:
            await servers[0].RefreshToken(pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token))
            refreshed.append(signed_in.session_id)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refreshed == live


sessions = st.lists(
    st.builds(
        lambda n, device, kind: SessionRecord(f"s{n}", "alice", device, "api", "{}", 60, float(n), 1e12, float(n),
                                              1e12, None, kind),
        st.integers(0, 10**6), st.sampled_from(["laptop", "phone", "tablet"]), st.sampled_from(["", "mobile"]),
    ),
    max_size=6, unique_by=lambda s: s.session_id,
).map(lambda live: sorted(live, key=lambda s: s.created_at))


@given(live=sessions, device=st.sampled_from(["laptop", "phone", "watch"]), counted=st.sampled_from(["*", "mobile"]))
def test_the_rule_as_it_comes_signs_out_every_live_session_whichever_they_are(
    live: list[SessionRecord], device: str, counted: str
) -> None:
    assert replaces_every_live_session(Policy.REPLACE, {}, 1)

    decision = decide(live, device, counted, Policy.REPLACE, {}, 1)

    assert not decision.refused and decision.replaced_ids == {s.session_id for s in live}


def test_every_other_policy_reads_before_it_decides() -> None:
    skips: Callable[..., bool] = replaces_every_live_session
    assert not skips(Policy.REJECT, {}, 1)
    assert not skips(Policy.REPLACE, {"*": 1}, 1)
    assert not skips(Policy.REPLACE, {}, 2)
