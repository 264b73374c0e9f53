"""Bad input on the HTTP port gets a clear 400 or 401 (an unknown path 404), as a JSON
error object, never a 500: no ERROR line and no traceback reaches the log, no token
reaches any line, and nothing changes in the store."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from authority_client.v1 import authority_pb2 as pb

from authority import credentials
from authority.credentials import Role
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject

VERIFIER_KEY = credentials.new_api_key()
ISSUER_KEY = credentials.new_api_key()
# For the gRPC calls that prepare and check each case.
ADMIN = ((credentials.API_KEY_HEADER, credentials.new_api_key()),)
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
async def running(start_server: StartServer) -> Running:
    """Callers authenticate, so that the Authorization header is read on every call."""
    entries = (credentials.api_key_entry("billing", {Role.VERIFIER}, VERIFIER_KEY),
               credentials.api_key_entry("login", {Role.ISSUER}, ISSUER_KEY),
               credentials.api_key_entry("admin", {Role.ISSUER, Role.VERIFIER}, ADMIN[0][1]))
    return await start_server(http_listen="127.0.0.1:0", api_keys=entries)


@pytest.fixture
async def http(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.http_url, timeout=15) as client:
        yield client


async def sign_in(running: Running) -> pb.IssueTokenResponse:
    request = pb.IssueTokenRequest(subject=new_subject(), device_id="laptop")
    return await running.stub.IssueToken(request, metadata=ADMIN)


async def valid(running: Running, token: str) -> bool:
    answer = await running.stub.ValidateToken(pb.ValidateTokenRequest(token=token), metadata=ADMIN)
    return bool(answer.valid)


def _assert_quiet(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    loud = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, loud
    assert "Traceback" not in caplog.text
    # The server's lines only: the test's own HTTP client logs the URLs it was told to send.
    server_lines = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    leaked = [secret[:12] for secret in secrets if secret in server_lines]
    assert not leaked, leaked


def _error(answer: httpx.Response, status: int, error: str = "invalid_request", names: str = "") -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == error, body
    assert names in body["error_description"], body


async def _bad_authorization(http: httpx.AsyncClient, token: str) -> dict[str, httpx.Response]:
    form = {"token": token}
    headers: dict[str, Any] = {
        "oversized": {"Authorization": "Bearer " + "a" * 2000},
        "another scheme": {"Authorization": f"Basic {VERIFIER_KEY}"},
        "two credentials": {"Authorization": f"Bearer {VERIFIER_KEY} {VERIFIER_KEY}"},
        "not token68": {"Authorization": b"Bearer \xff\xfe{}"},
        "Bearer alone": {"Authorization": "Bearer"},
        "bearer alone, lower case": {"Authorization": "bearer"},
        "Bearer and a comma": {"Authorization": "Bearer ,"},
    }
    answers = {name: await http.post("/introspect", data=form, headers=value) for name, value in headers.items()}
    answers["two headers"] = await http.post(
        "/introspect", data=form, headers=[("Authorization", f"Bearer {VERIFIER_KEY}")] * 2
    )
    return answers


async def test_a_malformed_authorization_header_is_400_naming_it(
    running: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await sign_in(running)
    with caplog.at_level(logging.DEBUG):
        answers = await _bad_authorization(http, issued.access_token)
        # Past aiohttp's own header limit (8190 bytes) its parser refuses the request.
        huge = await http.post("/introspect", data={"token": issued.access_token},
                               headers={"Authorization": "Bearer " + "a" * 20_000})

    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"] == "invalid_request", name
        assert answer.json()["error_description"].startswith("Authorization: "), name
    assert huge.status_code == 400
    _assert_quiet(caplog, issued.access_token, VERIFIER_KEY)


async def test_a_token_in_the_query_string_is_refused(
    running: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await sign_in(running)
    bearer = {"Authorization": f"Bearer {ISSUER_KEY}"}
    with caplog.at_level(logging.DEBUG):
        answers = [
            await http.post("/introspect", params={"token": issued.access_token},
                            headers={"Authorization": f"Bearer {VERIFIER_KEY}"}),
            await http.post("/revoke", params={"token": issued.access_token}, data={"token": "x"}, headers=bearer),
            await http.get("/.well-known/jwks.json", params={"access_token": issued.access_token}),
            await http.get("/healthz", params={"api_key": VERIFIER_KEY}),
            # Names are refused in any case: a server elsewhere may read them so.
            await http.get("/healthz", params={"Token": issued.access_token}),
            await http.get("/.well-known/jwks.json", params={"x": "1", "ACCESS_TOKEN": issued.access_token}),
        ]

    for answer in answers:
        _error(answer, 400, names="never in the URL")
    assert await valid(running, issued.access_token)
    _assert_quiet(caplog, issued.access_token, VERIFIER_KEY)


async def test_a_body_that_is_not_a_form_is_400(
    running: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await sign_in(running)
    headers = {"Authorization": f"Bearer {VERIFIER_KEY}"}
    bodies: dict[str, tuple[str | None, bytes]] = {
        "JSON": ("application/json", b'{"token": "%s"}' % issued.access_token.encode()),
        "text": ("text/plain", issued.access_token.encode()),
        "no type": (None, b"token=" + issued.access_token.encode()),
        "not ASCII": (FORM, b"token=\xff\xfe"),
        "not UTF-8": (FORM, b"token=%FF%FE"),
        "not pairs": (FORM, b"token&&=="),
        "too many fields": (FORM, b"&".join(b"f%d=1" % n for n in range(50))),
        # A % that begins no %XX escape: parse_qsl would keep it, and read another token.
        "a broken escape": (FORM, b"token=" + issued.access_token.encode() + b"%zz"),
        "a lone percent": (FORM, b"token=" + issued.access_token.encode() + b"%"),
    }
    with caplog.at_level(logging.DEBUG):
        answers = {}
        for name, (content_type, body) in bodies.items():
            sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
            answers[name] = await http.post("/introspect", content=body, headers=sent)
        twice = await http.post("/introspect", content=f"token={issued.access_token}&token=x", headers={
            **headers, "Content-Type": FORM})
        missing = await http.post("/introspect", data={"audience": "token-authority"}, headers=headers)
        empty = await http.post("/introspect", data={"token": ""}, headers=headers)
        huge = await http.post("/introspect", data={"token": "a" * 100_000}, headers=headers)
        # Any Content-Encoding: bytes it does not decode, a gzip stream cut short, one whole,
        # an unknown coding.
        form = f"token={issued.access_token}".encode()
        encoded = {"gzip": b"token=0123456789", "deflate": b"token=0123456789", "x-gzip": gzip.compress(form)[:-12],
                   "GZIP": gzip.compress(form), "x-unknown": form}
        undecodable = {encoding: await http.post("/introspect", content=body, headers={
            **headers, "Content-Type": FORM, "Content-Encoding": encoding}) for encoding, body in encoded.items()}
        field_twice = await http.post("/introspect", content=f"{issued.access_token}=&{issued.access_token}=",
                                      headers={**headers, "Content-Type": FORM})

    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"] == "invalid_request", name
    for name in ("a broken escape", "a lone percent"):
        _error(answers[name], 400, names="the body is not a well-formed form")
    _error(twice, 400, names="token: must be given once")
    _error(missing, 400, names="token: must not be empty")
    _error(empty, 400, names="token: must not be empty")
    assert huge.status_code == 413 and huge.json()["error"] == "invalid_request"
    for answer in undecodable.values():
        _error(answer, 415, names="the body must not be encoded (Content-Encoding)")
    # Only the fields the endpoint reads are named: any other name may be a token.
    _error(field_twice, 400, names="a form field must be given once")
    _assert_quiet(caplog, issued.access_token, VERIFIER_KEY)


async def test_bad_revocations_change_nothing(
    running: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await sign_in(running)
    with caplog.at_level(logging.DEBUG):
        answers = [
            await http.post("/revoke", data={"token": issued.access_token}),  # no credentials
            await http.post("/revoke", data={"token": issued.access_token},
                            headers={"Authorization": f"Bearer {VERIFIER_KEY}"}),  # the wrong role
            await http.post("/revoke", content=issued.access_token.encode(),
                            headers={"Authorization": f"Bearer {ISSUER_KEY}", "Content-Type": "text/plain"}),
            await http.post("/revoke", data={"token": issued.access_token},
                            headers=[("Authorization", f"Bearer {ISSUER_KEY}")] * 2),
            # A gzip stream cut short: read as what arrived, it would revoke nothing and answer 200.
            await http.post("/revoke", content=gzip.compress(f"token={issued.access_token}".encode())[:-12], headers={
                "Authorization": f"Bearer {ISSUER_KEY}", "Content-Type": FORM, "Content-Encoding": "gzip"}),
        ]

    assert [answer.status_code for answer in answers] == [401, 403, 400, 400, 415]
    assert await valid(running, issued.access_token)
    _assert_quiet(caplog, issued.access_token, ISSUER_KEY)


async def test_an_unknown_path_is_404_and_a_wrong_method_405(
    running: Running, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await sign_in(running)
    with caplog.at_level(logging.DEBUG):
        unknown = await http.get(f"/tokens/{issued.access_token}")
        wrong = await http.get("/introspect")
        invented = await http.request("PROPFIND", "/healthz")

    _error(unknown, 404, "not_found")
    _error(wrong, 405)
    assert wrong.headers["allow"] == "POST"
    _error(invented, 405)
    # A path of ours asked with another method is counted by its pattern, an invented
    # method as OTHER: a client cannot mint metric label values.
    registry = running.server.metrics.registry
    assert registry.get_sample_value("authority_rpcs_total", {"method": "GET /introspect", "code": "405"}) == 1
    assert registry.get_sample_value("authority_rpcs_total", {"method": "OTHER /healthz", "code": "405"}) == 1
    assert registry.get_sample_value("authority_rpcs_total", {"method": "GET (unknown path)", "code": "404"}) == 1
    _assert_quiet(caplog, issued.access_token)


async def _raw(running: Running, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.server.http.port)  # type: ignore[union-attr]
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()


async def test_a_request_that_does_not_parse_is_400_without_a_traceback_or_an_echo(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-" + credentials.new_api_key()  # where a token would be, in each part that fails
    with caplog.at_level(logging.DEBUG):
        answers = [
            await _raw(running, b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
            await _raw(running, b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
            await _raw(running, b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\x00b\r\n\r\n"),
            await _raw(running, f"GET /?token={secret} x HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
            await _raw(running, f"G\x01T /?token={secret} HTTP/1.1\r\n\r\n".encode()),
            await _raw(running, f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\x01\r\n\r\n".encode()),
            await _raw(running, f"GET / HTTP/1.1\r\nHost: x\r\nX-Long: {secret * 200}\r\n\r\n".encode()),
        ]

    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *headers = head.decode("latin-1").split("\r\n")
        assert status_line in ("HTTP/1.0 400 Bad Request", "HTTP/1.1 400 Bad Request"), answer[:80]
        assert "Server: token-authority" in headers, headers  # not aiohttp and its version
        assert json.loads(body) == {"error": "invalid_request", "error_description": (
            "the request is not well-formed HTTP/1.1 (a request line or header malformed or over its limit)")}
    _assert_quiet(caplog, secret)
