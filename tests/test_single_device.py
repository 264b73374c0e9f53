"""The single-device rule: one subject, one device at a time (or max_sessions_per_subject)."""

from __future__ import annotations

import grpc
from authority_client.v1 import authority_pb2 as pb

from authority.config import Policy
from tests.conftest import Clock, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


async def test_second_device_signs_out_the_first(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    assert await reason(stub, laptop.access_token) == "VALID"

    phone = await sign_in(stub, subject, "phone")

    assert list(phone.replaced_session_ids) == [laptop.session_id]
    assert await reason(stub, laptop.access_token) == "REVOKED"
    assert await reason(stub, phone.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [phone.session_id]


async def test_first_devices_refresh_token_dies_with_its_session(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    await sign_in(stub, subject, "phone")

    error = await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=laptop.refresh_token)))

    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_signing_in_again_on_the_same_device_replaces_its_session_under_either_policy(stub: Stub) -> None:
    subject = new_subject()
    first = await sign_in(stub, subject, "laptop")
    second = await sign_in(stub, subject, "laptop", policy=pb.SESSION_POLICY_REJECT)

    assert list(second.replaced_session_ids) == [first.session_id]
    assert await reason(stub, first.access_token) == "REVOKED"
    assert await reason(stub, second.access_token) == "VALID"


async def test_reject_policy_refuses_a_second_device_and_changes_nothing(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")

    error = await rpc_error(sign_in(stub, subject, "phone", policy=pb.SESSION_POLICY_REJECT))

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "signed in" in (error.details() or "")
    assert await reason(stub, laptop.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [laptop.session_id]


async def test_reject_policy_admits_a_new_device_once_the_old_one_logged_out(stub: Stub) -> None:
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(token=laptop.access_token))

    phone = await sign_in(stub, subject, "phone", policy=pb.SESSION_POLICY_REJECT)

    assert await reason(stub, phone.access_token) == "VALID"


async def test_server_default_policy_applies_when_the_request_names_none(start_server: StartServer) -> None:
    running = await start_server(default_policy=Policy.REJECT)
    subject = new_subject()
    await sign_in(running.stub, subject, "laptop")

    error = await rpc_error(sign_in(running.stub, subject, "phone"))
    replaced = await sign_in(running.stub, subject, "phone", policy=pb.SESSION_POLICY_REPLACE)

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert len(replaced.replaced_session_ids) == 1


async def test_max_sessions_replaces_the_oldest_first(start_server: StartServer) -> None:
    running = await start_server(max_sessions_per_subject=2)
    stub, subject = running.stub, new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")
    assert list(phone.replaced_session_ids) == []

    tablet = await sign_in(stub, subject, "tablet")

    assert list(tablet.replaced_session_ids) == [laptop.session_id]
    assert [await reason(stub, t.access_token) for t in (laptop, phone, tablet)] == ["REVOKED", "VALID", "VALID"]
    assert await live_sessions(stub, subject) == [phone.session_id, tablet.session_id]


async def test_subjects_do_not_sign_each_other_out(stub: Stub) -> None:
    alice = await sign_in(stub, new_subject(), "laptop")
    bob = await sign_in(stub, new_subject(), "phone")

    assert list(bob.replaced_session_ids) == []
    assert await reason(stub, alice.access_token) == "VALID"


async def test_idle_timeout_ends_a_forgotten_session_so_reject_admits_a_new_device(
    start_server: StartServer,
) -> None:
    clock = Clock()
    clock.advance(-130)  # sign in in the past, so that the new sign-in happens now
    running = await start_server(
        clock=clock, access_token_ttl=60, max_access_token_ttl=60, idle_timeout=120
    )
    subject = new_subject()
    forgotten = await sign_in(running.stub, subject, "laptop")
    clock.advance(60)
    still_alive = await rpc_error(sign_in(running.stub, subject, "phone", policy=pb.SESSION_POLICY_REJECT))
    clock.advance(70)

    phone = await sign_in(running.stub, subject, "phone", policy=pb.SESSION_POLICY_REJECT)

    assert still_alive.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert list(phone.replaced_session_ids) == []
    assert await live_sessions(running.stub, subject) == [phone.session_id]
    refresh = await rpc_error(running.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=forgotten.refresh_token)))
    assert refresh.code() is grpc.StatusCode.UNAUTHENTICATED
