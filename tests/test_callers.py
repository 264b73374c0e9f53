"""Caller authentication: API keys and mutual TLS, roles per RPC, and the loopback default.

Every RPC is called by a caller with no credentials, the issuer role, the verifier role
and both, once over API keys and once over client certificates, through a real server
with real certificates; the outcomes are compared with one table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from authority_client import AsyncAuthorityClient, AuthorityClient
from authority_client.errors import PermissionDenied, Unauthenticated, Unavailable
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authority import credentials
from authority.api.callers import Caller, CallerRegistry, prepare_transport
from authority.api.server import create_server
from authority.config import Settings, load_settings
from authority.credentials import Role
from authority.errors import ConfigError
from tests.conftest import StartServer
from tests.support.calls import Stub, new_subject, rpc_error
from tests.support.pki import CertificateAuthority, Issued

Metadata = tuple[tuple[str, str], ...]
ISSUER, VERIFIER, AUDITOR = frozenset({Role.ISSUER}), frozenset({Role.VERIFIER}), frozenset({Role.AUDITOR})
BOTH = ISSUER | VERIFIER
CALLERS: dict[str, frozenset[Role]] = {"issuer": ISSUER, "verifier": VERIFIER, "both": BOTH, "auditor": AUDITOR}

# Who may make each call; everyone else gets PERMISSION_DENIED, and a caller with no
# credentials UNAUTHENTICATED.
ALLOWED: dict[str, frozenset[Role]] = {
    "IssueToken": ISSUER,
    "PreviewSignIn": ISSUER,
    "RefreshToken": ISSUER,
    "ListSessions": ISSUER | AUDITOR,  # the auditor reads sessions and events, nothing else
    "WatchSessionEvents": AUDITOR,
    "RevokeToken(session_id)": ISSUER,
    "RevokeToken(subject)": ISSUER,
    "RevokeToken(other_sessions)": ISSUER,
    "RevokeToken(token)": BOTH,  # the verifier may log out the token it presents
    "ValidateToken": VERIFIER,
    "GetSigningKeys": VERIFIER,
    "WatchRevocations": VERIFIER,
}

# Keep the matrix to one store: who may call is decided before any store is touched.
sqlite_only = pytest.mark.parametrize("store", ["sqlite"])


def expected(roles: frozenset[Role] | None) -> dict[str, str]:
    """The outcome table for a caller with ``roles`` (None: no credentials)."""
    if roles is None:
        return {call: "UNAUTHENTICATED" for call in ALLOWED}
    return {call: "OK" if roles & allowed else "PERMISSION_DENIED" for call, allowed in ALLOWED.items()}


async def _outcome(call: Awaitable[Any]) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return "OK"


async def _watch(stub: Stub, metadata: Metadata) -> None:
    stream = stub.WatchRevocations(pb.WatchRevocationsRequest(after_sequence=0), metadata=metadata, timeout=10)
    try:
        await stream.read()
    finally:
        stream.cancel()


async def _watch_events(stub: Stub, metadata: Metadata) -> None:
    stream = stub.WatchSessionEvents(pb.WatchSessionEventsRequest(), metadata=metadata, timeout=10)
    try:
        await stream.read()
    finally:
        stream.cancel()


async def outcomes(stub: Stub, admin: Stub, metadata: Metadata = (), admin_metadata: Metadata = ()) -> dict[str, str]:
    """Makes every call as ``stub``'s caller; ``admin`` (both roles) prepares what each needs."""

    async def fresh() -> pb.IssueTokenResponse:
        request = pb.IssueTokenRequest(subject=new_subject(), device_id="laptop")
        return await admin.IssueToken(request, metadata=admin_metadata)

    # The watcher needs one revocation in the log to have something to read.
    first = await fresh()
    await admin.RevokeToken(pb.RevokeTokenRequest(session_id=first.session_id), metadata=admin_metadata)
    signed_in = await fresh()
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "IssueToken": lambda: stub.IssueToken(
            pb.IssueTokenRequest(subject=new_subject(), device_id="phone"), metadata=metadata
        ),
        "RefreshToken": lambda: stub.RefreshToken(
            pb.RefreshTokenRequest(refresh_token=signed_in.refresh_token), metadata=metadata
        ),
        "PreviewSignIn": lambda: stub.PreviewSignIn(
            pb.IssueTokenRequest(subject=new_subject(), device_id="phone"), metadata=metadata
        ),
        "ListSessions": lambda: stub.ListSessions(pb.ListSessionsRequest(subject="someone"), metadata=metadata),
        "WatchSessionEvents": lambda: _watch_events(stub, metadata),
        "RevokeToken(other_sessions)": lambda: stub.RevokeToken(
            pb.RevokeTokenRequest(other_sessions=pb.SessionRef(session_id="no-such-session")), metadata=metadata
        ),
        "RevokeToken(session_id)": lambda: stub.RevokeToken(
            pb.RevokeTokenRequest(session_id="no-such-session"), metadata=metadata
        ),
        "RevokeToken(subject)": lambda: stub.RevokeToken(pb.RevokeTokenRequest(subject="nobody"), metadata=metadata),
        "ValidateToken": lambda: stub.ValidateToken(
            pb.ValidateTokenRequest(token=signed_in.access_token), metadata=metadata
        ),
        "GetSigningKeys": lambda: stub.GetSigningKeys(pb.GetSigningKeysRequest(), metadata=metadata),
        "WatchRevocations": lambda: _watch(stub, metadata),
    }
    seen = {name: await _outcome(call()) for name, call in calls.items()}
    # Last: it ends the session the other calls used.
    token = (await fresh()).access_token
    seen["RevokeToken(token)"] = await _outcome(
        stub.RevokeToken(pb.RevokeTokenRequest(token=token), metadata=metadata)
    )
    return seen


