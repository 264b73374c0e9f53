"""The HTTP endpoints against a real authority on SQLite and PostgreSQL, through a real
HTTP client (httpx): JWKS, RFC 8414 metadata, introspection, revocation and health, each
compared with what the gRPC port answers for the same token."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from authority.api.server import create_server
from authority.store.store import subject_lock_id
from authority.tokens import AccessClaims
from tests.conftest import Running, StartServer
from tests.support.calls import new_subject, reason, sign_in, validate
from tests.support.bound import bound_sign_in
from tests.support.proxy import TcpProxy

FORM = "application/x-www-form-urlencoded"
WITHIN = 12.0  # seconds a health change may take to show


@pytest.fixture
async def running(start_server: StartServer) -> Running:
    return await start_server(http_listen="127.0.0.1:0")


@pytest.fixture
async def http(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=running.http_url, timeout=15) as client:
        yield client


async def introspect(http: httpx.AsyncClient, token: str, **fields: str) -> dict[str, Any]:
    answer = await http.post("/introspect", data={"token": token, **fields})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body: dict[str, Any] = answer.json()
    return body


def mint(running: Running, **changes: Any) -> str:
    """A token signed with the authority's key, for a session that was never signed in."""
    now = int(time.time())
    claims = {
        "subject": new_subject(), "device_id": "laptop", "session_id": secrets.token_urlsafe(16),
        "token_id": secrets.token_urlsafe(16), "issuer": "token-authority", "audience": "token-authority",
        "issued_at": now, "expires_at": now + 600, "extra": {}, **changes,
    }
    return running.server.authority.codec.sign(AccessClaims(**claims))


