"""Device-bound tokens behind the HTTP middlewares: a Starlette app under uvicorn (ASGI) and a
Flask app under werkzeug (WSGI), in remote and local mode, against a real authority.
``Authorization: DPoP <token>`` with one ``DPoP`` header; htm is the request's method and
htu its URL; refusals carry the RFC 9449 challenges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client
from authority_client.http.bearer import DPOP_ALGS
from authority_client.reasons import reason_text
from authority_client.verify import InvalidReason
from conftest import validation_settings
from dpop_cases import BAD_CASES, Case, Device
from test_http_middleware import AUDIENCE, FLAVOURS, MAX_STALENESS, MODES, WebApp, authority

from authority.testing import InProcessAuthority

__all__ = ["authority"]  # the fixture, shared with the middleware tests

EXTERNAL_ORIGIN = "https://orders.example.com"


def _served(flavour: str, mode: str, authority: InProcessAuthority, **options: Any) -> Iterator[WebApp]:
    web = WebApp(flavour, authority.target, validation_settings(mode, max_staleness=MAX_STALENESS), **options)
    web.wait_until_fresh()
    yield web
    web.close()


@pytest.fixture(params=[(f, m) for f in FLAVOURS for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}")
def app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    yield from _served(*request.param, authority)


@pytest.fixture(params=FLAVOURS)
def proxied_app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    """An app configured for the origin its clients address through a proxy."""
    yield from _served(request.param, "remote", authority, external_origin=EXTERNAL_ORIGIN)


def bound_sign_in(authority: InProcessAuthority, subject: str = "alice") -> tuple[Device, str]:
    device = Device.generate()
    issued = authority.sign_in(subject, "laptop", audience=AUDIENCE, proof=device.sign_in_proof())
    assert issued.token_type == "DPoP"
    return device, issued.access_token


def url(app: WebApp, path: str = "/orders") -> str:
    return f"http://127.0.0.1:{app.port}{path}"


def send(app: WebApp, token: str, *proofs: str, method: str = "GET", scheme: str = "DPoP",
         path: str = "/orders") -> httpx.Response:
    headers = [("authorization", f"{scheme} {token}"), *(("dpop", proof) for proof in proofs)]
    return app.http.request(method, path, headers=headers)


def challenge(error: str, reason: InvalidReason) -> str:
    return f'DPoP algs="{DPOP_ALGS}", error="{error}", error_description="{reason_text(reason)}"'


def test_a_bound_token_with_a_fresh_proof_per_request_is_admitted(app: WebApp, authority: InProcessAuthority) -> None:
    device, token = bound_sign_in(authority)

    for method in ("GET", "POST", "GET"):
        response = send(app, token, device.proof(method, url(app), token), method=method)
        assert response.status_code == 200, response.text
        assert response.json()["subject"] == "alice"
    # The query is not part of htu (RFC 9449 §4.3).
    with_query = app.http.get("/orders?page=2", headers=[("authorization", f"DPoP {token}"),
                                                         ("dpop", device.proof("GET", url(app), token))])
    assert with_query.status_code == 200


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda case: case.name)
def test_each_bad_way_of_presenting_a_bound_token_gets_401_and_the_dpop_challenge(
    app: WebApp, authority: InProcessAuthority, case: Case
) -> None:
    device, token = bound_sign_in(authority)
    proofs = case.proofs(device, Device.generate(), "GET", url(app), token)

    response = send(app, token, *proofs, scheme=case.scheme)

    reason = InvalidReason[case.reason]
    error = "invalid_dpop_proof" if reason is InvalidReason.BAD_PROOF else "invalid_token"
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(error, reason)
    assert response.json() == {"error": error, "error_description": reason_text(reason)}
    assert token not in response.text
    # The device goes on working.
    assert send(app, token, device.proof("GET", url(app), token)).status_code == 200


def test_a_replayed_proof_is_refused_and_a_copied_token_is_useless_with_another_key(
    app: WebApp, authority: InProcessAuthority
) -> None:
    device, token = bound_sign_in(authority)
    proof = device.proof("GET", url(app), token)
    attacker = Device.generate()

    assert send(app, token, proof).status_code == 200
    replayed = send(app, token, proof)
    stolen = [send(app, token, attacker.proof("GET", url(app), token)) for _ in range(2)]

    assert replayed.status_code == 401
    assert replayed.headers["www-authenticate"] == challenge("invalid_dpop_proof", InvalidReason.BAD_PROOF)
    assert [response.status_code for response in stolen] == [401, 401]
    assert send(app, token, device.proof("GET", url(app), token)).status_code == 200


def test_a_bearer_token_keeps_its_bearer_challenge(app: WebApp, authority: InProcessAuthority) -> None:
    elsewhere = authority.sign_in("bob", "laptop")  # another audience's

    response = send(app, elsewhere.access_token, scheme="Bearer")

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="token-authority", error="invalid_token"')


def test_behind_a_proxy_the_proof_names_the_external_origin(proxied_app: WebApp, authority: InProcessAuthority) -> None:
    device, token = bound_sign_in(authority)

    outside = send(proxied_app, token, device.proof("GET", f"{EXTERNAL_ORIGIN}/orders", token))
    # The address the app listens on, named by the Host header, is not what clients use.
    inside = send(proxied_app, token, device.proof("GET", url(proxied_app), token))

    assert outside.status_code == 200, outside.text
    assert inside.status_code == 401
    assert inside.json()["error"] == "invalid_dpop_proof"


@pytest.fixture(params=FLAVOURS)
def prefixed_app(request: pytest.FixtureRequest, authority: InProcessAuthority) -> Iterator[WebApp]:
    """An app behind a proxy that strips the path prefix /shop its clients address."""
    yield from _served(request.param, "remote", authority, external_origin="https://example.com/shop/")


def test_behind_a_prefix_stripping_proxy_the_proof_names_the_prefix(
    prefixed_app: WebApp, authority: InProcessAuthority
) -> None:
    device, token = bound_sign_in(authority)

    outside = send(prefixed_app, token, device.proof("GET", "https://example.com/shop/orders", token))
    unprefixed = send(prefixed_app, token, device.proof("GET", "https://example.com/orders", token))

    assert outside.status_code == 200, outside.text
    assert unprefixed.status_code == 401
    assert unprefixed.json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize("raw_uri", [None, "/orders"], ids=["no-raw-uri", "raw-uri"])
def test_under_proxy_fix_the_prefix_is_named_once(raw_uri: str | None) -> None:
    # ProxyFix(x_prefix=1) puts X-Forwarded-Prefix in SCRIPT_NAME; RAW_URI, where the server
    # gives one, is the request line the proxy sent. Either way the path is as received.
    from authority_client.http.gate import HttpRules
    from authority_client.http.wsgi import _address
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.test import EnvironBuilder

    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        return []

    environ = EnvironBuilder(path="/orders", headers={"X-Forwarded-Prefix": "/shop"}).get_environ()
    environ.pop("REQUEST_URI", None)
    environ.pop("RAW_URI", None)
    if raw_uri is not None:
        environ["RAW_URI"] = raw_uri
    ProxyFix(app, x_prefix=1)(environ, lambda *args: None)
    assert seen[0]["SCRIPT_NAME"] == "/shop"  # what ProxyFix did

    _, _, path = _address(seen[0])

    assert HttpRules.of(external_origin="https://example.com/shop").request_uri("http", "x", path) == (
        "https://example.com/shop/orders")


def test_the_external_origin_is_an_origin_with_an_optional_path_prefix() -> None:
    from authority_client.http.gate import HttpRules

    bad = ("orders.example.com", "ftp://orders.example.com", "https://", "https://orders.example.com/api?x=1",
           "https://orders.example.com/#top", "https://user@orders.example.com", "https://orders.example.com:99999",
           "https://orders.example.com:http", "https://[::1/api")
    for origin in bad:
        with pytest.raises(ValueError, match="external_origin") as refused:
            HttpRules.of(external_origin=origin)
        assert origin not in str(refused.value)
    with pytest.raises(ValueError, match="external_origin"):
        HttpRules.of(external_origin=42)  # type: ignore[arg-type]
    assert HttpRules.of(external_origin="https://orders.example.com/").request_uri("http", "x", "/a") == (
        "https://orders.example.com/a")
    assert HttpRules.of(external_origin="https://example.com/orders/").request_uri("http", "x", "/a") == (
        "https://example.com/orders/a")


@pytest.mark.parametrize("mode", MODES)
def test_a_websocket_handshake_with_a_bound_token_needs_its_proof(mode: str, authority: InProcessAuthority) -> None:
    for web in _served("asgi", mode, authority):
        device, token = bound_sign_in(authority, "dave")
        ws_url = f"ws://127.0.0.1:{web.port}/live"
        # The handshake is a GET to the same origin over http.
        proof = device.proof("GET", url(web, "/live"), token)
        with websockets.sync.client.connect(
            ws_url, additional_headers={"authorization": f"DPoP {token}", "dpop": proof}, open_timeout=10
        ) as websocket:
            assert websocket.recv(timeout=10) == "dave"
        with pytest.raises(websockets.exceptions.InvalidStatus) as replayed:
            websockets.sync.client.connect(
                ws_url, additional_headers={"authorization": f"DPoP {token}", "dpop": proof}, open_timeout=10
            )
        assert replayed.value.response.status_code == 401


@pytest.mark.parametrize("ending", ["?", "#"])
def test_a_host_header_cannot_point_a_proof_at_another_path(app: WebApp, authority: InProcessAuthority,
                                                           ending: str) -> None:
    # "Host: 127.0.0.1:port/other?" would make the request's URL /other's, /orders its query.
    device, token = bound_sign_in(authority)
    proof = device.proof("GET", url(app, "/other"), token)
    headers = {"host": f"127.0.0.1:{app.port}/other{ending}", "authorization": f"DPoP {token}", "dpop": proof}

    response = app.http.get("/orders", headers=headers)

    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_dpop_proof"


@pytest.mark.parametrize("host", ["bad host", "a@b", "[::1", "", "a/b?", "a#b"])
def test_a_request_url_no_proof_can_name_is_bad_proof_not_an_error(host: str) -> None:
    from authority_client.http.bearer import Denial, Presented
    from authority_client.http.gate import HttpGate, HttpRules

    denial = HttpGate(HttpRules()).proof(Presented("DPoP", "t.t.t", "p.p.p"), "GET", "http", host, "/orders")

    assert isinstance(denial, Denial)
    assert (denial.status, denial.reason, denial.error) == (401, "BAD_PROOF", "invalid_dpop_proof")