@dataclasses.dataclass
class ApiKeys:
    """A key per role combination, and the settings entries that hold their hashes."""

    keys: dict[str, str]

    @property
    def entries(self) -> tuple[str, ...]:
        return tuple(credentials.api_key_entry(f"{name}-service", CALLERS[name], key) for name, key in self.keys.items())

    def metadata(self, name: str) -> Metadata:
        return ((credentials.API_KEY_HEADER, self.keys[name]),)


@pytest.fixture
def api_keys() -> ApiKeys:
    return ApiKeys({name: credentials.new_api_key() for name in CALLERS})


@dataclasses.dataclass
class Pki:
    """Files of a CA, the server's certificate and a client certificate per role."""

    directory: Path
    ca: CertificateAuthority
    server: Issued
    clients: dict[str, Issued]

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.crt")

    def server_settings(self) -> dict[str, Any]:
        cert, key = self.server.write(self.directory, "server")
        return {"tls_cert_file": str(cert), "tls_key_file": str(key)}

    def mtls_settings(self) -> dict[str, Any]:
        client_roles = tuple(
            f"{name}.internal={'+'.join(sorted(r.value for r in CALLERS[name]))}" for name in CALLERS
        )
        return {**self.server_settings(), "tls_client_ca_file": self.ca_file, "client_roles": client_roles}

    def credentials(self, client: Issued | None = None) -> grpc.ChannelCredentials:
        if client is None:
            return grpc.ssl_channel_credentials(self.ca.certificate_pem)
        return grpc.ssl_channel_credentials(self.ca.certificate_pem, client.key_pem, client.certificate_pem)


