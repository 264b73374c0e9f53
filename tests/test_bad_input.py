"""Bad input gets INVALID_ARGUMENT naming the field, and changes nothing."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import pytest
from authority_client.proof import DeviceKey
from authority_client.v1 import authority_pb2 as pb
from google.protobuf import duration_pb2, json_format, struct_pb2

from authority.config import Algorithm
from tests.conftest import StartServer
from tests.support.bound import SIGN_IN_URI, proof_message
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


def _claims(values: dict[str, Any]) -> struct_pb2.Struct:
    claims = struct_pb2.Struct()
    claims.update(values)
    return claims


BAD_SIGN_INS: list[tuple[str, dict[str, Any], str]] = [
    ("empty subject", {"subject": ""}, "subject"),
    ("subject over 256 bytes", {"subject": "é" * 129}, "subject"),
    ("NUL in subject", {"subject": "ali\x00ce"}, "subject"),
    ("empty device", {"device_id": ""}, "device_id"),
    ("device over 256 bytes", {"device_id": "d" * 257}, "device_id"),
    ("NUL in device", {"device_id": "pho\x00ne"}, "device_id"),
    # Subjects and device ids reach Envoy's identity headers: a newline could forge one.
    ("newline in subject", {"subject": "bob\r\nx-authority-subject: admin"}, "subject"),
    ("control character in device", {"device_id": "phone\x1b[2J"}, "device_id"),
    # Shown to people in device lists and sign-out texts: an override makes a name read as another.
    ("right-to-left override in device name", {"device_name": "iPhone \u202egnp.exe"}, "device_name"),
    ("isolate in device name", {"device_name": "\u2067laptop\u2069"}, "device_name"),
    ("line separator in device name", {"device_name": "phone\u2028admin"}, "device_name"),
    ("right-to-left mark in subject", {"subject": "bob\u200f"}, "subject"),
    ("paragraph separator in device", {"device_id": "phone\u2029"}, "device_id"),
    ("unknown policy", {"policy": 7}, "policy"),
    ("reserved claim iss", {"claims": _claims({"iss": "evil"})}, "claims"),
    ("reserved claim sub", {"claims": _claims({"sub": "someone-else"})}, "claims"),
    ("reserved claim exp", {"claims": _claims({"exp": 9999999999})}, "claims"),
    ("reserved claim sid", {"claims": _claims({"sid": "x"})}, "claims"),
    ("non-finite claim", {"claims": _claims({"score": math.inf})}, "claims"),
    ("oversized claims", {"claims": _claims({"blob": "x" * 5000})}, "claims"),
    # One level past MAX_CLAIM_DEPTH (32); protobuf itself refuses a message nested past its own limit.
    ("claim nested 33 levels deep", {"claims": _claims({"deep": json.loads("[" * 33 + "]" * 33)})}, "claims"),
    ("zero ttl", {"ttl": duration_pb2.Duration(seconds=0)}, "ttl"),
    ("negative ttl", {"ttl": duration_pb2.Duration(seconds=-60)}, "ttl"),
    ("unknown audience", {"audience": "someone-elses-api"}, "audience"),
]


@pytest.mark.parametrize(("fields", "field"), [(f, n) for _, f, n in BAD_SIGN_INS], ids=[c for c, _, _ in BAD_SIGN_INS])
async def test_bad_sign_in_is_invalid_argument_naming_the_field_and_changes_nothing(
    stub: Stub, fields: dict[str, Any], field: str
) -> None:
    subject = new_subject()
    existing = await sign_in(stub, subject, "laptop")
    request = {"subject": subject, "device_id": "phone", **fields}

    error = await rpc_error(stub.IssueToken(pb.IssueTokenRequest(**request)))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}:")
    assert await reason(stub, existing.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [existing.session_id]


async def test_emoji_sequences_and_right_to_left_scripts_are_names_like_any_other(stub: Stub) -> None:
    # The zero-width joiner of an emoji family, a variation selector, Arabic and Hebrew
    # letters: text, not controls.
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    name = f"{family} \u0647\u0627\u062a\u0641 \u05d8\u05dc\u05e4\u05d5\u05df \u2764\ufe0f"
    subject = new_subject()
    await sign_in(stub, subject, "phone", device_name=name)

    [listed] = (await stub.ListSessions(pb.ListSessionsRequest(subject=subject))).sessions
    assert listed.device_name == name


def _nested_objects(depth: int, bottom: dict[str, Any]) -> dict[str, Any]:
    for _ in range(depth):
        bottom = {"k": bottom}
    return bottom


# One rule at every depth, as the verifiers read a token: a NUL in any object's name.
NUL_NAMES: list[tuple[str, dict[str, Any]]] = [
    ("top level", {"ro\x00le": "s3cret-value"}),
    ("nested object", {"profile": {"a\x00b": "s3cret-value"}}),
    ("object in a list", {"groups": ["a", {"ro\x00le": "s3cret-value"}]}),
    # 32 levels under the claim: the deepest a claim may nest (MAX_CLAIM_DEPTH).
    ("deepest level", {"deep": _nested_objects(31, {"\x00": "s3cret-value"})}),
]


async def test_a_nul_is_refused_in_a_claim_name_at_any_depth_and_kept_in_values(stub: Stub) -> None:
    # Regression: only top-level names were checked, so {"profile": {"a\u0000b": 1}} was
    # signed into a token.
    subject = new_subject()
    existing = await sign_in(stub, subject, "laptop")
    for where, claims in NUL_NAMES:
        request = pb.IssueTokenRequest(subject=subject, device_id="phone", claims=_claims(claims))
        for call in (stub.IssueToken, stub.PreviewSignIn):
            error = await rpc_error(call(request))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, where
            # Neither the name nor the value is shown back.
            assert error.details() == "claims: names must not contain NUL characters", where
    assert await live_sessions(stub, subject) == [existing.session_id]
    assert await reason(stub, existing.access_token) == "VALID"

    # Values are the application's text: a NUL in one, at any depth, is signed in and
    # stored (as the JSON escape, on every store); so is a name spelling the escape out.
    values = {"note": "a\x00b", "profile": {"tags": ["\x00"], "a\\u0000b": {"x": "\x00"}}}
    signed_in = await sign_in(stub, subject, "phone", claims=_claims(values))
    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token))
    assert answer.valid
    assert json_format.MessageToDict(answer.claims.extra) == values


async def test_subject_of_exactly_256_bytes_is_accepted(stub: Stub) -> None:
    signed_in = await sign_in(stub, "s" * 256, "d" * 256)

    assert await reason(stub, signed_in.access_token) == "VALID"


async def test_validate_with_an_empty_token_is_invalid_argument(stub: Stub) -> None:
    error = await rpc_error(stub.ValidateToken(pb.ValidateTokenRequest(token="")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "token" in (error.details() or "")


@pytest.mark.parametrize("token", ["x", "a.b", "a.b.c", "a.b.c.d", "ey.ey.ey", "x" * 100_000, "\u00e9.\u00e9.\u00e9"])
async def test_validate_with_garbage_is_ok_and_malformed(stub: Stub, token: str) -> None:
    assert await reason(stub, token) == "MALFORMED"


async def test_list_sessions_with_an_empty_subject_is_invalid_argument(stub: Stub) -> None:
    error = await rpc_error(stub.ListSessions(pb.ListSessionsRequest(subject="")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "subject" in (error.details() or "")


async def test_a_request_that_is_not_valid_protobuf_is_invalid_argument(stub: Stub, authority: Any) -> None:
    # A string field holding bytes that are not UTF-8: the request cannot even be decoded.
    raw = pb.IssueTokenRequest(device_id="phone").SerializeToString() + b"\x0a\x02\xff\xfe"
    call = authority.channel.unary_unary(
        "/authority.v1.TokenAuthority/IssueToken",
        request_serializer=lambda body: body,
        response_deserializer=pb.IssueTokenResponse.FromString,
    )

    error = await rpc_error(call(raw))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_sign_in_whose_token_would_exceed_8_kib_is_invalid_argument_and_changes_nothing(
    start_server: StartServer,
) -> None:
    stub = (await start_server(signing_algorithm=Algorithm.RS256)).stub
    # Each character escapes in the token's JSON: an emoji (4 bytes) to twelve characters,
    # a control character (allowed in claims, not in identifiers) to six.
    subject = "\U0001F600" * 64
    existing = await sign_in(stub, subject, "laptop")
    claims = struct_pb2.Struct()
    claims.update({"note": "\x02" * 680})

    too_large = pb.IssueTokenRequest(subject=subject, device_id="\U0001F4F1" * 64, claims=claims)

    error = await rpc_error(stub.IssueToken(too_large))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("claims:")
    assert "would exceed 8192 bytes" in (error.details() or "")
    assert await reason(stub, existing.access_token) == "VALID"
    assert await live_sessions(stub, subject) == [existing.session_id]
    # Refused with the request, as the other fields are: a preview does not allow it, and
    # a proof sent with it stays good for the sign-in that follows.
    preview = await rpc_error(stub.PreviewSignIn(too_large))
    assert (preview.code(), preview.details()) == (error.code(), error.details())
    key = DeviceKey.generate()
    proof = proof_message(key, "POST", SIGN_IN_URI)
    too_large.proof.CopyFrom(proof)
    assert (await rpc_error(stub.IssueToken(too_large))).details() == error.details()
    bound = await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="phone", proof=proof))
    assert bound.token_type == "DPoP"


async def test_a_bound_token_just_under_8_kib_is_issued(start_server: StartServer) -> None:
    # The size check's stand-ins are as long as the real values: a request whose bound
    # token comes close to the limit is not refused for it.
    stub = (await start_server(signing_algorithm=Algorithm.RS256)).stub
    subject = device = "\U0001F600" * 64
    # Each character more of the claim is six more in the payload, eight in the token.
    for size in range(500, 681):
        claims = struct_pb2.Struct()
        claims.update({"note": "\x02" * size})
        request = pb.IssueTokenRequest(subject=subject, device_id=device, claims=claims)
        request.proof.CopyFrom(proof_message(DeviceKey.generate(), "POST", SIGN_IN_URI))
        try:
            issued = await stub.IssueToken(request)
        except grpc.aio.AioRpcError as refused:
            assert "would exceed 8192 bytes" in (refused.details() or "")
            break
        assert issued.token_type == "DPoP" and len(issued.access_token) <= 8192
        largest = len(issued.access_token)
    else:
        pytest.fail("no request came to the limit")
    assert largest > 8192 - 12  # the last one issued was within a step of the limit


async def test_nothing_commits_whose_reply_cannot_be_built(start_server: StartServer) -> None:
    """Guards against sign-ins that committed (the second revoking the first) and then
    failed building a reply: here the session's end falls past the year 9999, the last
    second a protobuf Timestamp can carry."""
    near_the_end = 253_402_300_799 - 10 * 86400
    running = await start_server(lambda: near_the_end)
    subject = new_subject()

    for device in ("laptop", "phone"):
        error = await rpc_error(sign_in(running.stub, subject, device))
        assert error.code() is grpc.StatusCode.INTERNAL
        assert error.details() == "internal error"

    store = running.server.authority.store
    assert await store.live_sessions(subject, near_the_end, None) == []
    assert await store.last_sequence() == 0  # nothing was revoked either