async def test_jwks_is_public_the_signing_keys_and_cached_for_half_the_publish_ahead(
    running: Running, http: httpx.AsyncClient
) -> None:
    answer = await http.get("/.well-known/jwks.json")

    assert answer.status_code == 200
    assert answer.headers["server"] == "token-authority"  # no library or version announced
    assert answer.headers["content-type"].startswith("application/jwk-set+json")
    assert answer.headers["cache-control"] == "public, max-age=30"  # key_publish_ahead 60 s
    keys = await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())
    assert answer.text == keys.jwks_json
    again = await http.get("/.well-known/jwks.json", headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


async def test_a_new_key_changes_the_jwks_and_its_etag(running: Running, http: httpx.AsyncClient) -> None:
    before = await http.get("/.well-known/jwks.json")
    await running.server.authority.rotate_key(publish_ahead=60)

    after = await http.get("/.well-known/jwks.json", headers={"If-None-Match": before.headers["etag"]})

    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert len(after.json()["keys"]) == len(before.json()["keys"]) + 1


async def test_an_active_token_introspects_with_the_claims_validate_token_gives(
    running: Running, http: httpx.AsyncClient
) -> None:
    issued = await sign_in(running.stub, new_subject(), "laptop")

    body = await introspect(http, issued.access_token)

    claims = (await validate(running.stub, issued.access_token)).claims
    assert body == {
        "active": True, "sub": claims.subject, "exp": claims.expires_at.seconds, "iat": claims.issued_at.seconds,
        "jti": claims.token_id, "aud": claims.audience, "iss": claims.issuer, "sid": claims.session_id,
        "device_id": claims.device_id, "token_type": "Bearer",
    }


async def test_a_bound_token_introspects_with_its_key_and_the_dpop_token_type_without_a_proof(
    running: Running, http: httpx.AsyncClient
) -> None:
    # RFC 9449 §6.2: the resource server checks the proof it received against cnf.jkt.
    key, issued = await bound_sign_in(running.stub, subject := new_subject(), "laptop")

    body = await introspect(http, issued.access_token)

    assert body["active"] is True and body["sub"] == subject
    assert body["token_type"] == "DPoP"
    assert body["cnf"] == {"jkt": key.thumbprint}
    # Everything else is checked as for any token: another audience, or a signed-out
    # session, is inactive.
    assert await introspect(http, issued.access_token, audience="billing") == {"active": False}
    await running.stub.RevokeToken(pb.RevokeTokenRequest(token=issued.access_token))
    assert await introspect(http, issued.access_token) == {"active": False}


async def test_requests_are_counted_by_route_and_status_and_introspections_as_validations(
    running: Running, http: httpx.AsyncClient
) -> None:
    issued = await sign_in(running.stub, new_subject(), "laptop")
    registry = running.server.metrics.registry

    def count(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    before = count("authority_validations_total", outcome="valid")
    await introspect(http, issued.access_token)
    await introspect(http, "not-a-token")
    await http.get(f"/no/such/{issued.access_token}")

    assert count("authority_rpcs_total", method="POST /introspect", code="200") == 2
    assert count("authority_rpcs_total", method="GET (unknown path)", code="404") == 1
    assert count("authority_validations_total", outcome="valid") == before + 1
    assert count("authority_validations_total", outcome="malformed") == 1


async def test_every_token_validate_token_refuses_introspects_as_inactive_and_nothing_more(
    running: Running, http: httpx.AsyncClient
) -> None:
    issued = await sign_in(running.stub, new_subject(), "laptop")
    head, payload, signature = issued.access_token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refused = {
        "MALFORMED": "not-a-token",
        "BAD_SIGNATURE": f"{head}.{payload}.{flipped}",
        "EXPIRED": mint(running, issued_at=int(time.time()) - 900, expires_at=int(time.time()) - 300),
        "WRONG_ISSUER": mint(running, issuer="someone-else"),
    }
    for expected, token in refused.items():
        assert await reason(running.stub, token) == expected
        assert await introspect(http, token) == {"active": False}, expected
    # The audience is asked as ValidateToken asks it: the default one unless named.
    assert await reason(running.stub, issued.access_token, "billing") == "WRONG_AUDIENCE"
    assert await introspect(http, issued.access_token, audience="billing") == {"active": False}
    assert (await introspect(http, issued.access_token, audience="token-authority"))["active"] is True


async def test_revoke_then_introspect_is_inactive_and_validate_token_agrees(
    running: Running, http: httpx.AsyncClient
) -> None:
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    assert (await introspect(http, laptop.access_token))["active"] is True

    answer = await http.post("/revoke", data={"token": laptop.access_token, "token_type_hint": "access_token"})

    assert answer.status_code == 200 and answer.content == b""
    assert await introspect(http, laptop.access_token) == {"active": False}
    assert await reason(running.stub, laptop.access_token) == "REVOKED"
    listed = await running.stub.ListSessions(pb.ListSessionsRequest(subject=subject))
    assert list(listed.sessions) == []


async def test_a_second_device_signing_in_makes_the_first_inactive(running: Running, http: httpx.AsyncClient) -> None:
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    phone = await sign_in(running.stub, subject, "phone")

    assert await introspect(http, laptop.access_token) == {"active": False}
    assert (await introspect(http, phone.access_token))["device_id"] == "phone"


async def test_revoking_a_token_this_authority_did_not_issue_answers_200_and_changes_nothing(
    running: Running, http: httpx.AsyncClient
) -> None:
    subject = new_subject()
    laptop = await sign_in(running.stub, subject, "laptop")
    head, payload, _ = laptop.access_token.split(".")

    for token in ("not-a-token", f"{head}.{payload}.AAAA", "a" * 9000):
        answer = await http.post("/revoke", data={"token": token})
        assert answer.status_code == 200, (token[:20], answer.text)

    assert await reason(running.stub, laptop.access_token) == "VALID"


async def test_a_refresh_token_revokes_its_session(running: Running, http: httpx.AsyncClient) -> None:
    laptop = await sign_in(running.stub, new_subject(), "laptop")
    unknown = "A" * len(laptop.refresh_token)

    assert (await http.post("/revoke", data={"token": unknown, "token_type_hint": "refresh_token"})).status_code == 200
    assert await reason(running.stub, laptop.access_token) == "VALID"

    answer = await http.post("/revoke", data={"token": laptop.refresh_token, "token_type_hint": "refresh_token"})

    assert answer.status_code == 200
    assert laptop.refresh_token not in answer.text
    assert await reason(running.stub, laptop.access_token) == "REVOKED"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await running.stub.RefreshToken(pb.RefreshTokenRequest(refresh_token=laptop.refresh_token))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_metadata_is_404_for_a_non_https_issuer_and_says_why_once_at_start(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="authority.http"):
        running = await start_server(http_listen="127.0.0.1:0")
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        answer = await http.get("/.well-known/oauth-authorization-server")
        await http.get("/.well-known/oauth-authorization-server")

    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    why = [r.getMessage() for r in caplog.records if "oauth-authorization-server" in r.getMessage()
           and r.name.startswith("authority.http.")]
    assert len(why) == 1 and "not an https URL" in why[0], why


async def test_metadata_names_the_endpoints_under_the_public_url(start_server: StartServer) -> None:
    running = await start_server(
        http_listen="127.0.0.1:0", issuer="https://auth.example.test", public_url="https://edge.example.test/auth/"
    )
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        answer = await http.get("/.well-known/oauth-authorization-server")

    assert answer.status_code == 200
    assert answer.json() == {
        "issuer": "https://auth.example.test",
        "jwks_uri": "https://edge.example.test/auth/.well-known/jwks.json",
        "introspection_endpoint": "https://edge.example.test/auth/introspect",
        "revocation_endpoint": "https://edge.example.test/auth/revoke",
        "grant_types_supported": [],
        "response_types_supported": [],
    }


async def test_an_issuer_with_a_path_has_its_metadata_where_rfc_8414_looks(start_server: StartServer) -> None:
    running = await start_server(http_listen="127.0.0.1:0", issuer="https://auth.example.test/tenant-a")
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        answer = await http.get("/.well-known/oauth-authorization-server/tenant-a")

    assert answer.status_code == 200
    assert answer.json()["issuer"] == "https://auth.example.test/tenant-a"
    assert answer.json()["jwks_uri"] == "https://auth.example.test/tenant-a/.well-known/jwks.json"


async def test_healthz_is_serving_while_grpc_health_is(running: Running, http: httpx.AsyncClient) -> None:
    answer = await http.get("/healthz")
    health = await health_pb2_grpc.HealthStub(running.channel).Check(health_pb2.HealthCheckRequest())

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert (answer.status_code, answer.json()) == (200, {"status": "SERVING"})


async def _until(check: Callable[[], Awaitable[bool]], within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("store", ["postgres"])
async def test_with_the_store_gone_healthz_follows_grpc_health_and_a_stale_view_answers_503(
    start_server: StartServer, postgres_url: str
) -> None:
    url = make_url(postgres_url)
    proxy = await TcpProxy.start(url.host or "127.0.0.1", url.port or 5432)
    try:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        running = await start_server(
            database_url=proxied, http_listen="127.0.0.1:0", max_staleness=1.0, revocation_poll_interval=0.2
        )
        health = health_pb2_grpc.HealthStub(running.channel)
        issued = await sign_in(running.stub, new_subject(), "laptop")
        async with httpx.AsyncClient(base_url=running.http_url, timeout=15) as http:

            async def grpc_serving() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

            async def http_serving() -> bool:
                return (await http.get("/healthz")).status_code == 200

            proxy.cut()
            await _until(lambda: _negated(grpc_serving))
            down = await http.get("/healthz")
            assert (down.status_code, down.json()) == (503, {"status": "NOT_SERVING"})
            await _until(lambda: _stale(http, issued.access_token))
            stale = await http.post("/introspect", data={"token": issued.access_token})
            assert stale.json()["error"] == "temporarily_unavailable" and stale.headers["retry-after"] == "1"

            proxy.resume()
            await _until(grpc_serving)
            await _until(http_serving)
            assert (await introspect(http, issued.access_token))["active"] is True
    finally:
        await proxy.close()


async def _negated(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()


async def _stale(http: httpx.AsyncClient, token: str) -> bool:
    return (await http.post("/introspect", data={"token": token})).status_code == 503



@pytest.mark.parametrize("store", ["postgres"])
async def test_a_stop_lets_a_revocation_in_flight_commit_and_answer(settings: Any) -> None:
    server = await create_server(dataclasses.replace(settings, http_listen="127.0.0.1:0"))
    stopped = False
    admin = await asyncpg.connect(settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            subject = new_subject()
            issued = await sign_in(authority_pb2_grpc.TokenAuthorityStub(channel), subject, "laptop")
        port = server.http.port  # type: ignore[union-attr]
        # Holding the subject's lock keeps the revocation waiting inside its transaction
        # (for less than the store's 5 s lock_timeout).
        holding = admin.transaction()
        await holding.start()
        await admin.execute("SELECT pg_advisory_xact_lock($1)", subject_lock_id(subject))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
            revoking = asyncio.create_task(http.post("/revoke", data={"token": issued.access_token}))
            await _until(lambda: _waiting_for_a_lock(admin), within=4)

            stopping = asyncio.create_task(server.stop())
            await _until(lambda: _refused(port), within=4)
            await holding.commit()
            answer = await asyncio.wait_for(revoking, 15)
        await asyncio.wait_for(stopping, 30)
        stopped = True
        revoked_at = await admin.fetchval("SELECT revoked_at FROM sessions WHERE session_id = $1", issued.session_id)
    finally:
        await admin.close()
        if not stopped:
            await server.stop(None)

    assert answer.status_code == 200
    assert revoked_at is not None


async def _waiting_for_a_lock(admin: Any) -> bool:
    return bool(await admin.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))


async def _refused(port: int) -> bool:
    """Whether the port no longer takes connections."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False