@pytest.fixture(scope="module")
def certificates() -> tuple[CertificateAuthority, Issued, dict[str, Issued], Issued, Issued]:
    """Made once: a CA, the server's certificate, role clients, an unknown client, a foreign client."""
    ca = CertificateAuthority("authority test CA")
    server = ca.issue("authority", dns=("localhost",), ips=("127.0.0.1",))
    # Identities by SAN for two roles and by subject CN for the third: both count.
    clients = {
        "issuer": ca.issue("login", dns=("issuer.internal",), client=True),
        "verifier": ca.issue("billing", uris=("spiffe://example.test/billing",), dns=("verifier.internal",),
                             client=True),
        "both": ca.issue("both.internal", client=True),
        "auditor": ca.issue("audit", dns=("auditor.internal",), client=True),
    }
    stranger = ca.issue("stranger.internal", client=True)
    foreign = CertificateAuthority("someone else's CA").issue("issuer.internal", client=True)
    return ca, server, clients, stranger, foreign


@pytest.fixture
def pki(certificates: tuple[CertificateAuthority, Issued, dict[str, Issued], Issued, Issued], tmp_path: Path) -> Pki:
    ca, server, clients, _, _ = certificates
    (tmp_path / "ca.crt").write_bytes(ca.certificate_pem)
    return Pki(tmp_path, ca, server, clients)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[str, grpc.ChannelCredentials | None], Stub]]:
    """Opens stubs on new channels, secure or not; closes them at the end."""
    opened: list[grpc.aio.Channel] = []

    def open_stub(target: str, credentials: grpc.ChannelCredentials | None) -> Stub:
        channel = (grpc.aio.insecure_channel(target) if credentials is None
                   else grpc.aio.secure_channel(target, credentials))
        opened.append(channel)
        return authority_pb2_grpc.TokenAuthorityStub(channel)

    yield open_stub
    for channel in opened:
        await channel.close()


# --- API keys ------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("caller", [None, *CALLERS])
async def test_api_key_roles_decide_every_rpc(start_server: StartServer, api_keys: ApiKeys, caller: str | None) -> None:
    running = await start_server(api_keys=api_keys.entries)
    metadata = api_keys.metadata(caller) if caller else ()

    seen = await outcomes(running.stub, running.stub, metadata, api_keys.metadata("both"))

    assert seen == expected(CALLERS[caller] if caller else None)


@sqlite_only
async def test_a_wrong_or_doubled_api_key_is_unauthenticated(start_server: StartServer, api_keys: ApiKeys) -> None:
    running = await start_server(api_keys=api_keys.entries)
    request = pb.GetSigningKeysRequest()
    wrong = credentials.new_api_key()

    unknown = await rpc_error(running.stub.GetSigningKeys(request, metadata=((credentials.API_KEY_HEADER, wrong),)))
    doubled = await rpc_error(
        running.stub.GetSigningKeys(request, metadata=api_keys.metadata("verifier") + api_keys.metadata("both"))
    )
    # The entry itself, sent as if it were the key: only the key's hash is configured.
    entry = await rpc_error(
        running.stub.GetSigningKeys(request, metadata=((credentials.API_KEY_HEADER, api_keys.entries[1]),))
    )

    assert unknown.code() is grpc.StatusCode.UNAUTHENTICATED
    assert doubled.code() is grpc.StatusCode.UNAUTHENTICATED
    assert entry.code() is grpc.StatusCode.UNAUTHENTICATED
    assert wrong not in (unknown.details() or "")


@sqlite_only
async def test_the_verifier_revokes_the_token_it_presents_but_not_its_subject(
    start_server: StartServer, api_keys: ApiKeys
) -> None:
    running = await start_server(api_keys=api_keys.entries)
    stub, verifier = running.stub, api_keys.metadata("verifier")
    subject = new_subject()
    laptop = await stub.IssueToken(pb.IssueTokenRequest(subject=subject, device_id="laptop"),
                                   metadata=api_keys.metadata("issuer"))

    by_subject = await rpc_error(stub.RevokeToken(pb.RevokeTokenRequest(subject=subject), metadata=verifier))
    by_session = await rpc_error(
        stub.RevokeToken(pb.RevokeTokenRequest(session_id=laptop.session_id), metadata=verifier)
    )
    still = await stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token), metadata=verifier)
    logout = await stub.RevokeToken(pb.RevokeTokenRequest(token=laptop.access_token), metadata=verifier)
    after = await stub.ValidateToken(pb.ValidateTokenRequest(token=laptop.access_token), metadata=verifier)

    assert by_subject.code() is grpc.StatusCode.PERMISSION_DENIED
    assert by_session.code() is grpc.StatusCode.PERMISSION_DENIED
    assert still.valid
    assert logout.revoked_sessions == 1
    assert not after.valid and after.reason == pb.INVALID_REASON_REVOKED


