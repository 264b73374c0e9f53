"""Device-bound tokens at Envoy's external authorization, called as Envoy calls it:
``Authorization: DPoP <token>`` and one ``DPoP`` header from the check request's headers,
htm its method, htu ``<scheme>://<host><path>`` without the query; refusals carry the
RFC 9449 challenges. SQLite and PostgreSQL alike, as every authority test."""

from __future__ import annotations

import json

import pytest
from authority_client.http.bearer import DPOP_ALGS
from authority_client.proof import DeviceKey
from authority_client.reasons import reason_text
from authority_client.v1 import authority_pb2 as pb
from authority_client.verify import InvalidReason
from envoy.service.auth.v3 import external_auth_pb2 as ext
from google.rpc import code_pb2

from tests.conftest import Running
from tests.support.calls import new_subject, reason, sign_in
from tests.support.checks import check_request
from tests.support.bound import bound_sign_in, proof_message
from tests.test_ext_authz import check, denial_of, headers_of

# check_request's request: GET http://app.test/orders (Envoy reports no scheme for
# plain HTTP/1.1 in some versions; the adapter takes http then).
URI = "http://app.test/orders"


def dpop_request(token: str, *proofs: str, scheme: str = "DPoP", path: str = "/orders", raw: bool = True,
                 audience: str | None = None, origin: str | None = None) -> ext.CheckRequest:
    request = check_request(f"{scheme} {token}", path=path, raw=raw, audience=audience,
                            extra=tuple(("dpop", proof) for proof in proofs))
    if origin is not None:
        request.attributes.context_extensions["origin"] = origin
    return request


def challenge(error: str, why: InvalidReason) -> str:
    return f'DPoP algs="{DPOP_ALGS}", error="{error}", error_description="{reason_text(why)}"'


async def test_a_bound_token_with_its_proof_is_allowed_once_per_proof(authority: Running) -> None:
    key, issued = await bound_sign_in(authority.stub, subject := new_subject(), "laptop")
    token = issued.access_token
    proof = key.proof("GET", URI, access_token=token)

    allowed = await check(authority, dpop_request(token, proof))
    replayed = await check(authority, dpop_request(token, proof))
    # A query string is no part of htu.
    with_query = await check(authority, dpop_request(token, key.proof("GET", URI, access_token=token),
                                                     path="/orders?page=2"))

    assert allowed.status.code == code_pb2.OK
    assert headers_of(list(allowed.ok_response.headers))["x-authority-subject"] == subject
    assert with_query.status.code == code_pb2.OK
    status, www_authenticate, body = denial_of(replayed)
    assert (status, www_authenticate) == (401, challenge("invalid_dpop_proof", InvalidReason.BAD_PROOF))
    assert body == {"error": "invalid_dpop_proof", "error_description": reason_text(InvalidReason.BAD_PROOF)}


async def test_a_copied_token_with_another_keys_proof_is_refused_and_the_device_goes_on(authority: Running) -> None:
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    attacker = DeviceKey.generate()

    stolen = await check(authority, dpop_request(token, attacker.proof("GET", URI, access_token=token)))
    own = await check(authority, dpop_request(token, key.proof("GET", URI, access_token=token)))

    assert denial_of(stolen)[0] == 401
    assert denial_of(stolen)[2]["error"] == "invalid_dpop_proof"
    assert own.status.code == code_pb2.OK


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bearer", InvalidReason.PROOF_REQUIRED),
        ("no proof", InvalidReason.PROOF_REQUIRED),
        ("two proofs", InvalidReason.BAD_PROOF),
        ("two proofs joined", InvalidReason.BAD_PROOF),
        ("wrong htm", InvalidReason.BAD_PROOF),
        ("wrong htu", InvalidReason.BAD_PROOF),
        ("ath of another token", InvalidReason.BAD_PROOF),
        ("malformed", InvalidReason.BAD_PROOF),
    ],
)
async def test_each_bad_way_of_presenting_a_bound_token_is_denied_with_its_challenge(
    authority: Running, name: str, why: InvalidReason
) -> None:
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token

    def good() -> str:
        return key.proof("GET", URI, access_token=token)

    request = {
        "bearer": lambda: dpop_request(token, good(), scheme="Bearer"),
        "no proof": lambda: dpop_request(token),
        "two proofs": lambda: dpop_request(token, good(), good()),
        "two proofs joined": lambda: dpop_request(token, good(), good(), raw=False),
        "wrong htm": lambda: dpop_request(token, key.proof("POST", URI, access_token=token)),
        "wrong htu": lambda: dpop_request(token, key.proof("GET", "http://app.test/billing", access_token=token)),
        "ath of another token": lambda: dpop_request(token, key.proof("GET", URI, access_token=token + "x")),
        "malformed": lambda: dpop_request(token, "not-a-proof"),
    }[name]()

    status, www_authenticate, body = denial_of(await check(authority, request))

    error = "invalid_dpop_proof" if why is InvalidReason.BAD_PROOF else "invalid_token"
    assert (status, www_authenticate) == (401, challenge(error, why))
    assert body == {"error": error, "error_description": reason_text(why)}
    assert token not in json.dumps(body)
    # The device goes on working, and ValidateToken agrees the token is sound.
    assert (await check(authority, dpop_request(token, good()))).status.code == code_pb2.OK


