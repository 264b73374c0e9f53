"""Envoy external authorization (envoy.service.auth.v3.Authorization/Check) on the gRPC
port, called as Envoy calls it: the same verdicts as ValidateToken, as HTTP answers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from sqlalchemy.engine import make_url

from authority import credentials
from authority.credentials import Role
from authority_client.reasons import MISSING_TEXT, RequestProblem, problem_text, reason_text, refusal_text
from authority_client.verify import InvalidReason, RevocationCause
from tests.conftest import Running, StartServer
from tests.test_metrics import scrape, value
from tests.support.calls import new_subject, reason, rpc_error, sign_in
from tests.support.checks import check_request
from tests.support.proxy import TcpProxy

IDENTITY = ("x-authority-subject", "x-authority-session-id", "x-authority-device-id", "x-authority-token-id")


def headers_of(options: list[object]) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}  # type: ignore[attr-defined]


async def check(running: Running, request: ext.CheckRequest, metadata: tuple[tuple[str, str], ...] = ()) -> ext.CheckResponse:
    stub = external_auth_pb2_grpc.AuthorizationStub(running.channel)
    return await stub.Check(request, metadata=metadata, timeout=10)  # type: ignore[no-any-return]


def denial_of(response: ext.CheckResponse) -> tuple[int, str | None, dict[str, str]]:
    """(HTTP status, WWW-Authenticate, JSON body) of a denied check."""
    assert response.status.code != code_pb2.OK
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    headers = headers_of(list(denied.headers))
    assert headers["content-type"] == "application/json"
    return denied.status.code, headers.get("www-authenticate"), json.loads(denied.body)


async def test_a_valid_token_is_allowed_with_the_identity_for_the_upstream(authority: Running) -> None:
    issued = await sign_in(authority.stub, subject := new_subject(), "laptop")

    response = await check(authority, check_request(f"Bearer {issued.access_token}", extra=(("x-authority-subject", "root"),)))

    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    added = headers_of(list(ok.headers))
    assert added["x-authority-subject"] == subject
    assert added["x-authority-session-id"] == issued.session_id
    assert added["x-authority-device-id"] == "laptop"
    assert added["x-authority-token-id"]
    # Ours replace every copy the client sent; none is in headers_to_remove, which Envoy
    # applies after these and would take ours away (tests/test_envoy.py sees it through Envoy).
    assert all(option.append_action == option.OVERWRITE_IF_EXISTS_OR_ADD for option in ok.headers)
    assert list(ok.headers_to_remove) == []


async def test_no_token_gets_401_with_the_bare_challenge(authority: Running) -> None:
    status, challenge, body = denial_of(await check(authority, check_request()))
    assert (status, challenge) == (401, 'Bearer realm="token-authority"')
    assert body == {"error": "unauthorized", "error_description": MISSING_TEXT}


async def test_a_signed_out_device_gets_401_with_the_revoked_text_and_its_cause(authority: Running) -> None:
    subject = new_subject()
    first = await sign_in(authority.stub, subject, "laptop")
    await sign_in(authority.stub, subject, "phone")

    status, challenge, body = denial_of(await check(authority, check_request(f"Bearer {first.access_token}")))

    text = refusal_text(InvalidReason.REVOKED, RevocationCause.REPLACED_BY_SIGN_IN)
    assert text == "revoked: signed in on another device"
    assert status == 401
    assert challenge == f'Bearer realm="token-authority", error="invalid_token", error_description="{text}"'
    assert body == {"error": "invalid_token", "error_description": text}
    # The same verdict as ValidateToken.
    assert await reason(authority.stub, first.access_token) == "REVOKED"


async def test_a_replaced_device_is_told_the_name_of_the_device_that_signed_in(authority: Running) -> None:
    subject = new_subject()
    first = await sign_in(authority.stub, subject, "laptop")
    await sign_in(authority.stub, subject, "phone", device_name="Pixel 8")

    status, challenge, body = denial_of(await check(authority, check_request(f"Bearer {first.access_token}")))

    assert status == 401
    assert challenge == (
        'Bearer realm="token-authority", error="invalid_token", error_description="revoked: signed in on Pixel 8"'
    )
    assert body == {"error": "invalid_token", "error_description": "revoked: signed in on Pixel 8"}


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        ("token", RevocationCause.LOGGED_OUT),
        ("session_id", RevocationCause.SESSION_REVOKED),
        ("subject", RevocationCause.SIGNED_OUT_EVERYWHERE),
        ("other_sessions", RevocationCause.OTHER_DEVICES_SIGNED_OUT),
    ],
)
async def test_each_way_of_signing_out_is_described_by_its_cause(
    start_server: StartServer, target: str, cause: RevocationCause
) -> None:
    authority = await start_server(max_sessions_per_subject=2)
    subject = new_subject()
    laptop = await sign_in(authority.stub, subject, "laptop")
    requests = {
        "token": pb.RevokeTokenRequest(token=laptop.access_token),
        "session_id": pb.RevokeTokenRequest(session_id=laptop.session_id),
        "subject": pb.RevokeTokenRequest(subject=subject),
    }
    if target == "other_sessions":
        # Another device of the subject signs the laptop out.
        phone = await sign_in(authority.stub, subject, "phone")
        requests[target] = pb.RevokeTokenRequest(other_sessions=pb.SessionRef(session_id=phone.session_id))
    await authority.stub.RevokeToken(requests[target])

    _, challenge, body = denial_of(await check(authority, check_request(f"Bearer {laptop.access_token}")))

    assert body["error_description"] == refusal_text(InvalidReason.REVOKED, cause)
    assert body["error_description"].startswith("revoked: ") and body["error_description"] != "revoked: "
    assert challenge is not None and body["error_description"] in challenge


async def test_a_token_this_authority_did_not_sign_is_refused(
    start_server: StartServer, authority: Running, tmp_path: Path
) -> None:
    other = await start_server(database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")  # its own key
    foreign = await sign_in(other.stub, new_subject(), "laptop")

    status, _, body = denial_of(await check(authority, check_request(f"Bearer {foreign.access_token}")))

    assert status == 401
    assert body["error_description"] in {reason_text(InvalidReason.UNKNOWN_KEY), reason_text(InvalidReason.BAD_SIGNATURE)}


async def test_the_audience_comes_from_the_route_context_extension(start_server: StartServer) -> None:
    running = await start_server(audiences=("token-authority", "orders"))
    for_orders = await sign_in(running.stub, new_subject(), "laptop", audience="orders")
    header = f"Bearer {for_orders.access_token}"

    on_orders = await check(running, check_request(header, audience="orders"))
    on_default = await check(running, check_request(header))
    on_billing = await check(running, check_request(header, audience="billing"))

    assert on_orders.status.code == code_pb2.OK
    wrong = reason_text(InvalidReason.WRONG_AUDIENCE)
    assert denial_of(on_default)[2]["error_description"] == wrong
    assert denial_of(on_billing)[2]["error_description"] == wrong


@pytest.mark.parametrize("raw", [True, False], ids=["raw-headers", "header-map"])
@pytest.mark.parametrize(
    ("authorization", "path", "problem"),
    [
        (("Bearer a.b.c", "Bearer a.b.c"), "/orders", RequestProblem.SEVERAL_HEADERS),
        (("Bearer",), "/orders", RequestProblem.EMPTY_TOKEN),
        (("Bearer " + "a" * 9000,), "/orders", RequestProblem.OVERSIZED),
        (("Bearer a b",), "/orders", RequestProblem.MALFORMED_HEADER),
        ((), "/orders?access_token=a.b.c", RequestProblem.TOKEN_IN_QUERY),
    ],
)
async def test_bad_headers_get_400_invalid_request(
    authority: Running, authorization: tuple[str, ...], path: str, problem: RequestProblem, raw: bool
) -> None:
    status, challenge, body = denial_of(await check(authority, check_request(*authorization, path=path, raw=raw)))
    assert status == 400
    assert challenge == (
        f'Bearer realm="token-authority", error="invalid_request", error_description="{problem_text(problem)}"'
    )
    assert body == {"error": "invalid_request", "error_description": problem_text(problem)}


@pytest.mark.parametrize("store", ["sqlite"])
async def test_checks_are_counted_and_timed_under_their_method_like_every_rpc(start_server: StartServer) -> None:
    running = await start_server(metrics_listen="127.0.0.1:0")
    issued = await sign_in(running.stub, new_subject(), "laptop")
    await check(running, check_request(f"Bearer {issued.access_token}"))
    await check(running, check_request("Bearer not.a.token"))

    samples = await scrape(running)

    method = "envoy.service.auth.v3.Authorization/Check"
    assert value(samples, "authority_rpcs_total", method=method, code="OK") == 2
    assert value(samples, "authority_rpc_duration_seconds_count", method=method) == 2
    assert value(samples, "authority_validations_total", outcome="valid") == 1
    assert value(samples, "authority_validations_total", outcome="malformed") == 1


@pytest.mark.parametrize("store", ["sqlite"])
async def test_an_undecodable_check_request_is_invalid_argument(authority: Running) -> None:
    call = authority.channel.unary_unary("/envoy.service.auth.v3.Authorization/Check")
    error = await rpc_error(call(b"\xff\xff\xff", timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("store", ["sqlite"])
async def test_check_needs_the_verifier_role_when_callers_authenticate(start_server: StartServer) -> None:
    keys = {name: credentials.new_api_key() for name in ("issuer", "verifier")}
    entries = (
        credentials.api_key_entry("login", frozenset({Role.ISSUER}), keys["issuer"]),
        credentials.api_key_entry("gateway", frozenset({Role.VERIFIER}), keys["verifier"]),
    )
    running = await start_server(api_keys=entries)
    request = check_request()

    anonymous = await rpc_error(check(running, request))
    issuer = await rpc_error(check(running, request, ((credentials.API_KEY_HEADER, keys["issuer"]),)))
    verifier = await check(running, request, ((credentials.API_KEY_HEADER, keys["verifier"]),))

    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    assert issuer.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "verifier" in (issuer.details() or "")
    assert denial_of(verifier)[0] == 401  # admitted: the missing bearer token is what is refused


# --- the staleness bound -------------------------------------------------------------


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    url = make_url(postgres_url)
    proxy = await TcpProxy.start(url.host or "127.0.0.1", url.port or 5432)
    yield proxy
    await proxy.close()


# A stale view comes from a store that cannot be reached: a cut network, which SQLite cannot have.
@pytest.mark.parametrize("store", ["postgres"])
async def test_a_stale_view_answers_unavailable_like_validate_token(
    start_server: StartServer, postgres_url: str, proxy: TcpProxy
) -> None:
    proxied = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    running = await start_server(database_url=proxied, max_staleness=1.0, revocation_poll_interval=0.2)
    issued = await sign_in(running.stub, new_subject(), "laptop")
    request = check_request(f"Bearer {issued.access_token}")
    assert (await check(running, request)).status.code == code_pb2.OK

    proxy.cut()
    deadline = time.monotonic() + 15
    while True:
        try:
            await check(running, request)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            break
        assert time.monotonic() < deadline, "Check kept allowing on a view older than max_staleness"
        await asyncio.sleep(0.05)
    validate_error = await rpc_error(running.stub.ValidateToken(pb.ValidateTokenRequest(token=issued.access_token)))
    assert validate_error.code() is grpc.StatusCode.UNAVAILABLE