@sqlite_only
async def test_health_and_reflection_stay_open(start_server: StartServer, api_keys: ApiKeys) -> None:
    running = await start_server(api_keys=api_keys.entries)

    health = await health_pb2_grpc.HealthStub(running.channel).Check(health_pb2.HealthCheckRequest())
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = [s.name for answer in [await reflection.read()] for s in answer.list_services_response.service]

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "authority.v1.TokenAuthority" in services


@sqlite_only
async def test_an_unauthenticated_caller_is_refused_before_its_request_is_looked_at(
    start_server: StartServer, api_keys: ApiKeys
) -> None:
    running = await start_server(api_keys=api_keys.entries)
    # Not protobuf at all: without credentials the answer is still UNAUTHENTICATED,
    # not the INVALID_ARGUMENT a caller with a key gets.
    raw = running.channel.unary_unary("/authority.v1.TokenAuthority/IssueToken")

    anonymous = await rpc_error(raw(b"\xff\xff\xff"))
    with_key = await rpc_error(raw(b"\xff\xff\xff", metadata=api_keys.metadata("issuer")))

    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED
    assert with_key.code() is grpc.StatusCode.INVALID_ARGUMENT


@sqlite_only
async def test_api_keys_work_over_tls_and_from_a_file(
    start_server: StartServer, api_keys: ApiKeys, pki: Pki, channels: Any, tmp_path: Path
) -> None:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("# services that may call the authority\n\n" + "\n".join(api_keys.entries) + "\n")
    running = await start_server(api_keys_file=str(keys_file), **pki.server_settings())
    stub = channels(running.target, pki.credentials())

    keys = await stub.GetSigningKeys(pb.GetSigningKeysRequest(), metadata=api_keys.metadata("verifier"))
    refused = await rpc_error(stub.GetSigningKeys(pb.GetSigningKeysRequest()))

    assert '"keys"' in keys.jwks_json
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED


# --- mutual TLS ------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("caller", list(CALLERS))
async def test_client_certificate_roles_decide_every_rpc(
    start_server: StartServer, pki: Pki, channels: Any, caller: str
) -> None:
    running = await start_server(**pki.mtls_settings())
    stub = channels(running.target, pki.credentials(pki.clients[caller]))
    admin = channels(running.target, pki.credentials(pki.clients["both"]))

    seen = await outcomes(stub, admin)

    assert seen == expected(CALLERS[caller])


@sqlite_only
async def test_without_a_client_certificate_the_handshake_fails(
    start_server: StartServer, pki: Pki, channels: Any
) -> None:
    running = await start_server(**pki.mtls_settings())
    stub = channels(running.target, pki.credentials())

    error = await rpc_error(stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5))

    assert error.code() is grpc.StatusCode.UNAVAILABLE


@sqlite_only
async def test_a_client_certificate_from_a_foreign_ca_is_refused_at_the_handshake(
    start_server: StartServer, pki: Pki, channels: Any, certificates: Any
) -> None:
    foreign: Issued = certificates[4]
    running = await start_server(**pki.mtls_settings())
    stub = channels(running.target, pki.credentials(foreign))

    error = await rpc_error(stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5))

    # UNAVAILABLE is the handshake failing; a certificate that got through would be
    # answered OK (its CN names the issuer role) or PERMISSION_DENIED.
    assert error.code() is grpc.StatusCode.UNAVAILABLE


