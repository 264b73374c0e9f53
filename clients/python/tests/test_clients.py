"""AuthorityClient and AsyncAuthorityClient against a real authority: types in, types out,
errors from authority_client.errors, never a raw grpc.RpcError."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from authority_client import (
    AsyncAuthorityClient,
    AuthorityClient,
    ChannelSettings,
    InvalidReason,
    RevocationEventKind,
    SessionPolicy,
    Validator,
)
from authority_client.types import RevocationCause
from authority_client.channel import IDEMPOTENT_METHODS
from authority_client.errors import (
    DeadlineExceeded,
    InvalidArgument,
    RefreshRejected,
    SessionLimitReached,
    SignInAborted,
    Unavailable,
)
from conftest import MODES, validation_settings

from authority.testing import AsyncInProcessAuthority, InProcessAuthority


def test_every_rpc_speaks_python_types(authority: InProcessAuthority) -> None:
    client = authority.client
    issued = client.issue_token("alice", "laptop", claims={"role": "admin"}, ttl=120)
    assert issued.access_token and issued.refresh_token and issued.session_id
    assert 100 < issued.expires_at - time.time() <= 121
    assert issued.refresh_expires_at > issued.expires_at
    assert "access_token" not in repr(issued) and issued.access_token not in repr(issued)

    validation = client.validate_token(issued.access_token)
    assert validation.valid and validation.reason is None and validation.claims is not None
    assert (validation.claims.subject, validation.claims.device_id) == ("alice", "laptop")
    assert validation.claims.session_id == issued.session_id
    assert validation.claims.extra == {"role": "admin"}

    [session] = client.list_sessions("alice")
    assert (session.session_id, session.subject, session.device_id) == (issued.session_id, "alice", "laptop")

    refreshed = client.refresh_token(issued.refresh_token)
    assert refreshed.session_id == issued.session_id and refreshed.access_token != issued.access_token

    keys = json.loads(client.get_signing_keys())
    assert keys["keys"] and all("kid" in key for key in keys["keys"])

    assert client.revoke_token(session_id=issued.session_id, reason="test") == 1
    assert client.revoke_token(session_id=issued.session_id) == 0
    rejected = client.validate_token(refreshed.access_token)
    assert (rejected.valid, rejected.reason, rejected.claims) == (False, InvalidReason.REVOKED, None)


def test_failures_raise_the_client_errors(authority: InProcessAuthority) -> None:
    client = authority.client
    issued = client.issue_token("bob", "laptop")
    with pytest.raises(SessionLimitReached) as limit:
        client.issue_token("bob", "phone", policy=SessionPolicy.REJECT)
    assert limit.value.code is grpc.StatusCode.FAILED_PRECONDITION

    traded = client.refresh_token(issued.refresh_token)
    client.refresh_token(traded.refresh_token)
    with pytest.raises(RefreshRejected) as reused:
        client.refresh_token(issued.refresh_token)  # already used, its pair too: the session dies
    assert reused.value.code is grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(InvalidArgument) as bad:
        client.issue_token("", "laptop")
    assert "subject" in bad.value.details
    with pytest.raises(InvalidArgument):
        client.validate_token("")
    with pytest.raises(ValueError):
        client.revoke_token(token="x", subject="y")


def test_logout_by_refresh_token_ends_the_session(authority: InProcessAuthority) -> None:
    client = authority.client
    issued = client.issue_token("grace", "laptop")

    assert client.revoke_token(refresh_token=issued.refresh_token) == 1

    assert client.list_sessions("grace") == []
    with pytest.raises(ValueError):
        client.revoke_token(refresh_token=issued.refresh_token, token=issued.access_token)


@pytest.mark.timeout(20)
async def test_both_clients_return_the_key_set_with_the_version_the_stream_announces(
    authority: InProcessAuthority,
) -> None:
    key_set = authority.client.get_signing_key_set()
    stream = authority.client.watch_revocations()
    try:
        announced = next(event for event in stream if event.kind is RevocationEventKind.SIGNING_KEYS)
    finally:
        stream.cancel()
    async with AsyncAuthorityClient(authority.target) as client:
        async_set = await client.get_signing_key_set()

    assert key_set.version >= 1 and key_set == async_set
    assert (announced.jwks_json, announced.key_set_version) == (key_set.jwks_json, key_set.version)
    assert authority.client.get_signing_keys() == key_set.jwks_json


@pytest.mark.timeout(20)
async def test_the_async_client_logs_out_by_refresh_token_too() -> None:
    async with AsyncInProcessAuthority() as authority:
        async with AsyncAuthorityClient(authority.target) as client:
            issued = await client.issue_token("heidi", "laptop")
            assert await client.revoke_token(refresh_token=issued.refresh_token) == 1
            assert await client.list_sessions("heidi") == []


def test_calls_to_a_stopped_authority_fail_unavailable_within_the_deadline(authority: InProcessAuthority) -> None:
    authority.stop()
    with AuthorityClient(authority.target, settings=ChannelSettings(timeout=1.0)) as client:
        started = time.monotonic()
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.validate_token("x")  # retried on UNAVAILABLE, all within the deadline
        assert time.monotonic() - started < 3.0
        with pytest.raises((Unavailable, DeadlineExceeded)):
            client.issue_token("carol", "laptop")


def test_only_idempotent_calls_are_retried() -> None:
    config = ChannelSettings().service_config()
    [method_config] = config["methodConfig"]
    assert {name["method"] for name in method_config["name"]} == set(IDEMPOTENT_METHODS)
    assert set(IDEMPOTENT_METHODS) == {"ValidateToken", "GetSigningKeys", "RevokeToken"}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]


def test_api_key_is_sent_on_every_call() -> None:
    seen: list[str | None] = []

    def record(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(dict(context.invocation_metadata()).get("x-api-key"))  # type: ignore[arg-type]
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.unary_unary_rpc_method_handler(record)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("authority.v1.TokenAuthority", {"GetSigningKeys": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with AuthorityClient(f"127.0.0.1:{port}", api_key="k3y") as client:
            from authority_client.errors import PermissionDenied

            with pytest.raises(PermissionDenied):
                client.get_signing_keys()
    finally:
        server.stop(None)
    assert seen == ["k3y"]


@pytest.mark.parametrize("api_key", ["tak_s3cret\n", " tak_s3cret", "tak_s3cr\u00e9t", "tak s3cret\x00"])
async def test_an_api_key_metadata_cannot_carry_is_refused_unquoted(api_key: str) -> None:
    # gRPC would refuse it on every call, as INTERNAL, and a newline from a file is enough.
    for make in (AuthorityClient, AsyncAuthorityClient):
        with pytest.raises(ValueError, match="api_key must be printable ASCII") as refused:
            make("127.0.0.1:1", api_key=api_key)
        assert "s3c" not in str(refused.value)


def test_a_given_channel_is_used_and_left_open(authority: InProcessAuthority) -> None:
    channel = grpc.insecure_channel(authority.target)
    with AuthorityClient(channel=channel) as client:
        assert client.issue_token("dave", "laptop").session_id
    # Still open: the client did not own it.
    assert AuthorityClient(channel=channel).list_sessions("dave")
    channel.close()


@pytest.mark.timeout(20)
def test_the_stream_sends_keys_backlog_caught_up_then_live_revocations(authority: InProcessAuthority) -> None:
    client = authority.client
    first = client.issue_token("erin", "laptop")
    client.revoke_token(session_id=first.session_id)
    stream = client.watch_revocations(0, heartbeat_interval=0.1)
    events = iter(stream)
    kinds = []
    for event in events:
        kinds.append(event.kind)
        if event.kind is RevocationEventKind.CAUGHT_UP:
            break
    else:
        pytest.fail(f"the stream ended before CAUGHT_UP: {kinds}")
    assert kinds[0] is RevocationEventKind.SIGNING_KEYS
    assert RevocationEventKind.REVOCATION in kinds
    second = client.issue_token("frank", "laptop")
    client.revoke_token(token=second.access_token)
    for event in events:
        if event.kind is RevocationEventKind.REVOCATION:
            assert event.session_id == second.session_id
            break
        assert event.kind is RevocationEventKind.HEARTBEAT
    else:
        pytest.fail("the stream ended before the live revocation")
    stream.cancel()


@pytest.mark.timeout(20)
async def test_the_async_client_is_the_twin_of_the_blocking_one() -> None:
    async with AsyncInProcessAuthority() as authority:
        async with AsyncAuthorityClient(authority.target) as client:
            issued = await client.issue_token("alice", "laptop")
            validation = await client.validate_token(issued.access_token)
            assert validation.valid and validation.claims is not None
            assert validation.claims.subject == "alice"
            assert [s.session_id for s in await client.list_sessions("alice")] == [issued.session_id]
            assert json.loads(await client.get_signing_keys())["keys"]
            with pytest.raises(SessionLimitReached):
                await client.issue_token("alice", "phone", policy=SessionPolicy.REJECT)
            traded = await client.refresh_token(issued.refresh_token)
            refreshed = await client.refresh_token(traded.refresh_token)
            with pytest.raises(RefreshRejected):
                await client.refresh_token(issued.refresh_token)
            assert await client.revoke_token(token=refreshed.access_token) == 0  # reuse already ended it
            events = client.watch_revocations(0)
            kinds = []
            async for event in events:
                kinds.append(event.kind)
                if event.kind is RevocationEventKind.CAUGHT_UP:
                    break
            await events.aclose()
            assert kinds[0] is RevocationEventKind.SIGNING_KEYS and kinds.count(RevocationEventKind.REVOCATION) == 1


def test_a_dns_target_balances_over_what_the_name_resolves_to(authority: InProcessAuthority) -> None:
    port = authority.target.rpartition(":")[2]
    with AuthorityClient(f"dns:///localhost:{port}") as client:
        issued = client.issue_token("ivy", "laptop")
        assert client.validate_token(issued.access_token).valid


def test_unavailable_is_retried_for_idempotent_calls_only() -> None:
    from concurrent import futures

    from authority_client.v1 import authority_pb2 as pb

    attempts: dict[str, int] = {"GetSigningKeys": 0, "IssueToken": 0}

    def flaky(method: str, response: Any) -> Any:
        def behavior(request: Any, context: grpc.ServicerContext) -> Any:
            attempts[method] += 1
            if attempts[method] < 3:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            return response

        return behavior

    handlers = {
        "GetSigningKeys": grpc.unary_unary_rpc_method_handler(
            flaky("GetSigningKeys", pb.GetSigningKeysResponse(jwks_json='{"keys":[]}')),
            request_deserializer=pb.GetSigningKeysRequest.FromString,
            response_serializer=pb.GetSigningKeysResponse.SerializeToString,
        ),
        "IssueToken": grpc.unary_unary_rpc_method_handler(
            flaky("IssueToken", pb.IssueTokenResponse()),
            request_deserializer=pb.IssueTokenRequest.FromString,
            response_serializer=pb.IssueTokenResponse.SerializeToString,
        ),
    }
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("authority.v1.TokenAuthority", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with AuthorityClient(f"127.0.0.1:{port}") as client:
            assert client.get_signing_keys() == '{"keys":[]}'  # third attempt
            with pytest.raises(Unavailable):
                client.issue_token("alice", "laptop")  # a sign-in is tried once
    finally:
        server.stop(None)
    assert attempts == {"GetSigningKeys": 3, "IssueToken": 1}


def test_devices_preview_guard_and_sign_out_other_devices(authority: InProcessAuthority) -> None:
    client = authority.client
    laptop = client.issue_token("dana", "laptop", device_name="the laptop")
    preview = client.preview_sign_in("dana", "phone")
    assert preview.allowed and [s.device_name for s in preview.would_replace] == ["the laptop"]
    assert not client.preview_sign_in("dana", "phone", policy=SessionPolicy.REJECT).allowed
    with pytest.raises(SignInAborted):
        client.issue_token("dana", "phone", expected_replacements=[])
    phone = client.issue_token("dana", "phone", device_name="the phone",
                               expected_replacements=[s.session_id for s in preview.would_replace])
    assert phone.replaced_session_ids == (laptop.session_id,)

    refused = client.validate_token(laptop.access_token)
    assert refused.revocation_cause is RevocationCause.REPLACED_BY_SIGN_IN
    assert (refused.replaced_by_device_id, refused.replaced_by_device_name) == ("phone", "the phone")
    [listed] = client.list_sessions("dana")
    assert (listed.device_name, listed.last_used_at) == ("the phone", listed.created_at)
    assert client.revoke_other_sessions(token=phone.access_token) == 0
    with pytest.raises(ValueError):
        client.revoke_other_sessions()


@pytest.mark.timeout(20)
async def test_the_async_client_previews_guards_and_signs_out_other_devices() -> None:
    async with AsyncInProcessAuthority(max_sessions_per_subject=3) as authority:
        async with AsyncAuthorityClient(authority.target) as client:
            keep = await client.issue_token("erin", "laptop")
            await client.issue_token("erin", "phone")
            preview = await client.preview_sign_in("erin", "tablet", expected_replacements=[])
            assert preview.allowed and preview.would_replace == ()
            with pytest.raises(SignInAborted):
                await client.issue_token("erin", "laptop", expected_replacements=["unknown"])
            assert await client.revoke_other_sessions(session_id=keep.session_id) == 1
            assert [s.session_id for s in await client.list_sessions("erin")] == [keep.session_id]


@pytest.mark.parametrize("mode", MODES)
def test_verified_claims_cannot_be_changed_for_the_next_call(authority: InProcessAuthority, mode: str) -> None:
    # A token's claims are remembered (local mode, the remote cache) and handed to every
    # call that presents it: writable, one call's handler could change them for the rest.
    extra = {"roles": ["reader"], "org": {"id": 7, "teams": ["a"]}}
    client = AuthorityClient(authority.target)
    validator = Validator(client, validation_settings(mode)).start()
    try:
        assert validator.wait_until_fresh(10)
        token = authority.sign_in("frank", "laptop", audience="greeter", claims=extra).access_token
        first = validator.validate(token, "greeter")
        assert first.extra == extra and json.loads(json.dumps(first.extra)) == extra
        changes: list[Callable[[], object]] = [
            lambda: first.extra["roles"].append("admin"),
            lambda: first.extra.__setitem__("roles", ["admin"]),
            lambda: first.extra.pop("org"),
            lambda: first.extra.update(admin=True),
            lambda: first.extra["org"]["teams"].clear(),
            lambda: first.extra["org"].__setitem__("id", 8),
        ]
        for change in changes:
            with pytest.raises(TypeError, match="read-only"):
                change()
        assert validator.validate(token, "greeter").extra == extra
        # A copy is an ordinary one, to change at will.
        mine = copy.deepcopy(first.extra)
        mine["roles"].append("admin")
        assert mine["roles"] == ["reader", "admin"] and first.extra["roles"] == ["reader"]
    finally:
        validator.close()
        client.close()


@pytest.mark.timeout(20)
def test_a_bound_device_signs_the_others_out_with_its_proof_and_a_copy_of_its_token_cannot() -> None:
    from authority_client.proof import DeviceKey, Proof

    with InProcessAuthority(max_sessions_per_subject=3) as authority:
        client = AuthorityClient(authority.target)
        try:
            device = DeviceKey.generate()
            laptop = client.issue_token("gwen", "laptop")
            phone = client.issue_token("gwen", "phone", proof=device.proof_for("POST", "https://login.example/sign-in"))
            uri = "https://api.example.com/sign-out-others"

            with pytest.raises(InvalidArgument) as refused:
                client.revoke_other_sessions(token=phone.access_token)
            assert refused.value.details.startswith("other_sessions.proof: is required")
            assert len(client.list_sessions("gwen")) == 2

            proof = Proof(device.proof("POST", uri, access_token=phone.access_token), "POST", uri)
            assert client.revoke_other_sessions(token=phone.access_token, proof=proof) == 1
            assert [s.session_id for s in client.list_sessions("gwen")] == [phone.session_id]
            assert not client.validate_token(laptop.access_token).valid
        finally:
            client.close()
