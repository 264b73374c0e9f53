"""Device-bound tokens (issue 13) through a real authority, on SQLite and PostgreSQL:
binding at sign-in, refresh only by the bound key, validation with a proof on every call.

The bad-input table (every bad proof, on every RPC) is tests/test_device_binding_input.py;
the stolen-token scenario, tests/test_device_binding_theft.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
from authority_client.proof import DeviceKey
from authority_client.v1 import authority_pb2 as pb

from tests.conftest import Clock, StartServer
from tests.support.calls import Stub, live_sessions, new_subject, rpc_error, sign_in
from tests.support.proofs import API, REFRESH, SIGN_IN, message


def payload(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: what a consumer's JWT library would read."""
    segment = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


async def bound_sign_in(stub: Stub, key: DeviceKey, subject: str = "", **fields: Any) -> pb.IssueTokenResponse:
    """A sign-in with a proof by ``key``, from the device's sign-in request."""
    return await sign_in(stub, subject or new_subject(), "phone", proof=message(key.proof_for(*SIGN_IN)), **fields)


async def refresh(stub: Stub, refresh_token: str, key: DeviceKey | None) -> pb.IssueTokenResponse:
    """A refresh with a proof by ``key`` (None: without a proof)."""
    request = pb.RefreshTokenRequest(refresh_token=refresh_token)
    if key is not None:
        request.proof.CopyFrom(message(key.proof_for(*REFRESH)))
    return await stub.RefreshToken(request)


async def verdict(stub: Stub, token: str, proof: pb.ProofOfPossession | None = None) -> str:
    """VALID, or the reason the token is refused (PROOF_REQUIRED, BAD_PROOF, ...)."""
    request = pb.ValidateTokenRequest(token=token)
    if proof is not None:
        request.proof.CopyFrom(proof)
    answer = await stub.ValidateToken(request)
    return "VALID" if answer.valid else pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")


def api_proof(key: DeviceKey, token: str, now: float | None = None) -> pb.ProofOfPossession:
    """A proof by ``key`` for a call to a service with ``token``."""
    return message(key.proof_for(*API, access_token=token)) if now is None else pb.ProofOfPossession(
        proof=key.proof(*API, access_token=token, now=now), http_method=API[0], http_uri=API[1]
    )


# --- binding at sign-in -------------------------------------------------------------------


async def test_a_sign_in_with_a_proof_binds_its_tokens_to_the_device_key(stub: Stub) -> None:
    key = DeviceKey.generate()

    signed_in = await bound_sign_in(stub, key)

    assert signed_in.token_type == "DPoP"
    assert payload(signed_in.access_token)["cnf"] == {"jkt": key.thumbprint}
    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token,
                                                              proof=api_proof(key, signed_in.access_token)))
    assert answer.valid
    assert answer.claims.key_thumbprint == key.thumbprint


async def test_an_es256_device_key_binds_as_well(stub: Stub) -> None:
    key = DeviceKey.generate("ES256")

    signed_in = await bound_sign_in(stub, key)

    assert payload(signed_in.access_token)["cnf"] == {"jkt": key.thumbprint}
    assert await verdict(stub, signed_in.access_token, api_proof(key, signed_in.access_token)) == "VALID"


async def test_a_sign_in_without_a_proof_issues_bearer_tokens_as_before(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")

    assert signed_in.token_type == "Bearer"
    assert "cnf" not in payload(signed_in.access_token)
    answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=signed_in.access_token))
    assert answer.valid and answer.claims.key_thumbprint == ""


async def test_a_bound_session_keeps_the_single_device_rule(stub: Stub) -> None:
    subject = new_subject()
    first = await bound_sign_in(stub, DeviceKey.generate(), subject)

    second = await sign_in(stub, subject, "tablet", proof=message(DeviceKey.generate().proof_for(*SIGN_IN)))

    assert list(second.replaced_session_ids) == [first.session_id]
    assert await live_sessions(stub, subject) == [second.session_id]


