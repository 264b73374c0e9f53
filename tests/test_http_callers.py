"""The HTTP port follows the gRPC port's caller rules: TLS from the same files, API keys
(as ``Authorization: Bearer``) and client certificates identify callers through the same
registry, introspection needs the verifier role and revocation the issuer role, and
without caller authentication only loopback is served. A standard JWKS consumer (PyJWT's
``PyJWKClient``, finding ``jwks_uri`` in the metadata) agrees with ValidateToken."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc

from authority import credentials
from authority.config import Settings
from authority.credentials import Role
from authority.errors import ConfigError
from authority.tokens import AccessClaims
from tests.conftest import Running, StartServer
from tests.support.pki import CertificateAuthority, Issued

sqlite_only = pytest.mark.parametrize("store", ["sqlite"])


# On uvloop too, the loop `authority serve` runs on: a client certificate is read from the
# connection's TLS object, which uvloop implements itself (tests/conftest.py).
pytestmark = pytest.mark.both_loops


class Pki:
    """A CA, the server's certificate for 127.0.0.1, and client certificates, as files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = CertificateAuthority("http test CA")
        (directory / "ca.crt").write_bytes(self.ca.certificate_pem)
        self.server = self.ca.issue("authority", dns=("localhost",), ips=("127.0.0.1",))
        self.cert, self.key = self.server.write(directory, "server")

    def tls_settings(self) -> dict[str, Any]:
        return {"tls_cert_file": str(self.cert), "tls_key_file": str(self.key)}

    def client_context(self, client: Issued | None = None, stem: str = "client") -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.directory / "ca.crt"))
        if client is not None:
            cert, key = client.write(self.directory, stem)
            context.load_cert_chain(str(cert), str(key))
        return context

    def channel(self, port: int, client: Issued | None = None) -> grpc.aio.Channel:
        keys = (client.key_pem, client.certificate_pem) if client is not None else (None, None)
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(self.ca.certificate_pem, *keys))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def secure_stubs() -> AsyncIterator[list[grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()


def _stub(channels: list[grpc.aio.Channel], channel: grpc.aio.Channel) -> authority_pb2_grpc.TokenAuthorityStub:
    channels.append(channel)
    return authority_pb2_grpc.TokenAuthorityStub(channel)


@sqlite_only
async def test_api_keys_over_tls_decide_who_may_introspect_and_revoke(
    start_server: StartServer, pki: Pki, secure_stubs: list[grpc.aio.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    keys = {"verifier": credentials.new_api_key(), "issuer": credentials.new_api_key()}
    entries = (credentials.api_key_entry("billing", {Role.VERIFIER}, keys["verifier"]),
               credentials.api_key_entry("login", {Role.ISSUER}, keys["issuer"]))
    running = await start_server(http_listen="127.0.0.1:0", api_keys=entries, **pki.tls_settings())
    stub = _stub(secure_stubs, pki.channel(running.server.port))
    issuer_metadata = ((credentials.API_KEY_HEADER, keys["issuer"]),)
    issued = await stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="laptop"), metadata=issuer_metadata)
    assert running.http_url.startswith("https://")

    def bearer(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[name]}"}

    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(base_url=running.http_url, verify=pki.client_context(), timeout=15) as http:
            form = {"token": issued.access_token}
            nobody = await http.post("/introspect", data=form)
            wrong = await http.post("/introspect", data=form, headers={"Authorization": "Bearer tak_" + "x" * 43})
            issuer_introspects = await http.post("/introspect", data=form, headers=bearer("issuer"))
            verifier_revokes = await http.post("/revoke", data=form, headers=bearer("verifier"))
            verifier_introspects = await http.post("/introspect", data=form, headers=bearer("verifier"))
            public = [await http.get(path) for path in ("/.well-known/jwks.json", "/healthz")]
            issuer_revokes = await http.post("/revoke", data=form, headers=bearer("issuer"))
            after = await http.post("/introspect", data=form, headers=bearer("verifier"))

    assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer"
    assert nobody.json()["error"] == "invalid_client"
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert issuer_introspects.status_code == 403
    assert issuer_introspects.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert verifier_revokes.status_code == 403 and "issuer role" in verifier_revokes.json()["error_description"]
    assert verifier_introspects.status_code == 200 and verifier_introspects.json()["active"] is True
    assert [answer.status_code for answer in public] == [200, 200]
    assert issuer_revokes.status_code == 200
    assert after.json() == {"active": False}
    logged = caplog.text
    assert keys["verifier"] not in logged and keys["issuer"] not in logged and issued.access_token not in logged


@sqlite_only
async def test_client_certificates_identify_callers_on_the_http_port(
    start_server: StartServer, pki: Pki, secure_stubs: list[grpc.aio.Channel]
) -> None:
    billing = pki.ca.issue("billing", uris=("spiffe://example.test/billing",), client=True)
    login = pki.ca.issue("login.internal", client=True)
    foreign = CertificateAuthority("someone else's CA").issue("login.internal", client=True)
    running = await start_server(
        http_listen="127.0.0.1:0", tls_client_ca_file=str(pki.directory / "ca.crt"),
        client_roles=("spiffe://example.test/billing=verifier", "login.internal=issuer"), **pki.tls_settings(),
    )
    stub = _stub(secure_stubs, pki.channel(running.server.port, login))
    issued = await stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="laptop"))
    form = {"token": issued.access_token}

    async def call(path: str, client: Issued | None, stem: str) -> httpx.Response:
        context = pki.client_context(client, stem)
        async with httpx.AsyncClient(base_url=running.http_url, verify=context, timeout=15) as http:
            return await http.post(path, data=form)

    assert (await call("/introspect", billing, "billing")).json()["active"] is True
    assert (await call("/revoke", billing, "billing")).status_code == 403
    assert (await call("/introspect", login, "login")).status_code == 403
    for client, stem in ((None, "none"), (foreign, "foreign")):
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await call("/introspect", client, stem)
    assert (await call("/revoke", login, "login")).status_code == 200
    assert (await call("/introspect", billing, "billing")).json() == {"active": False}