@sqlite_only
async def test_a_plaintext_client_cannot_talk_to_a_tls_server(
    start_server: StartServer, pki: Pki, channels: Any
) -> None:
    running = await start_server(**pki.mtls_settings())
    stub = channels(running.target, None)

    error = await rpc_error(stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5))

    assert error.code() is grpc.StatusCode.UNAVAILABLE


@sqlite_only
async def test_a_certificate_from_our_ca_with_no_role_is_permission_denied(
    start_server: StartServer, pki: Pki, channels: Any, certificates: Any
) -> None:
    stranger: Issued = certificates[3]
    running = await start_server(**pki.mtls_settings())
    stub = channels(running.target, pki.credentials(stranger))

    error = await rpc_error(stub.GetSigningKeys(pb.GetSigningKeysRequest(), timeout=5))

    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


@sqlite_only
async def test_an_api_key_adds_its_roles_to_a_client_certificate(
    start_server: StartServer, pki: Pki, channels: Any, api_keys: ApiKeys
) -> None:
    running = await start_server(**pki.mtls_settings(), api_keys=api_keys.entries)
    stub = channels(running.target, pki.credentials(pki.clients["verifier"]))
    request = pb.IssueTokenRequest(subject=new_subject(), device_id="laptop")

    without = await rpc_error(stub.IssueToken(request))
    with_key = await stub.IssueToken(request, metadata=api_keys.metadata("issuer"))

    assert without.code() is grpc.StatusCode.PERMISSION_DENIED
    assert with_key.access_token


# --- loopback by default ---------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "authority.example:50051"])
def test_a_non_loopback_address_without_caller_authentication_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHORITY_LISTEN": listen})

    assert caught.value.option == "listen"
    assert "allow_unauthenticated_callers" in str(caught.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.3.4.5:0", "[::1]:0", "localhost:0"])
def test_loopback_needs_no_caller_authentication(listen: str) -> None:
    assert load_settings({"AUTHORITY_LISTEN": listen}).listen == listen


def test_the_flag_that_names_the_risk_allows_an_open_address(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"AUTHORITY_LISTEN": "0.0.0.0:50051"}, allow_unauthenticated_callers="true")
    from_env = load_settings({"AUTHORITY_LISTEN": "[::]:50051", "AUTHORITY_ALLOW_UNAUTHENTICATED_CALLERS": "1"})

    with caplog.at_level(logging.WARNING, logger="authority.api.callers"):
        transport = prepare_transport(settings)

    assert from_env.allow_unauthenticated_callers
    assert transport.interceptors == ()
    assert "WITHOUT caller authentication" in caplog.text


def test_with_callers_configured_any_address_may_be_served(api_keys: ApiKeys) -> None:
    settings = load_settings({"AUTHORITY_LISTEN": "0.0.0.0:50051", "AUTHORITY_API_KEYS": ",".join(api_keys.entries)})

    assert len(prepare_transport(settings).interceptors) == 1


@sqlite_only
async def test_loopback_without_caller_authentication_serves_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="authority.api.callers"):
        server = await create_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            keys = await authority_pb2_grpc.TokenAuthorityStub(channel).GetSigningKeys(pb.GetSigningKeysRequest())
    finally:
        await server.stop(None)

    assert keys.jwks_json
    assert "no caller authentication is configured" in caplog.text


