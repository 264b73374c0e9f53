"""Logout works for a session's whole life: by an access token whose signing key was
purged long ago (its public half is kept for logout only), or by the refresh token."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import jwt
from authority_client.v1 import authority_pb2 as pb

from authority.keys import retire_key, rotate_key
from tests.conftest import Clock, Running, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def _published(stub: Stub) -> set[str]:
    answer = await stub.GetSigningKeys(pb.GetSigningKeysRequest())
    return {key["kid"] for key in json.loads(answer.jwks_json)["keys"]}


async def _until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _logout(stub: Stub, **target: str) -> int:
    return (await stub.RevokeToken(pb.RevokeTokenRequest(**target))).revoked_sessions


async def _rotate_and_purge_the_old_key(running: Running, clock: Clock, old_kid: str) -> None:
    """Replaces the signing key and moves the clock on until the purge deletes the old one."""
    authority = running.server.authority
    clock.advance(1)
    await rotate_key(
        authority.store, authority.settings.signing_algorithm, clock(), 0, authority.settings.key_encryption_key_bytes()
    )
    clock.advance(authority.settings.max_access_token_ttl + authority.settings.leeway + 60)
    await authority.purge()
    assert old_kid not in await authority.store.key_ids()
    await _until(lambda: _retains(running, old_kid))  # the follower reloaded the keys


async def test_logout_by_an_access_token_whose_key_was_purged_ends_the_session(start_server: StartServer) -> None:
    """Guards against 'the token is not one this authority issued' once the key is gone,
    which left the session, and its refresh token, alive."""
    clock = Clock()
    running = await start_server(clock, revocation_poll_interval=0.2)
    subject = new_subject()
    idle = await sign_in(running.stub, subject, "laptop")
    await _rotate_and_purge_the_old_key(running, clock, _kid(idle.access_token))

    assert await _logout(running.stub, token=idle.access_token) == 1

    assert await live_sessions(running.stub, subject) == []
    refused = await rpc_error(running.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=idle.refresh_token)))
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_retained_key_is_never_published_and_never_makes_a_token_valid(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock, revocation_poll_interval=0.2)
    signed_in = await sign_in(running.stub, new_subject(), "laptop")
    old_kid = _kid(signed_in.access_token)
    await _rotate_and_purge_the_old_key(running, clock, old_kid)

    assert old_kid in await running.server.authority.store.retained_key_ids()
    assert old_kid not in await _published(running.stub)
    stream = running.stub.WatchRevocations(pb.WatchRevocationsRequest())
    opening = await asyncio.wait_for(stream.read(), 5)
    stream.cancel()
    assert opening.kind == pb.REVOCATION_EVENT_KIND_SIGNING_KEYS
    assert old_kid not in {key["kid"] for key in json.loads(opening.jwks_json)["keys"]}
    # Not expired by the verifier's (real) clock, well signed, session live: still refused.
    assert await reason(running.stub, signed_in.access_token) == "UNKNOWN_KEY"


async def test_another_replica_learns_the_retained_key_and_logs_out_by_it(start_server: StartServer) -> None:
    clock = Clock()
    first = await start_server(clock, revocation_poll_interval=0.2)
    second = await start_server(clock, revocation_poll_interval=0.2)
    subject = new_subject()
    idle = await sign_in(first.stub, subject, "laptop")
    old_kid = _kid(idle.access_token)
    await _rotate_and_purge_the_old_key(first, clock, old_kid)

    await _until(lambda: _lacks(second.stub, old_kid))
    await _until(lambda: _retains(second, old_kid))

    assert await _logout(second.stub, token=idle.access_token) == 1
    assert await live_sessions(second.stub, subject) == []


async def _lacks(stub: Stub, kid: str) -> bool:
    return kid not in await _published(stub)


async def _retains(running: Running, kid: str) -> bool:
    return kid in running.server.authority.codec.keyring.retained_kids


async def test_a_retained_key_is_forgotten_once_no_session_can_hold_its_tokens(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock, revocation_poll_interval=0.2)
    authority = running.server.authority
    signed_in = await sign_in(running.stub, new_subject(), "laptop")
    old_kid = _kid(signed_in.access_token)
    await _rotate_and_purge_the_old_key(running, clock, old_kid)

    clock.advance(authority.settings.refresh_token_ttl)
    await authority.purge()

    assert await authority.store.retained_key_ids() == frozenset()
    await _until(lambda: _forgot(running, old_kid))
    error = await rpc_error(running.stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def _forgot(running: Running, kid: str) -> bool:
    return not await _retains(running, kid)


async def test_a_key_retired_for_compromise_is_not_kept_for_logout(start_server: StartServer) -> None:
    """Its signatures prove nothing: a forger must not end other people's sessions."""
    running = await start_server(revocation_poll_interval=0.2)
    authority = running.server.authority
    signed_in = await sign_in(running.stub, new_subject(), "laptop")
    old_kid = _kid(signed_in.access_token)
    await rotate_key(
        authority.store, authority.settings.signing_algorithm, time.time() - 1, 0,
        authority.settings.key_encryption_key_bytes(),
    )
    await retire_key(authority.store, old_kid, time.time())
    await authority.refresh_keys()

    assert old_kid not in await authority.store.retained_key_ids()
    error = await rpc_error(running.stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_logout_by_refresh_token_ends_the_session_even_after_a_long_idle(start_server: StartServer) -> None:
    clock = Clock()
    running = await start_server(clock, revocation_poll_interval=0.2)
    subject = new_subject()
    idle = await sign_in(running.stub, subject, "laptop")
    await _rotate_and_purge_the_old_key(running, clock, _kid(idle.access_token))

    assert await _logout(running.stub, refresh_token=idle.refresh_token, reason="logout") == 1

    assert await live_sessions(running.stub, subject) == []
    assert await _logout(running.stub, refresh_token=idle.refresh_token) == 0  # nothing left to end


async def test_logout_by_a_traded_refresh_token_still_ends_the_session(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    refreshed = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token))

    assert await _logout(stub, refresh_token=signed_in.refresh_token) == 1

    assert await reason(stub, refreshed.access_token) == "REVOKED"


async def test_logout_by_an_unknown_refresh_token_ends_nothing(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")

    assert await _logout(stub, refresh_token="x" * 43) == 0
    assert await live_sessions(stub, subject) == [signed_in.session_id]


async def test_logout_by_a_malformed_refresh_token_is_invalid_argument_naming_it(stub: Stub) -> None:
    for token in ("", "short"):
        error = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(refresh_token=token)))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("refresh_token:")
        assert not token or token not in (error.details() or "").removeprefix("refresh_token:")
