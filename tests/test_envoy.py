"""A real Envoy in front of a tiny HTTP service, asking the authority (ext_authz over HTTP/2)
before every request: the sample deploy/envoy/envoy.yaml, on free loopback ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from authority_client.http.bearer import DPOP_ALGS
from authority_client.proof import DeviceKey
from authority_client.v1 import authority_pb2 as pb
from authority_client.reasons import MISSING_TEXT, RequestProblem, problem_text, reason_text, refusal_text
from authority_client.verify import InvalidReason, RevocationCause

from tests.conftest import Running, StartServer
from tests.support.calls import named_in_time, new_subject, sign_in
from tests.support.bound import bound_sign_in
from tests.support.envoy import EchoService, Envoy, echo_service, envoy_binary, render

IDENTITY = ("x-authority-subject", "x-authority-session-id", "x-authority-device-id", "x-authority-token-id")


@pytest.fixture
def service() -> Iterator[EchoService]:
    with echo_service() as service:
        yield service


@pytest.fixture
async def envoy(authority: Running, service: EchoService, tmp_path: Path) -> AsyncIterator[Envoy]:
    binary = envoy_binary()
    envoy = await asyncio.to_thread(Envoy.start, binary, render(service.port, authority.server.port), tmp_path)
    yield envoy
    await asyncio.to_thread(envoy.stop)


@pytest.fixture
async def client(envoy: Envoy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=envoy.url, timeout=10) as client:
        yield client


def seen_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """The headers the service received, as it echoed them."""
    return [(name, value) for name, value in response.json()["headers"]]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_the_single_device_rule_through_envoy(
    authority: Running, service: EchoService, client: httpx.AsyncClient
) -> None:
    subject = new_subject()

    # No token: 401 with the bare challenge, and the service never sees the request.
    anonymous = await client.get("/orders")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="token-authority"'
    assert anonymous.json() == {"error": "unauthorized", "error_description": MISSING_TEXT}
    assert service.seen == []

    # A valid token: through, with the identity set by the authority and the spoofed one gone.
    laptop = await sign_in(authority.stub, subject, "laptop")
    spoofed = [("authorization", f"Bearer {laptop.access_token}"), ("x-authority-subject", "root"),
               ("x-authority-subject", "admin"), ("x-authority-device-id", "root-box")]
    allowed = await client.get("/orders", headers=spoofed)
    assert allowed.status_code == 200
    seen = seen_headers(allowed)
    identity = [(name, value) for name, value in seen if name in IDENTITY]
    assert sorted(name for name, _ in identity) == sorted(IDENTITY)  # each exactly once
    values = dict(identity)
    assert values["x-authority-subject"] == subject
    assert values["x-authority-device-id"] == "laptop"
    assert values["x-authority-session-id"] == laptop.session_id
    assert {"root", "admin", "root-box"}.isdisjoint(value for _, value in seen)

    # A second device signs in: the first is refused, and told why: the cause, naming the
    # device that signed in (from the one table of texts).
    phone = await sign_in(authority.stub, subject, "phone", device_name="the phone")
    revoked = await named_in_time(
        lambda: client.get("/orders", headers=bearer(laptop.access_token)),
        lambda refusal: "the phone" in refusal.headers.get("www-authenticate", ""),
    )
    text = refusal_text(InvalidReason.REVOKED, RevocationCause.REPLACED_BY_SIGN_IN, "the phone")
    assert text == "revoked: signed in on the phone"
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"] == (
        f'Bearer realm="token-authority", error="invalid_token", error_description="{text}"'
    )
    assert revoked.json() == {"error": "invalid_token", "error_description": text}
    assert (await client.get("/orders", headers=bearer(phone.access_token))).status_code == 200

    # Logout: the phone's token is refused too, with its own cause.
    await authority.stub.RevokeToken(pb.RevokeTokenRequest(token=phone.access_token))
    logged_out = await client.get("/orders", headers=bearer(phone.access_token))
    assert logged_out.status_code == 401
    assert logged_out.json()["error_description"] == "revoked: logged out" != reason_text(InvalidReason.REVOKED)

    calls = len(service.seen)
    # The authority stopped: denied (failure_mode_allow: false, status_on_error 503), never allowed.
    other = await sign_in(authority.stub, new_subject(), "tablet")
    await authority.server.stop(None)
    stopped = await client.get("/orders", headers=bearer(other.access_token))
    assert stopped.status_code == 503
    assert len(service.seen) == calls


async def test_each_route_checks_its_own_audience_and_public_routes_need_none(
    authority: Running, client: httpx.AsyncClient
) -> None:
    issued = await sign_in(authority.stub, new_subject(), "laptop")  # for the default audience

    billing = await client.get("/billing/invoices", headers=bearer(issued.access_token))
    # The path is normalised before routing: no way round /billing/ through the / route.
    # (raw paths: httpx would resolve them itself.)
    around, doubled = [
        await client.get(client.base_url.copy_with(raw_path=raw), headers=bearer(issued.access_token))
        for raw in (b"/orders/../billing/invoices", b"//billing/invoices")
    ]
    # No check runs on the public route, and no client-sent identity reaches the service.
    health = await client.get("/healthz", headers=[("x-authority-subject", "root")])

    assert billing.status_code == 401
    assert billing.json()["error_description"] == reason_text(InvalidReason.WRONG_AUDIENCE)
    for refused in (around, doubled):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error_description"] == reason_text(InvalidReason.WRONG_AUDIENCE)
    assert health.status_code == 200
    assert "root" not in (value for _, value in seen_headers(health))


@pytest.mark.parametrize(
    ("headers", "path", "problem"),
    [
        ([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")], "/orders", RequestProblem.SEVERAL_HEADERS),
        ([("authorization", "Bearer")], "/orders", RequestProblem.EMPTY_TOKEN),
        ([("authorization", "Bearer " + "a" * 9000)], "/orders", RequestProblem.OVERSIZED),
        ([("authorization", "Bearer a b")], "/orders", RequestProblem.MALFORMED_HEADER),
        ([], "/orders?access_token=a.b.c", RequestProblem.TOKEN_IN_QUERY),
    ],
)
async def test_bad_headers_get_400_through_envoy(
    client: httpx.AsyncClient, service: EchoService, headers: list[tuple[str, str]], path: str,
    problem: RequestProblem,
) -> None:
    response = await client.get(path, headers=headers)

    assert response.status_code == 400
    assert response.headers["www-authenticate"] == (
        f'Bearer realm="token-authority", error="invalid_request", error_description="{problem_text(problem)}"'
    )
    assert response.json() == {"error": "invalid_request", "error_description": problem_text(problem)}
    assert service.seen == []


async def test_a_bound_token_with_its_proof_passes_through_envoy_and_a_replayed_or_stolen_one_does_not(
    authority: Running, service: EchoService, envoy: Envoy, client: httpx.AsyncClient
) -> None:
    subject = new_subject()
    key, issued = await bound_sign_in(authority.stub, subject, "laptop")
    token = issued.access_token
    uri = f"{envoy.url}/orders"

    def dpop(proof: str) -> list[tuple[str, str]]:
        return [("authorization", f"DPoP {token}"), ("dpop", proof)]

    proof = key.proof("GET", uri, access_token=token)
    allowed = await client.get("/orders", headers=dpop(proof))
    assert allowed.status_code == 200, allowed.text
    assert dict(seen_headers(allowed))["x-authority-subject"] == subject
    calls = len(service.seen)

    # The same proof again: a replay, refused with the DPoP challenge.
    replayed = await client.get("/orders", headers=dpop(proof))
    # The copied token with a proof by the attacker's own key.
    attacker = DeviceKey.generate()
    stolen = await client.get("/orders", headers=dpop(attacker.proof("GET", uri, access_token=token)))
    # The copied token sent as a bearer token.
    as_bearer = await client.get("/orders", headers=bearer(token))

    bad_proof = f'DPoP algs="{DPOP_ALGS}", error="invalid_dpop_proof", error_description="{reason_text(InvalidReason.BAD_PROOF)}"'
    for refused in (replayed, stolen):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == bad_proof
        assert refused.json() == {"error": "invalid_dpop_proof", "error_description": reason_text(InvalidReason.BAD_PROOF)}
    assert as_bearer.status_code == 401
    assert as_bearer.headers["www-authenticate"].startswith(f'DPoP algs="{DPOP_ALGS}", error="invalid_token"')
    assert as_bearer.json()["error_description"] == reason_text(InvalidReason.PROOF_REQUIRED)
    assert len(service.seen) == calls

    # The device goes on working (a query string is no part of htu); two DPoP headers
    # reach the authority as two (encode_raw_headers) and are refused.
    again = await client.get("/orders?page=2", headers=dpop(key.proof("GET", uri, access_token=token)))
    assert again.status_code == 200
    two = await client.get("/orders", headers=[*dpop(key.proof("GET", uri, access_token=token)),
                                               ("dpop", key.proof("GET", uri, access_token=token))])
    assert two.status_code == 401 and two.json()["error"] == "invalid_dpop_proof"