# --- configuration ---------------------------------------------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def test_caller_settings_are_checked_naming_the_option(tmp_path: Path, pki: Pki) -> None:
    tls = pki.server_settings()
    key = credentials.new_api_key()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tls_cert_file": tls["tls_cert_file"]}, "tls_key_file"),
        ({"tls_key_file": tls["tls_key_file"]}, "tls_cert_file"),
        ({"tls_cert_file": str(tmp_path / "missing.crt"), "tls_key_file": tls["tls_key_file"]}, "tls_cert_file"),
        ({"tls_client_ca_file": pki.ca_file}, "tls_client_ca_file"),
        ({**tls, "tls_client_ca_file": pki.ca_file}, "client_roles"),
        ({"client_roles": ("a.internal=issuer",)}, "client_roles"),
        ({**tls, "tls_client_ca_file": pki.ca_file, "client_roles": ("a.internal=admin",)}, "client_roles"),
        ({"api_keys": (f"billing:verifier:{key}",)}, "api_keys"),  # the key where its hash belongs
        ({"api_keys": ("billing:owner:" + credentials.hash_api_key(key),)}, "api_keys"),
        ({"api_keys": (credentials.api_key_entry("billing", VERIFIER, key),) * 2}, "api_keys"),
        ({"api_keys_file": _write(tmp_path, "keys", f"billing:verifier:{key}\n".encode())}, "api_keys_file"),
        ({"api_keys_file": str(tmp_path / "no-such-file")}, "api_keys_file"),
        ({"api_keys_file": _write(tmp_path, "empty", b"# nobody yet\n")}, "api_keys_file"),
        ({"allow_unauthenticated_callers": "maybe"}, "allow_unauthenticated_callers"),
    ]
    for options, option in cases:
        text = {name: ",".join(value) if isinstance(value, tuple) else value for name, value in options.items()}
        with pytest.raises(ConfigError) as caught:
            load_settings({}, **text)
        assert caught.value.option == option, options
        assert key not in str(caught.value)


async def test_a_file_that_is_not_pem_stops_the_server_naming_it(
    settings: Settings, pki: Pki, tmp_path: Path, api_keys: ApiKeys
) -> None:
    not_pem = _write(tmp_path, "garbage.pem", b"not a certificate")
    cases = [
        ({**pki.server_settings(), "tls_cert_file": not_pem}, "tls_cert_file"),
        ({**pki.server_settings(), "tls_key_file": not_pem}, "tls_key_file"),
        ({**pki.mtls_settings(), "tls_client_ca_file": not_pem}, "tls_client_ca_file"),
    ]
    for overrides, option in cases:
        with pytest.raises(ConfigError) as caught:
            await create_server(dataclasses.replace(settings, api_keys=api_keys.entries, **overrides))
        assert caught.value.option == option


async def test_a_key_of_another_certificate_stops_the_server_naming_it(
    settings: Settings, pki: Pki, tmp_path: Path, api_keys: ApiKeys
) -> None:
    cert, _ = pki.server.write(tmp_path, "server")
    _, other_key = pki.clients["verifier"].write(tmp_path, "billing")  # a real key, of another certificate

    with pytest.raises(ConfigError) as caught:
        await create_server(dataclasses.replace(settings, api_keys=api_keys.entries, tls_cert_file=str(cert),
                                                tls_key_file=str(other_key)))

    assert caught.value.option == "tls_key_file"
    assert "is not the private key of tls_cert_file's certificate" in str(caught.value)


def test_api_key_entries_round_trip() -> None:
    key = credentials.new_api_key()
    entry = credentials.api_key_entry("billing", BOTH, key)
    parsed = credentials.parse_api_key(entry)
    registry = CallerRegistry([parsed], {})

    assert key.startswith(credentials.API_KEY_PREFIX) and len(key) > 40
    assert entry.startswith("billing:issuer+verifier:sha256:") and key not in entry
    assert registry.identify([key], []) == Caller("billing", BOTH)



# --- command line ----------------------------------------------------------------------