async def test_behind_another_proxy_the_route_names_the_origin_clients_address(authority: Running) -> None:
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    origin = "https://api.example.com"

    outside = await check(authority, dpop_request(
        token, key.proof("GET", f"{origin}/orders", access_token=token), origin=origin))
    inside = await check(authority, dpop_request(token, key.proof("GET", URI, access_token=token), origin=origin))

    assert outside.status.code == code_pb2.OK
    assert denial_of(inside)[0] == 401


async def test_a_bearer_token_keeps_its_bearer_challenge_and_is_refused_with_a_proof(authority: Running) -> None:
    issued = await sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    device = DeviceKey.generate()

    allowed = await check(authority, check_request(f"Bearer {token}"))
    wrong_audience = denial_of(await check(authority, check_request(f"Bearer {token}", audience="billing")))
    with_proof = denial_of(await check(authority, dpop_request(token, device.proof("GET", URI, access_token=token))))

    assert allowed.status.code == code_pb2.OK
    assert wrong_audience[1] is not None
    assert wrong_audience[1].startswith('Bearer realm="token-authority", error="invalid_token"')
    assert with_proof[1] == challenge("invalid_dpop_proof", InvalidReason.BAD_PROOF)


async def test_a_proof_used_through_envoy_is_refused_at_validate_token(authority: Running) -> None:
    # One replay cache per process: the adapter and ValidateToken share it.
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    proof = proof_message(key, "GET", URI, token)

    assert (await check(authority, dpop_request(token, proof.proof))).status.code == code_pb2.OK
    answer = await authority.stub.ValidateToken(pb.ValidateTokenRequest(token=token, proof=proof))

    assert not answer.valid and answer.reason == pb.INVALID_REASON_BAD_PROOF
    assert await reason(authority.stub, token) == "PROOF_REQUIRED"


async def test_a_host_no_url_can_hold_is_bad_proof_not_an_error(authority: Running) -> None:
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    request = dpop_request(token, key.proof("GET", URI, access_token=token))
    request.attributes.request.http.host = "bad host"

    status, www_authenticate, _ = denial_of(await check(authority, request))

    assert (status, www_authenticate) == (401, challenge("invalid_dpop_proof", InvalidReason.BAD_PROOF))


@pytest.mark.parametrize("suffix", ["?", "#"])
async def test_a_host_that_would_point_the_url_at_another_path_is_bad_proof(authority: Running, suffix: str) -> None:
    # "app.test/admin?" + "/orders" would read as /admin, the real path as its query: a
    # proof made for /admin must not pass on /orders.
    key, issued = await bound_sign_in(authority.stub, new_subject(), "laptop")
    token = issued.access_token
    request = dpop_request(token, key.proof("GET", "http://app.test/admin", access_token=token))
    request.attributes.request.http.host = "app.test/admin" + suffix

    status, www_authenticate, _ = denial_of(await check(authority, request))

    assert (status, www_authenticate) == (401, challenge("invalid_dpop_proof", InvalidReason.BAD_PROOF))
