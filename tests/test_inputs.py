"""One rule for every number, Duration and Timestamp a request carries, and a name for
every field that is not UTF-8: bad input is refused naming the field, logs no error and
changes nothing."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from typing import Any

import grpc
import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from authority.api.inputs import INT64_MAX, MAX_DURATION_SECONDS, MAX_TIMESTAMP_SECONDS, check_request
from authority.errors import InvalidArgument, ValueOutOfRange
from tests.conftest import Running
from tests.support.calls import Stub, live_sessions, new_subject, reason, rpc_error, sign_in


async def _first_error(stream: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            await asyncio.wait_for(stream.read(), 5)
    return caught.value


@pytest.mark.parametrize("after", [2**63, 2**63 + 1, 2**64 - 1])
async def test_after_sequence_beyond_int64_is_out_of_range_and_logs_no_error(
    stub: Stub, after: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards against INTERNAL and an ERROR traceback per call (a cheap log flood)."""
    with caplog.at_level(logging.WARNING):
        error = await _first_error(stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=after)))

    assert error.code() is grpc.StatusCode.OUT_OF_RANGE
    assert (error.details() or "").startswith("after_sequence:")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_after_sequence_at_the_int64_maximum_is_still_out_of_range(stub: Stub) -> None:
    error = await _first_error(stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=INT64_MAX)))

    assert error.code() is grpc.StatusCode.OUT_OF_RANGE


def test_every_unsigned_64_bit_field_is_checked_by_the_one_rule() -> None:
    # A response message stands in for any request that will carry one: the rule is by type.
    with pytest.raises(ValueOutOfRange) as caught:
        check_request(pb.RevocationEvent(sequence=2**63))
    assert caught.value.field == "sequence"
    check_request(pb.RevocationEvent(sequence=INT64_MAX))


BAD_DURATIONS = [
    ("nanos beyond a second", Duration(seconds=1, nanos=2_000_000_000)),
    ("mixed signs", Duration(seconds=1, nanos=-5)),
    ("mixed signs the other way", Duration(seconds=-1, nanos=5)),
    ("beyond 10,000 years", Duration(seconds=MAX_DURATION_SECONDS + 1)),
    ("zero", Duration()),
    ("negative", Duration(seconds=-60)),
    ("negative nanos", Duration(nanos=-1)),
]


@pytest.mark.parametrize("duration", [d for _, d in BAD_DURATIONS], ids=[n for n, _ in BAD_DURATIONS])
async def test_a_bad_ttl_is_refused_naming_it_and_changes_nothing(stub: Stub, duration: Duration) -> None:
    subject = new_subject()
    existing = await sign_in(stub, subject, "laptop")

    error = await rpc_error(sign_in(stub, subject, "phone", ttl=duration))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("ttl:")
    assert await live_sessions(stub, subject) == [existing.session_id]
    assert await reason(stub, existing.access_token) == "VALID"


@pytest.mark.parametrize("duration", [d for _, d in BAD_DURATIONS], ids=[n for n, _ in BAD_DURATIONS])
async def test_a_bad_heartbeat_interval_is_refused_by_the_same_rule(stub: Stub, duration: Duration) -> None:
    request = pb.WatchRevocationsRequest(heartbeat_interval=duration)

    error = await _first_error(stub.WatchRevocations(request))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("heartbeat_interval:")


async def test_a_ttl_under_a_microsecond_is_positive_and_rounds_up_to_a_second(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop", ttl=Duration(nanos=1))

    # Read from the token itself, not through ValidateToken: the call could come after
    # the token's one second has ended, and its answer would then hold no claims.
    claims = jwt.decode(signed_in.access_token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 1
    assert signed_in.expires_at.seconds == claims["exp"]


def test_every_timestamp_is_checked_by_the_one_rule_naming_its_path() -> None:
    late = pb.ListSessionsResponse(sessions=[pb.Session(expires_at=Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1))])
    with pytest.raises(InvalidArgument) as caught:
        check_request(late)
    assert caught.value.field == "sessions.expires_at"
    with pytest.raises(InvalidArgument):
        check_request(pb.Session(created_at=Timestamp(seconds=0, nanos=-1)))
    check_request(pb.Session(created_at=Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999)))


def _raw_call(running: Running, method: str, response: Any) -> Any:
    return running.channel.unary_unary(
        f"/authority.v1.TokenAuthority/{method}", request_serializer=lambda body: body,
        response_deserializer=response.FromString,
    )


def _string_field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


@pytest.mark.parametrize(("number", "field"), [(1, "subject"), (2, "device_id"), (4, "audience")])
async def test_invalid_utf8_in_a_sign_in_names_the_field(authority: Running, number: int, field: str) -> None:
    subject = new_subject()
    existing = await sign_in(authority.stub, subject, "laptop")
    good = pb.IssueTokenRequest(subject=subject, device_id="phone").SerializeToString()

    error = await rpc_error(_raw_call(authority, "IssueToken", pb.IssueTokenResponse)(good + _string_field(number, b"\xff\xfe")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"{field}: must be valid UTF-8"
    assert await live_sessions(authority.stub, subject) == [existing.session_id]


async def test_invalid_utf8_inside_the_claims_names_the_claims(authority: Running) -> None:
    claims = pb.IssueTokenRequest(subject="s", device_id="d")
    claims.claims.update({"note": "ok"})
    raw = claims.SerializeToString().replace(b"ok", b"\xff\xfe")

    error = await rpc_error(_raw_call(authority, "IssueToken", pb.IssueTokenResponse)(raw))

    assert error.details() == "claims: must be valid UTF-8"


async def test_invalid_utf8_in_a_token_to_validate_names_the_token(authority: Running) -> None:
    error = await rpc_error(_raw_call(authority, "ValidateToken", pb.ValidateTokenResponse)(_string_field(1, b"\xc3")))

    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "token: must be valid UTF-8"


async def test_subject_ids_are_opaque_so_nfc_and_nfd_spellings_are_two_subjects(stub: Stub) -> None:
    """The documented choice: ids are compared as given, never normalised."""
    name = f"zoë-{new_subject()}"
    composed, decomposed = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert composed != decomposed

    first = await sign_in(stub, composed, "laptop")
    second = await sign_in(stub, decomposed, "laptop")

    assert await reason(stub, first.access_token) == "VALID"  # not replaced: another subject
    assert await live_sessions(stub, composed) == [first.session_id]
    assert await live_sessions(stub, decomposed) == [second.session_id]
