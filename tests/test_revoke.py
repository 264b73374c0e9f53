"""RevokeToken: logout by token, revoke one session, sign a subject out everywhere."""

from __future__ import annotations

import grpc
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import Clock, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


async def _revoke(stub: Stub, **target: str) -> int:
    answer = await stub.RevokeToken(pb.RevokeTokenRequest(**target))
    return int(answer.revoked_sessions)


async def test_logout_by_token_ends_that_session_only(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=2)).stub
    subject = new_subject()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await sign_in(stub, subject, "phone")

    assert await _revoke(stub, token=phone.access_token) == 1

    assert await reason(stub, phone.access_token) == "REVOKED"
    assert await reason(stub, laptop.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [laptop.session_id]
    refresh = await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=phone.refresh_token)))
    assert refresh.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_logout_accepts_a_well_signed_token_that_has_expired(start_server: StartServer) -> None:
    clock = Clock()
    clock.advance(-120)
    running = await start_server(clock=clock, access_token_ttl=60)
    subject = new_subject()
    signed_in = await sign_in(running.stub, subject, "laptop")
    clock.advance(120)
    assert await reason(running.stub, signed_in.access_token) == "EXPIRED"

    assert await _revoke(running.stub, token=signed_in.access_token) == 1

    assert await live_sessions(running.stub, subject) == []


async def test_revoke_one_session_by_id(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")

    assert await _revoke(stub, session_id=signed_in.session_id, reason="lost device") == 1

    assert await reason(stub, signed_in.access_token) == "REVOKED"
    assert await live_sessions(stub, subject) == []


async def test_sign_out_everywhere_revokes_every_session_of_the_subject(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=3)).stub
    subject, bystander = new_subject(), new_subject()
    tokens = [await sign_in(stub, subject, device) for device in ("laptop", "phone", "tablet")]
    other = await sign_in(stub, bystander, "laptop")

    assert await _revoke(stub, subject=subject) == 3

    assert [await reason(stub, t.access_token) for t in tokens] == ["REVOKED"] * 3
    assert await reason(stub, other.access_token) == "VALID"
    assert await live_sessions(stub, subject) == []


async def test_revoking_what_is_already_revoked_or_unknown_succeeds_with_zero(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    assert await _revoke(stub, session_id=signed_in.session_id) == 1

    assert await _revoke(stub, session_id=signed_in.session_id) == 0
    assert await _revoke(stub, token=signed_in.access_token) == 0
    assert await _revoke(stub, subject=subject) == 0
    assert await _revoke(stub, session_id="no-such-session") == 0
    assert await _revoke(stub, subject="nobody-signed-in") == 0


async def test_revoke_without_a_target_is_invalid_argument(stub: Stub) -> None:
    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(reason="why not")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "target" in (error.details() or "")


async def test_revoke_by_a_token_this_authority_did_not_sign_is_invalid_argument(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")
    header, payload, signature = signed_in.access_token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    for token in (forged, "garbage", "a.b.c"):
        error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(token=token)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert token not in (error.details() or "")
    assert await reason(stub, signed_in.access_token) == "VALID"


async def test_overlong_reason_is_invalid_argument_and_revokes_nothing(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")

    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed_in.session_id, reason="x" * 300)))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (error.details() or "")
    assert await reason(stub, signed_in.access_token) == "VALID"


async def test_logout_with_a_token_signed_by_a_key_this_authority_lacks_is_invalid_argument(
    stub: Stub, start_server: StartServer, tmp_path: object
) -> None:
    other = await start_server(database_url=f"sqlite+aiosqlite:///{tmp_path}/other.db")
    foreign = await sign_in(other.stub, new_subject(), "laptop")

    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(token=foreign.access_token)))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await reason(other.stub, foreign.access_token) == "VALID"


async def test_nul_in_the_reason_is_invalid_argument_and_revokes_nothing(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")

    error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(subject=subject, reason="lost\x00phone")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("reason:")
    assert await reason(stub, signed_in.access_token) == "VALID"