async def test_required_proofs_refuse_a_sign_in_without_one_and_change_nothing(start_server: StartServer) -> None:
    stub = (await start_server(require_proof_of_possession="true")).stub
    subject = new_subject()

    error = await rpc_error(sign_in(stub, subject, "laptop"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith("proof: is required")
    assert await live_sessions(stub, subject) == []
    assert (await bound_sign_in(stub, DeviceKey.generate(), subject)).token_type == "DPoP"


async def test_required_proofs_apply_to_the_audiences_named_only(start_server: StartServer) -> None:
    stub = (await start_server(audiences=("web", "payments"), require_proof_of_possession="payments")).stub

    web = await sign_in(stub, new_subject(), "laptop", audience="web")
    error = await rpc_error(sign_in(stub, new_subject(), "laptop", audience="payments"))

    assert web.token_type == "Bearer"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(error.details()).startswith("proof:")
    bound = await bound_sign_in(stub, DeviceKey.generate(), audience="payments")
    assert bound.token_type == "DPoP"


async def test_preview_requires_a_proof_where_sign_in_does_and_leaves_it_unused(start_server: StartServer) -> None:
    stub = (await start_server(require_proof_of_possession="true")).stub
    key, subject = DeviceKey.generate(), new_subject()
    proof = message(key.proof_for(*SIGN_IN))

    error = await rpc_error(stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone")))
    preview = await stub.PreviewSignIn(pb.IssueTokenRequest(subject=subject, device_id="phone", proof=proof))
    signed_in = await sign_in(stub, subject, "phone", proof=proof)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and str(error.details()).startswith("proof:")
    assert preview.allowed
    assert signed_in.token_type == "DPoP"  # the preview did not use the proof up


# --- refresh --------------------------------------------------------------------------------


async def test_a_bound_session_refreshes_with_a_proof_by_its_key_and_stays_bound(stub: Stub) -> None:
    key = DeviceKey.generate()
    signed_in = await bound_sign_in(stub, key)

    refreshed = await refresh(stub, signed_in.refresh_token, key)
    again = await refresh(stub, refreshed.refresh_token, key)

    assert refreshed.token_type == again.token_type == "DPoP"
    assert payload(again.access_token)["cnf"] == {"jkt": key.thumbprint}
    assert await verdict(stub, again.access_token) == "PROOF_REQUIRED"
    assert await verdict(stub, again.access_token, api_proof(key, again.access_token)) == "VALID"


async def test_a_bound_session_does_not_refresh_without_a_proof_and_nothing_changes(stub: Stub) -> None:
    key = DeviceKey.generate()
    signed_in = await bound_sign_in(stub, key)

    error = await rpc_error(refresh(stub, signed_in.refresh_token, None))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert str(error.details()) == "proof: is required: the session is bound to a device key"
    # Not rotated, not revoked: the device's own refresh still works.
    assert (await refresh(stub, signed_in.refresh_token, key)).session_id == signed_in.session_id


async def test_a_bearer_session_refuses_a_refresh_with_a_proof_and_nothing_changes(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")

    error = await rpc_error(refresh(stub, signed_in.refresh_token, DeviceKey.generate()))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not bound" in str(error.details())
    refreshed = await refresh(stub, signed_in.refresh_token, None)
    assert refreshed.token_type == "Bearer"


# --- validation -----------------------------------------------------------------------------


async def test_a_bound_token_without_a_proof_is_proof_required(stub: Stub) -> None:
    signed_in = await bound_sign_in(stub, DeviceKey.generate())

    assert await verdict(stub, signed_in.access_token) == "PROOF_REQUIRED"


async def test_a_bearer_token_with_a_proof_is_a_bad_proof(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")

    proof = api_proof(DeviceKey.generate(), signed_in.access_token)

    assert await verdict(stub, signed_in.access_token, proof) == "BAD_PROOF"
    assert await verdict(stub, signed_in.access_token) == "VALID"


async def test_a_remembered_bound_token_still_needs_a_fresh_proof_on_every_call(stub: Stub) -> None:
    key = DeviceKey.generate()
    token = (await bound_sign_in(stub, key)).access_token
    first = api_proof(key, token)

    assert await verdict(stub, token, first) == "VALID"
    # The token is remembered now: the proof is still checked, and a used one refused.
    assert await verdict(stub, token, api_proof(key, token)) == "VALID"
    assert await verdict(stub, token, first) == "BAD_PROOF"
    assert await verdict(stub, token) == "PROOF_REQUIRED"
    assert await verdict(stub, token, api_proof(DeviceKey.generate(), token)) == "BAD_PROOF"
    assert await verdict(stub, token, api_proof(key, token)) == "VALID"


async def test_a_replayed_proof_is_refused(stub: Stub) -> None:
    key = DeviceKey.generate()
    token = (await bound_sign_in(stub, key)).access_token
    proof = api_proof(key, token)

    first, replayed = await verdict(stub, token, proof), await verdict(stub, token, proof)

    assert (first, replayed) == ("VALID", "BAD_PROOF")


async def test_a_revoked_bound_token_is_revoked_after_its_proof_is_checked(stub: Stub) -> None:
    key = DeviceKey.generate()
    signed_in = await bound_sign_in(stub, key)
    await stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed_in.session_id))

    token = signed_in.access_token
    assert await verdict(stub, token) == "PROOF_REQUIRED"
    assert await verdict(stub, token, api_proof(key, token)) == "REVOKED"


@pytest.mark.parametrize("remembered", [False, True], ids=["first-seen", "remembered"])
async def test_a_revoked_bound_token_spends_none_of_its_keys_proofs(
    start_server: StartServer, remembered: bool
) -> None:
    clock = Clock()
    # A quota of three proofs per key (30 // 10); the sign-in's proof holds one.
    stub = (await start_server(clock, proof_replay_cache_size=30, proof_max_age=30.0)).stub
    key = DeviceKey.generate()
    signed_in = await bound_sign_in_at(stub, key, clock.now)
    token = signed_in.access_token
    if remembered:
        assert await verdict(stub, token, api_proof(key, token, clock.now)) == "VALID"
    await stub.RevokeToken(pb.RevokeTokenRequest(session_id=signed_in.session_id))

    proof = api_proof(key, token, clock.now)
    verdicts = [await verdict(stub, token, one) for one in (proof, proof, api_proof(key, token, clock.now))]
    # The device signs in again with the same key: its quota still has room.
    again = await bound_sign_in_at(stub, key, clock.now)

    assert verdicts == ["REVOKED"] * 3
    assert again.access_token


async def test_the_replay_cache_when_full_refuses_proofs_until_their_window_ends(start_server: StartServer) -> None:
    clock = Clock()
    # A quota of one proof per key (3 // 10, at least 1): three keys fill the cache.
    stub = (await start_server(clock, proof_replay_cache_size=3, proof_max_age=30.0)).stub
    key = DeviceKey.generate()
    # The sign-in's proof is the cache's first entry: one checker for sign-in and validation.
    token = (await bound_sign_in_at(stub, key, clock.now)).access_token
    for other in (DeviceKey.generate(), DeviceKey.generate()):
        await bound_sign_in_at(stub, other, clock.now)

    full = await verdict(stub, token, api_proof(key, token, clock.now))
    clock.advance(31)  # past every remembered proof's window (iat + proof_max_age)
    later = await verdict(stub, token, api_proof(key, token, clock.now))

    assert full == "BAD_PROOF"
    assert later == "VALID"


async def test_one_key_is_refused_at_its_quota_of_the_replay_cache_while_others_pass(start_server: StartServer) -> None:
    clock = Clock()
    # A quota of two proofs per key: proof_replay_cache_size // 10.
    stub = (await start_server(clock, proof_replay_cache_size=20, proof_max_age=30.0)).stub
    flooder, other = DeviceKey.generate(), DeviceKey.generate()
    token = (await bound_sign_in_at(stub, flooder, clock.now)).access_token

    accepted = await verdict(stub, token, api_proof(flooder, token, clock.now))
    over = await verdict(stub, token, api_proof(flooder, token, clock.now))
    error = await rpc_error(bound_sign_in_at(stub, flooder, clock.now))
    other_token = (await bound_sign_in_at(stub, other, clock.now)).access_token
    other_verdict = await verdict(stub, other_token, api_proof(other, other_token, clock.now))
    clock.advance(31)  # the flooder's proofs leave their window, and its quota with them
    later = await verdict(stub, token, api_proof(flooder, token, clock.now))

    assert (accepted, over, other_verdict, later) == ("VALID", "BAD_PROOF", "VALID", "VALID")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith("proof: cannot be checked now: this device key has sent too many")


async def bound_sign_in_at(stub: Stub, key: DeviceKey, now: float) -> pb.IssueTokenResponse:
    proof = pb.ProofOfPossession(proof=key.proof(*SIGN_IN, now=now), http_method=SIGN_IN[0], http_uri=SIGN_IN[1])
    return await sign_in(stub, new_subject(), "phone", proof=proof)


async def test_a_full_replay_cache_refuses_a_bound_sign_in_with_invalid_argument(start_server: StartServer) -> None:
    stub = (await start_server(proof_replay_cache_size=1)).stub
    await bound_sign_in(stub, DeviceKey.generate())
    subject = new_subject()

    error = await rpc_error(bound_sign_in(stub, DeviceKey.generate(), subject))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(error.details()).startswith("proof: cannot be checked now")
    assert await live_sessions(stub, subject) == []


async def test_proof_max_age_sets_the_window_of_iat(start_server: StartServer) -> None:
    clock = Clock()
    stub = (await start_server(clock, proof_max_age=5.0)).stub
    key = DeviceKey.generate()
    token = (await bound_sign_in_at(stub, key, clock.now)).access_token

    inside = await verdict(stub, token, api_proof(key, token, clock.now - 4))
    outside = await verdict(stub, token, api_proof(key, token, clock.now - 7))

    assert (inside, outside) == ("VALID", "BAD_PROOF")


@pytest.mark.parametrize("method_uri", [
    ("POST", "https://orders.example.com/orders.v1.Orders/List?page=2#top"),
    ("POST", "HTTPS://Orders.Example.COM:443/orders.v1.Orders/List"),
])
async def test_htu_is_compared_normalised_without_query_and_fragment(stub: Stub, method_uri: tuple[str, str]) -> None:
    key = DeviceKey.generate()
    token = (await bound_sign_in(stub, key)).access_token
    # Signed for the canonical URI, validated for the request as the service saw it.
    proof = pb.ProofOfPossession(proof=key.proof(*API, access_token=token), http_method=method_uri[0],
                                 http_uri=method_uri[1])

    assert await verdict(stub, token, proof) == "VALID"


# --- signing the other devices out by a bound token -------------------------------------


def others_by(token: str, proof: pb.ProofOfPossession | None = None) -> pb.RevokeTokenRequest:
    ref = pb.SessionRef(token=token)
    if proof is not None:
        ref.proof.CopyFrom(proof)
    return pb.RevokeTokenRequest(other_sessions=ref)


async def test_a_copy_of_a_bound_token_cannot_sign_the_other_devices_out(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=3)).stub
    subject, key = new_subject(), DeviceKey.generate()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await bound_sign_in(stub, key, subject)
    token = phone.access_token

    missing = await rpc_error(stub.RevokeToken(others_by(token)))
    stolen = await rpc_error(stub.RevokeToken(others_by(token, api_proof(DeviceKey.generate(), token))))
    # A proof by the right key, but for another token (its ath): not this request's.
    other = (await sign_in(stub, subject, "watch", proof=message(key.proof_for(*SIGN_IN)))).access_token
    borrowed = await rpc_error(stub.RevokeToken(others_by(token, api_proof(key, other))))

    for error in (missing, stolen, borrowed):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(error.details()).startswith("other_sessions.proof: ")
        assert token not in str(error.details())
    assert "is required" in str(missing.details())
    assert await verdict(stub, laptop.access_token) == "VALID"
    assert len(await live_sessions(stub, subject)) == 3


async def test_the_bound_device_signs_the_others_out_with_its_proof_once(start_server: StartServer) -> None:
    stub = (await start_server(max_sessions_per_subject=3)).stub
    subject, key = new_subject(), DeviceKey.generate()
    laptop = await sign_in(stub, subject, "laptop")
    phone = await bound_sign_in(stub, key, subject)
    proof = api_proof(key, phone.access_token)

    answer = await stub.RevokeToken(others_by(phone.access_token, proof))
    replayed = await rpc_error(stub.RevokeToken(others_by(phone.access_token, proof)))

    assert answer.revoked_sessions == 1
    assert await verdict(stub, laptop.access_token) == "REVOKED"
    assert await verdict(stub, phone.access_token, api_proof(key, phone.access_token)) == "VALID"
    assert replayed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "was used already" in str(replayed.details())


async def test_a_proof_with_a_bearer_token_or_a_session_id_is_refused_and_changes_nothing(
    start_server: StartServer,
) -> None:
    stub = (await start_server(max_sessions_per_subject=3)).stub
    subject, key = new_subject(), DeviceKey.generate()
    laptop = await sign_in(stub, subject, "laptop")
    tablet = await sign_in(stub, subject, "tablet")
    proof = api_proof(key, laptop.access_token)

    bearer = await rpc_error(stub.RevokeToken(others_by(laptop.access_token, proof)))
    by_id = pb.RevokeTokenRequest(other_sessions=pb.SessionRef(session_id=laptop.session_id, proof=proof))
    session = await rpc_error(stub.RevokeToken(by_id))
    bad = pb.ProofOfPossession(proof="x", http_method="", http_uri="https://api.example.com/x")
    empty_method = await rpc_error(stub.RevokeToken(others_by(laptop.access_token, bad)))

    assert [e.code() for e in (bearer, session, empty_method)] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert str(bearer.details()).startswith("other_sessions.proof: the session is not bound")
    assert str(session.details()).startswith("other_sessions.proof: goes with a token only")
    assert str(empty_method.details()).startswith("other_sessions.proof.http_method: must be 1 to")
    assert await verdict(stub, tablet.access_token) == "VALID"
