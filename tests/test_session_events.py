"""The session event log and WatchSessionEvents: every sign-in, refusal, reused refresh
token and ended session, streamed with the revocation stream's contract, resumable
across a restart, purged after its retention, erased for a subject on request."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from authority import credentials
from authority.credentials import Role
from tests.conftest import Clock, StartServer
from tests.support.calls import Stub, new_subject, reason, rpc_error, sign_in

K = pb.SessionEventKind
CAUGHT_UP, HEARTBEAT = pb.SESSION_EVENT_KIND_CAUGHT_UP, pb.SESSION_EVENT_KIND_HEARTBEAT


def _watch(stub: Stub, after: int = 0, heartbeat: float | None = None, metadata: Any = ()) -> Any:
    request = pb.WatchSessionEventsRequest(after_sequence=after)
    if heartbeat is not None:
        request.heartbeat_interval.CopyFrom(Duration(nanos=int(heartbeat * 1e9)))
    return stub.WatchSessionEvents(request, metadata=metadata)


async def _until_caught_up(stream: Any) -> tuple[list[pb.SessionEvent], pb.SessionEvent]:
    """The backlog, and the CAUGHT_UP marker that ends it."""
    events = []
    while True:
        event = await asyncio.wait_for(stream.read(), 5)
        if event.kind == CAUGHT_UP:
            return events, event
        events.append(event)


async def _next(stream: Any) -> pb.SessionEvent:
    """The next event that is not a heartbeat."""
    while True:
        event = await asyncio.wait_for(stream.read(), 5)
        if event.kind != HEARTBEAT:
            return event


def _of(events: list[pb.SessionEvent], subject: str) -> list[tuple[str, ...]]:
    return [(K.Name(e.kind).removeprefix("SESSION_EVENT_KIND_"), e.session_id) for e in events if e.subject == subject]


async def test_the_log_records_sign_ins_replacements_refusals_and_ended_sessions(start_server: StartServer) -> None:
    stub = (await start_server(refresh_token_reuse_grace=0)).stub  # strict: the second trade is a reuse
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop", device_name="the laptop")
    phone = await sign_in(stub, subject, "phone", device_class="mobile", device_name="the phone")
    await rpc_error(sign_in(stub, subject, "tablet", policy=pb.SESSION_POLICY_REJECT))
    await rpc_error(sign_in(stub, subject, "tablet", expected_replacements=pb.SessionIds()))
    await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token))
    await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token)))

    events, caught_up = await _until_caught_up(_watch(stub))

    mine = [e for e in events if e.subject == subject]
    assert _of(events, subject) == [
        ("SIGNED_IN", laptop.session_id),
        ("SESSION_ENDED", laptop.session_id),
        ("SIGNED_IN", phone.session_id),
        ("SIGN_IN_REFUSED", ""),
        ("SIGN_IN_REFUSED", ""),
        ("REFRESH_TOKEN_REUSED", phone.session_id),
        ("SESSION_ENDED", phone.session_id),
    ]
    signed_in, ended, phone_in, refused = mine[0], mine[1], mine[2], mine[3]
    assert (signed_in.device_id, signed_in.device_name) == ("laptop", "the laptop")
    assert ended.cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN and ended.device_name == "the laptop"
    assert (phone_in.device_class, phone_in.device_name) == ("mobile", "the phone")
    assert list(phone_in.replaced_session_ids) == [laptop.session_id]
    assert refused.device_id == "tablet" and list(refused.replaced_session_ids) == [phone.session_id]
    assert mine[-1].cause == pb.REVOCATION_CAUSE_REFRESH_TOKEN_REUSED
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)) and caught_up.sequence == sequences[-1]
    # Never a token, a refresh token or a key.
    wire = b"".join(e.SerializeToString() for e in events)
    for secret in (laptop.access_token, laptop.refresh_token, phone.access_token, phone.refresh_token):
        assert secret.encode() not in wire


async def test_the_stream_follows_new_events_and_heartbeats_while_quiet(stub: Stub) -> None:
    stream = _watch(stub, heartbeat=0.1)
    _, caught_up = await _until_caught_up(stream)
    heartbeat = await asyncio.wait_for(stream.read(), 5)
    assert heartbeat.kind == HEARTBEAT and heartbeat.sequence == caught_up.sequence

    subject = new_subject()
    issued = await sign_in(stub, subject, "laptop")
    followed = await _next(stream)
    stream.cancel()

    assert followed.kind == pb.SESSION_EVENT_KIND_SIGNED_IN
    assert (followed.subject, followed.session_id) == (subject, issued.session_id)
    assert followed.sequence > caught_up.sequence


async def test_a_watcher_resumes_after_its_last_sequence_and_misses_nothing(stub: Stub) -> None:
    subject = new_subject()
    await sign_in(stub, subject, "laptop")
    seen, caught_up = await _until_caught_up(_watch(stub))
    later = await sign_in(stub, subject, "phone")

    resumed, _ = await _until_caught_up(_watch(stub, after=caught_up.sequence))

    assert _of(resumed, subject) == [("SESSION_ENDED", seen[-1].session_id), ("SIGNED_IN", later.session_id)]
    assert all(e.sequence > caught_up.sequence for e in resumed)


async def test_resuming_beyond_the_end_of_the_log_is_out_of_range(stub: Stub) -> None:
    await sign_in(stub, new_subject(), "laptop")
    _, caught_up = await _until_caught_up(_watch(stub))

    stream = _watch(stub, after=caught_up.sequence + 1000)
    error = await rpc_error(stream.read())

    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert "session event log" in (error.details() or "")


async def test_events_resume_across_a_restart_without_loss_or_duplicates(start_server: StartServer) -> None:
    first = await start_server()
    subject = new_subject()
    await sign_in(first.stub, subject, "laptop")
    stream = _watch(first.stub)
    received, caught_up = await _until_caught_up(stream)
    await sign_in(first.stub, subject, "phone")
    received += [await _next(stream), await _next(stream)]  # the laptop's end, the phone's sign-in
    await first.channel.close()
    await first.server.stop(None)
    second = await start_server(listen="127.0.0.1:0")
    await sign_in(second.stub, subject, "tablet")

    resumed, _ = await _until_caught_up(_watch(second.stub, after=received[-1].sequence))
    everything, _ = await _until_caught_up(_watch(second.stub))

    combined = [e.sequence for e in received + resumed]
    assert combined == [e.sequence for e in everything]
    assert len(set(combined)) == len(combined) == 5  # laptop in; laptop out, phone in; phone out, tablet in
    assert _of(received + resumed, subject)[-1][0] == "SIGNED_IN"


async def test_ended_sessions_name_the_caller_when_callers_authenticate(start_server: StartServer) -> None:
    issuer_key, auditor_key = credentials.new_api_key(), credentials.new_api_key()
    running = await start_server(api_keys=(
        credentials.api_key_entry("login", {Role.ISSUER}, issuer_key),
        credentials.api_key_entry("audit", {Role.AUDITOR}, auditor_key),
    ))
    issuer = ((credentials.API_KEY_HEADER, issuer_key),)
    subject = new_subject()
    issued = await running.stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"), metadata=issuer)
    await running.stub.RevokeToken(pb.RevokeTokenRequest(subject=subject), metadata=issuer)

    events, _ = await _until_caught_up(_watch(running.stub, metadata=((credentials.API_KEY_HEADER, auditor_key),)))

    ended = [e for e in events if e.kind == pb.SESSION_EVENT_KIND_SESSION_ENDED]
    assert [(e.session_id, e.cause, e.caller) for e in ended] == [
        (issued.session_id, pb.REVOCATION_CAUSE_SIGNED_OUT_EVERYWHERE, "login")
    ]
    assert all(e.caller == "login" for e in events)


async def test_a_logout_over_http_names_its_caller_and_cause(start_server: StartServer) -> None:
    issuer_key, auditor_key = credentials.new_api_key(), credentials.new_api_key()
    running = await start_server(http_listen="127.0.0.1:0", api_keys=(
        credentials.api_key_entry("login", {Role.ISSUER}, issuer_key),
        credentials.api_key_entry("audit", {Role.AUDITOR}, auditor_key),
    ))
    subject = new_subject()
    issuer = ((credentials.API_KEY_HEADER, issuer_key),)
    by_token = await running.stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"), metadata=issuer)
    async with httpx.AsyncClient(base_url=running.http_url, timeout=15) as http:
        answer = await http.post("/revoke", data={"token": by_token.access_token},
                                 headers={"Authorization": f"Bearer {issuer_key}"})
        assert answer.status_code == 200
        by_refresh = await running.stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"),
                                                   metadata=issuer)
        answer = await http.post("/revoke", data={"token": by_refresh.refresh_token},
                                 headers={"Authorization": f"Bearer {issuer_key}"})
        assert answer.status_code == 200

    events, _ = await _until_caught_up(_watch(running.stub, metadata=((credentials.API_KEY_HEADER, auditor_key),)))

    ended = [(e.session_id, e.cause, e.caller) for e in events if e.kind == pb.SESSION_EVENT_KIND_SESSION_ENDED]
    assert ended == [
        (by_token.session_id, pb.REVOCATION_CAUSE_LOGGED_OUT, "login"),
        (by_refresh.session_id, pb.REVOCATION_CAUSE_LOGGED_OUT, "login"),
    ]


async def test_events_are_purged_after_their_retention_in_batches(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock, session_events_retention=3600, purge_batch_size=2)
    subject = new_subject()
    for device in ("laptop", "phone", "tablet"):
        await sign_in(running.stub, subject, device)
    clock.advance(1800)
    recent = await sign_in(running.stub, new_subject(), "laptop")
    clock.advance(1801)

    await running.server.authority.purge()

    events, _ = await _until_caught_up(_watch(running.stub))
    assert [(e.kind, e.session_id) for e in events] == [(pb.SESSION_EVENT_KIND_SIGNED_IN, recent.session_id)]


async def test_forgetting_a_subject_signs_them_out_and_erases_their_events_and_device_names(
    start_server: StartServer,
) -> None:
    running = await start_server(max_sessions_per_subject=2)
    stub = running.stub
    subject, bystander = new_subject(), new_subject()
    laptop = await sign_in(stub, subject, "laptop", device_name="Alice's laptop")
    phone = await sign_in(stub, subject, "phone", device_name="Alice's phone")
    await sign_in(stub, subject, "phone", device_name="Alice's phone")  # replaces the phone's first session
    other = await sign_in(stub, bystander, "laptop", device_name="Bob's laptop")

    ended, deleted = await running.server.authority.forget(subject)

    assert ended == 2 and deleted >= 4
    assert await reason(stub, laptop.access_token) == "REVOKED"
    events, _ = await _until_caught_up(_watch(stub))
    assert {e.subject for e in events} == {bystander}
    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=phone.access_token))
    assert answer.revocation_cause == pb.REVOCATION_CAUSE_REPLACED_BY_SIGN_IN
    assert answer.replaced_by_device_name == ""  # erased; the mirror still refuses the token
    assert await reason(stub, other.access_token) == "VALID"