async def _authority(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHORITY_")}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("authority")), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_api_key_new_prints_the_key_once_and_an_entry_holding_only_its_hash() -> None:
    code, out, _ = await _authority("api-key", "new", "--name", "billing", "--role", "verifier", "--role", "issuer")
    keys = re.findall(r"^\s+(tak_\S+)$", out, re.MULTILINE)
    entries = re.findall(r"^\s+(billing:\S+)$", out, re.MULTILINE)

    assert code == 0
    assert len(keys) == 1 and len(entries) == 1 and out.count(keys[0]) == 1
    assert CallerRegistry([credentials.parse_api_key(entries[0])], {}).identify(keys, []).roles == BOTH


async def test_api_key_new_refuses_a_bad_name_or_role() -> None:
    bad_name = await _authority("api-key", "new", "--name", "no spaces", "--role", "verifier")
    bad_role = await _authority("api-key", "new", "--name", "billing", "--role", "admin")

    assert bad_name[0] == 2 and "name:" in bad_name[2]
    assert bad_role[0] == 2 and "invalid choice" in bad_role[2]


async def test_serve_on_an_open_address_without_callers_exits_naming_listen() -> None:
    code, _, err = await _authority("serve", "--listen", "0.0.0.0:0")

    assert code == 2
    assert err.startswith("authority serve: listen: 0.0.0.0 is not a loopback address")
    assert "--allow-unauthenticated-callers" in err


# --- the client package's credentials -------------------------------------------------


@sqlite_only
async def test_the_client_package_calls_over_mutual_tls_with_its_certificates_roles(
    start_server: StartServer, pki: Pki
) -> None:
    running = await start_server(**pki.mtls_settings())
    target = f"localhost:{running.server.port}"

    async with AsyncAuthorityClient(target, credentials=pki.credentials(pki.clients["both"])) as both:
        issued = await both.issue_token(new_subject(), "laptop")
        validation = await both.validate_token(issued.access_token)
    async with AsyncAuthorityClient(target, credentials=pki.credentials(pki.clients["verifier"])) as verifier:
        with pytest.raises(PermissionDenied):
            await verifier.issue_token(new_subject(), "laptop")
    async with AsyncAuthorityClient(target, credentials=pki.credentials()) as anonymous:
        with pytest.raises(Unavailable):  # no client certificate: the handshake fails
            await anonymous.get_signing_keys(timeout=2)

    assert validation.valid


@sqlite_only
async def test_the_sync_client_sends_its_api_key_over_tls(
    start_server: StartServer, api_keys: ApiKeys, pki: Pki
) -> None:
    running = await start_server(api_keys=tuple(api_keys.entries), **pki.server_settings())
    target = f"localhost:{running.server.port}"

    def calls() -> tuple[str, type[Exception] | None]:
        with AuthorityClient(target, credentials=pki.credentials(), api_key=api_keys.keys["verifier"]) as client:
            jwks = client.get_signing_keys()
        with AuthorityClient(target, credentials=pki.credentials()) as anonymous:
            try:
                anonymous.get_signing_keys()
            except Unauthenticated as refused:
                return jwks, type(refused)
        return jwks, None

    jwks, refused = await asyncio.to_thread(calls)

    assert '"keys"' in jwks
    assert refused is Unauthenticated


def test_an_api_keys_file_with_a_byte_order_mark_reads_and_one_not_utf8_is_refused(tmp_path: Path) -> None:
    entry = credentials.api_key_entry("billing", {Role.VERIFIER}, credentials.new_api_key())
    marked, latin = tmp_path / "marked", tmp_path / "latin"
    marked.write_text("\ufeff" + entry + "\r\n", encoding="utf-8")
    latin.write_bytes(b"# caf\xe9\n" + entry.encode() + b"\n")

    assert load_settings({"AUTHORITY_API_KEYS_FILE": str(marked)}).api_key_entries() == [entry]
    with pytest.raises(ConfigError) as caught:
        load_settings({"AUTHORITY_API_KEYS_FILE": str(latin)})
    assert caught.value.option == "api_keys_file" and str(caught.value).endswith(f"{latin} is not UTF-8 text")
