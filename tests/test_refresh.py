"""Refresh tokens: opaque, stored as hashes, rotated on every use, reuse revokes the session."""

from __future__ import annotations

import hashlib

import grpc
import sqlalchemy as sa
from authority_client.v1 import authority_pb2 as pb
from google.protobuf import struct_pb2

from authority.config import Algorithm
from authority.tokens import MAX_TOKEN_BYTES
from tests.conftest import Clock, Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


async def _refresh(stub: Stub, refresh_token: str) -> pb.IssueTokenResponse:
    return await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refresh_token))


async def test_refresh_issues_a_new_pair_on_the_same_session(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")

    refreshed = await _refresh(stub, signed_in.refresh_token)

    assert refreshed.session_id == signed_in.session_id
    assert refreshed.access_token != signed_in.access_token
    assert refreshed.refresh_token != signed_in.refresh_token
    assert refreshed.refresh_expires_at == signed_in.refresh_expires_at
    assert await reason(stub, refreshed.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [signed_in.session_id]


async def test_refresh_tokens_are_opaque_and_carry_256_random_bits(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")

    token = signed_in.refresh_token

    assert token.count(".") == 0  # not a JWT
    assert len(token) >= 43  # 256 bits in base64url


async def test_refresh_keeps_the_audience_and_claims_of_the_sign_in(stub: Stub) -> None:
    request = pb.IssueTokenRequest(subject=new_subject(), device_id="laptop")
    request.claims.update({"role": "admin"})
    signed_in = await stub.IssueToken(request)

    refreshed = await _refresh(stub, signed_in.refresh_token)

    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=refreshed.access_token))
    assert answer.valid
    assert dict(answer.claims.extra) == {"role": "admin"}


async def test_a_rotated_refresh_token_presented_again_revokes_the_whole_session(start_server: StartServer) -> None:
    stub = (await start_server(refresh_token_reuse_grace=0)).stub  # strict: no retry forgiven
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    refreshed = await _refresh(stub, signed_in.refresh_token)

    stolen = await rpc_error(_refresh(stub, signed_in.refresh_token))

    assert stolen.code() is grpc.StatusCode.UNAUTHENTICATED
    # Every token the session ever issued dies, including those minted before the refresh.
    assert await reason(stub, signed_in.access_token) == "REVOKED"
    assert await reason(stub, refreshed.access_token) == "REVOKED"
    legitimate = await rpc_error(_refresh(stub, refreshed.refresh_token))
    assert legitimate.code() is grpc.StatusCode.UNAUTHENTICATED
    assert await live_sessions(stub, subject) == []


async def test_revoking_a_session_kills_access_tokens_minted_before_a_refresh(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")
    refreshed = await _refresh(stub, signed_in.refresh_token)

    await stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed_in.session_id))

    assert await reason(stub, signed_in.access_token) == "REVOKED"
    assert await reason(stub, refreshed.access_token) == "REVOKED"


async def _sign_in_with_a_note(stub: Stub, subject: str, device_id: str, size: int) -> pb.IssueTokenResponse:
    claims = struct_pb2.Struct()
    claims.update({"note": "\x02" * size})
    return await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id=device_id, claims=claims))