def test_the_http_port_off_loopback_needs_caller_authentication(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", http_listen="0.0.0.0:8080")
    assert refused.value.option == "http_listen"
    Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", http_listen="0.0.0.0:8080",
             allow_unauthenticated_callers=True)


@pytest.mark.parametrize("bad", ["http://auth.example.test", "https://", "https://a.example.test/?x=1", "auth"])
def test_public_url_must_be_an_https_url(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", public_url=bad)
    assert refused.value.option == "public_url"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _start_on_a_known_port(start_server: StartServer, **settings: Any) -> tuple[Running, int]:
    """The metadata names the port in its URLs, so it must be known before the start: a
    free port is picked, and picked again should another process take it meanwhile."""
    for _ in range(5):
        port = _free_port()
        try:
            running = await start_server(http_listen=f"127.0.0.1:{port}", issuer=f"https://127.0.0.1:{port}",
                                         **settings)
        except ConfigError as error:
            if error.option != "http_listen":
                raise
            continue
        return running, port
    raise AssertionError("no free port for the HTTP listener")


async def test_a_standard_jwks_consumer_agrees_with_validate_token(
    start_server: StartServer, pki: Pki, secure_stubs: list[grpc.aio.Channel]
) -> None:
    running, port = await _start_on_a_known_port(start_server, **pki.tls_settings())
    issuer = f"https://127.0.0.1:{port}"
    stub = _stub(secure_stubs, pki.channel(running.server.port))
    issued = await stub.IssueToken(pb.IssueTokenRequest(subject="alice", device_id="laptop"))
    context = pki.client_context()
    async with httpx.AsyncClient(verify=context, timeout=15) as http:
        metadata = (await http.get(f"{issuer}/.well-known/oauth-authorization-server")).json()
    assert metadata["issuer"] == issuer and metadata["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    consumer = jwt.PyJWKClient(metadata["jwks_uri"], ssl_context=context, cache_jwk_set=False)

    def verify(token: str) -> dict[str, Any] | str:
        """What the consumer makes of a token: its claims, or the PyJWT error's name."""
        try:
            key = consumer.get_signing_key_from_jwt(token)
            return dict(jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="token-authority",
                                   issuer=issuer, leeway=0))
        except jwt.PyJWTError as error:
            return type(error).__name__

    head, payload, signature = issued.access_token.split(".")
    forged = f"{head}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    now = int(time.time())
    expired = running.server.authority.codec.sign(AccessClaims(
        subject="alice", device_id="laptop", session_id=secrets.token_urlsafe(16), token_id=secrets.token_urlsafe(16),
        issuer=issuer, audience="token-authority", issued_at=now - 900, expires_at=now - 300, extra={},
    ))
    # PyJWKClient is blocking and the authority runs in this event loop: off the loop.
    seen = {name: await asyncio.to_thread(verify, token)
            for name, token in (("valid", issued.access_token), ("forged", forged), ("expired", expired))}
    answers = {name: await stub.ValidateToken(pb.ValidateTokenRequest(token=token))
               for name, token in (("valid", issued.access_token), ("forged", forged), ("expired", expired))}

    claims = answers["valid"].claims
    valid = seen["valid"]
    assert isinstance(valid, dict) and answers["valid"].valid
    assert (valid["sub"], valid["sid"], valid["device_id"], valid["jti"], valid["iss"], valid["aud"]) == (
        claims.subject, claims.session_id, claims.device_id, claims.token_id, claims.issuer, claims.audience)
    assert (valid["exp"], valid["iat"]) == (claims.expires_at.seconds, claims.issued_at.seconds)
    assert seen["forged"] == "InvalidSignatureError" and answers["forged"].reason == pb.INVALID_REASON_BAD_SIGNATURE
    assert seen["expired"] == "ExpiredSignatureError" and answers["expired"].reason == pb.INVALID_REASON_EXPIRED
