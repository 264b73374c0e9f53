"""Every bad proof (issue 13, section 6) on every RPC that takes one, through a real
authority on SQLite and PostgreSQL: ValidateToken answers ``valid = false`` with
BAD_PROOF, IssueToken INVALID_ARGUMENT naming ``proof``, RefreshToken UNAUTHENTICATED;
never INTERNAL, never the proof in the message, and nothing changes.

(Two ``dpop`` metadata values are the interceptors' and middleware's to refuse: an RPC
carries one proof field. Their tests are with them.)
"""

from __future__ import annotations

import time

import grpc
import pytest
from authority_client.proof import DeviceKey
from authority_client.v1 import authority_pb2 as pb

from tests.support.calls import Stub, live_sessions, new_subject, rpc_error, sign_in
from authority.binding import describe
from authority_client.proof import InvalidProof

from tests.support.proofs import (
    API,
    BAD_PROOFS,
    FAILS,
    ONLY_WITH_A_BOUND_KEY,
    ONLY_WITH_A_TOKEN,
    REFRESH,
    SIGN_IN,
    RawDevice,
)
from tests.test_device_binding import api_proof, refresh, verdict

FOR_VALIDATION = {**BAD_PROOFS, **ONLY_WITH_A_TOKEN, **ONLY_WITH_A_BOUND_KEY}
FOR_REFRESH = {**BAD_PROOFS, **ONLY_WITH_A_BOUND_KEY}


def _assert_names_the_check(details: str, name: str) -> None:
    """The refusal says, in words, the check the bad proof was made to fail."""
    check = FAILS[name]
    if check == "field":
        assert details.startswith("proof.") and "must be 1 to" in details
    else:
        assert details == f"proof: {describe(InvalidProof(check))}"


def _no_secret_in(details: str, proof: pb.ProofOfPossession) -> None:
    # The proof's signature and payload are the parts that would make it usable.
    assert details.isprintable() and len(details) < 200
    for part in proof.proof.split("."):
        if len(part) > 8:
            assert part not in details


@pytest.mark.parametrize("name", sorted(FOR_VALIDATION))
async def test_validate_token_answers_bad_proof(stub: Stub, name: str) -> None:
    device, thief = RawDevice(), DeviceKey.generate()
    token = (await sign_in(stub, new_subject(), "phone", proof=_good(device, SIGN_IN))).access_token

    answer = await stub.ValidateToken(pb.ValidateTokenRequest(
        token=token, proof=FOR_VALIDATION[name](device, thief, API, token, time.time())
    ))

    assert not answer.valid
    assert answer.reason == pb.INVALID_REASON_BAD_PROOF
    assert not answer.HasField("claims")
    # Nothing changed: the device goes on with a good proof.
    assert await verdict(stub, token, api_proof(device.key, token)) == "VALID"


@pytest.mark.parametrize("name", sorted(BAD_PROOFS))
async def test_issue_token_refuses_with_invalid_argument_naming_proof(stub: Stub, name: str) -> None:
    device, subject = RawDevice(), new_subject()
    proof = BAD_PROOFS[name](device, DeviceKey.generate(), SIGN_IN, None, time.time())

    error = await rpc_error(sign_in(stub, subject, "phone", proof=proof))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_names_the_check(error.details(), name)
    _no_secret_in(error.details(), proof)
    assert await live_sessions(stub, subject) == []


@pytest.mark.parametrize("name", sorted(FOR_REFRESH))
async def test_refresh_token_refuses_with_unauthenticated_and_changes_nothing(stub: Stub, name: str) -> None:
    device, subject = RawDevice(), new_subject()
    signed_in = await sign_in(stub, subject, "phone", proof=_good(device, SIGN_IN))
    proof = FOR_REFRESH[name](device, DeviceKey.generate(), REFRESH, None, time.time())

    error = await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token,
                                                                     proof=proof)))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    _assert_names_the_check(error.details(), name)
    _no_secret_in(error.details(), proof)
    # Not rotated and not revoked: the session's token validates and its refresh token trades.
    assert await live_sessions(stub, subject) == [signed_in.session_id]
    assert await verdict(stub, signed_in.access_token, api_proof(device.key, signed_in.access_token)) == "VALID"
    assert (await refresh(stub, signed_in.refresh_token, device.key)).session_id == signed_in.session_id


async def test_a_proof_replayed_at_sign_in_is_refused(stub: Stub) -> None:
    device = RawDevice()
    proof = _good(device, SIGN_IN)
    await sign_in(stub, new_subject(), "phone", proof=proof)
    subject = new_subject()

    error = await rpc_error(sign_in(stub, subject, "phone", proof=proof))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "proof: its jti was used already: a proof is good for one request"
    assert await live_sessions(stub, subject) == []


async def test_a_proof_replayed_at_refresh_is_refused_and_changes_nothing(stub: Stub) -> None:
    device = RawDevice()
    signed_in = await sign_in(stub, new_subject(), "phone", proof=_good(device, SIGN_IN))
    proof = _good(device, REFRESH)
    refreshed = await stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token, proof=proof))

    error = await rpc_error(stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=refreshed.refresh_token,
                                                                     proof=proof)))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (await refresh(stub, refreshed.refresh_token, device.key)).session_id == signed_in.session_id


async def test_an_over_size_proof_on_a_bearer_token_is_a_bad_proof_too(stub: Stub) -> None:
    token = (await sign_in(stub, new_subject(), "laptop")).access_token
    proof = pb.ProofOfPossession(proof="x" * (8 * 1024 + 1), http_method="POST", http_uri=API[1])

    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=token, proof=proof))

    assert (answer.valid, answer.reason) == (False, pb.INVALID_REASON_BAD_PROOF)


def _good(device: RawDevice, request: tuple[str, str]) -> pb.ProofOfPossession:
    return pb.ProofOfPossession(proof=device.sign(device.claims(request, None, None)), http_method=request[0],
                                http_uri=request[1])