async def test_a_session_whose_token_outgrows_the_limit_with_a_new_signing_key_is_refused_and_changes_nothing(
    start_server: StartServer,
) -> None:
    clock = Clock()
    issuer = "https://authority.example/" + "i" * 230
    # Each character of the subject and device escapes to twelve in the payload, the
    # note's to six (eight in the token): an Ed25519-signed token comes close to 8 KiB...
    subject = device = "\U0001F600" * 64
    eddsa = await start_server(clock, issuer=issuer)
    small = await _sign_in_with_a_note(eddsa.stub, subject, device, 0)
    room = MAX_TOKEN_BYTES - len(small.access_token)
    signed_in = await _sign_in_with_a_note(eddsa.stub, subject, device, room // 8)
    assert MAX_TOKEN_BYTES - 16 < len(signed_in.access_token) <= MAX_TOKEN_BYTES
    await eddsa.server.stop(None)
    # ... and its 86-character signature becomes 342 once the authority signs with RS256.
    rs256 = await start_server(clock, issuer=issuer, signing_algorithm=Algorithm.RS256)
    [before] = (await rs256.stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    clock.advance(60)

    for _ in range(2):  # a retry is refused alike: nothing was traded
        error = await rpc_error(_refresh(rs256.stub, signed_in.refresh_token))
        # INVALID_ARGUMENT naming the one field RefreshToken has, never `claims`, which it
        # has not; the clients' FAILED_PRECONDITION is a sign-in's session limit.
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        details = error.details() or ""
        assert details.startswith("refresh_token: ")
        assert f"access token would exceed {MAX_TOKEN_BYTES} bytes with the current signing key" in details
        assert "sign in again" in details
        assert signed_in.refresh_token not in details
    # Nothing was written: the session was not touched, its access token is valid, and the
    # refresh token is still untraded, so it refreshes once the signing key allows it.
    [after] = (await rs256.stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    assert after == before
    assert await reason(rs256.stub, signed_in.access_token) == "VALID"
    await rs256.server.stop(None)
    refreshed = await _refresh((await start_server(clock, issuer=issuer)).stub, signed_in.refresh_token)
    assert refreshed.session_id == signed_in.session_id


async def _store_claims(authority: Running, session_id: str, claims_json: str) -> None:
    async with authority.server.authority.store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE sessions SET claims = :claims WHERE session_id = :session_id"),
                           {"claims": claims_json, "session_id": session_id})


async def test_a_session_stored_with_a_nul_in_a_nested_claim_name_is_not_refreshed_and_changes_nothing(
    authority: Running,
) -> None:
    # A session signed in before sign-in refused NUL in nested names: its token would be
    # MALFORMED to every verifier, so none is issued. Regression: refresh signed one.
    stub, subject = authority.stub, new_subject()
    request = pb.IssueTokenRequest(subject=subject, device_id="laptop")
    request.claims.update({"profile": {"ab": 1}})
    signed_in = await stub.IssueToken(request)
    await _store_claims(authority, signed_in.session_id, '{"profile":{"a\\u0000b":1}}')
    [before] = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions

    for _ in range(2):  # a retry is refused alike: nothing was traded
        error = await rpc_error(_refresh(stub, signed_in.refresh_token))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        details = error.details() or ""
        assert details.startswith("refresh_token: ")
        assert "names must not contain NUL characters" in details
        assert "sign in again" in details
        assert signed_in.refresh_token not in details
    [after] = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    assert after == before
    # The refresh token is still untraded: with claims a token may carry, it refreshes.
    await _store_claims(authority, signed_in.session_id, '{"profile":{"ab":1}}')
    refreshed = await _refresh(stub, signed_in.refresh_token)
    assert refreshed.session_id == signed_in.session_id


async def test_unknown_and_malformed_refresh_tokens_are_unauthenticated(stub: Stub) -> None:
    for token in ("x" * 43, "not-a-refresh-token", "a.b.c"):
        error = await rpc_error(_refresh(stub, token))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert token not in (error.details() or "")


async def test_empty_refresh_token_is_invalid_argument(stub: Stub) -> None:
    error = await rpc_error(_refresh(stub, ""))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "refresh_token" in (error.details() or "")


async def test_refresh_tokens_are_stored_only_as_hashes(authority: Running) -> None:
    signed_in = await sign_in(authority.stub, new_subject(), "laptop")
    refreshed = await _refresh(authority.stub, signed_in.refresh_token)

    async with authority.server.authority.store.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT token_hash FROM refresh_tokens"))).scalars().all()
        dump = " ".join(str(v) for r in (await conn.execute(sa.text("SELECT * FROM sessions"))) for v in r)

    for token in (signed_in.refresh_token, refreshed.refresh_token):
        assert hashlib.sha256(token.encode()).hexdigest() in rows
        assert token not in rows
        assert token not in dump
