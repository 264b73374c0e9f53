"""Caller authentication on the gRPC port: the port's TLS credentials, who a call comes
from, whether its roles allow the RPC, and the interceptor that admits only such calls.

The interceptor guards ``authority.v1.TokenAuthority`` and Envoy's external authorization
(``envoy.service.auth.v3.Authorization``, verifier role); health and reflection stay
open so that load balancers and generic tools work without credentials. It runs before
every other interceptor, so an unauthenticated caller learns nothing about its request.
What is refused with which status is decided by :mod:`authority.api.status`.
"""

from __future__ import annotations

import dataclasses
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from authority_client.v1 import authority_pb2 as pb
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authority.api.ext_authz import SERVICE_NAME as EXT_AUTHZ_SERVICE
from authority.api.status import status_of
from authority.config import Settings, is_loopback, read_option_file
from authority.credentials import API_KEY_HEADER, Caller, CallerRegistry, Role, parse_api_key, parse_client_role
from authority.errors import CallerNotPermitted, CallerUnauthenticated, ConfigError

# Caller and CallerRegistry live in authority.credentials, shared with the HTTP port.
__all__ = [
    "AuthenticateCallers", "Caller", "CallerRegistry", "Transport", "authorize", "certificate_identities",
    "prepare_transport",
]

log = logging.getLogger(__name__)

_SERVICE_PREFIX = "/" + pb.DESCRIPTOR.services_by_name["TokenAuthority"].full_name + "/"
# Other guarded services' methods are named in full (``package.Service/Method``) in _NEEDS.
_GUARDED_PREFIXES = (_SERVICE_PREFIX, f"/{EXT_AUTHZ_SERVICE}/")
Context = grpc.aio.ServicerContext[Any, Any]

# The roles each RPC admits (any one suffices). RevokeToken is decided by its target (see
# :func:`authorize`); an RPC missing from this table is refused to everyone.
_NEEDS: dict[str, tuple[Role, ...]] = {
    "IssueToken": (Role.ISSUER,),
    "PreviewSignIn": (Role.ISSUER,),
    "RefreshToken": (Role.ISSUER,),
    "ListSessions": (Role.ISSUER, Role.AUDITOR),
    "ValidateToken": (Role.VERIFIER,),
    "GetSigningKeys": (Role.VERIFIER,),
    "WatchRevocations": (Role.VERIFIER,),
    "WatchSessionEvents": (Role.AUDITOR,),
    f"{EXT_AUTHZ_SERVICE}/Check": (Role.VERIFIER,),
}
# The name of the authenticated caller of the call being handled ("" without caller
# authentication), for the session event log.
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("authority_caller", default="")


def authorize(caller: Caller, rpc: str, revokes_presented_token: bool) -> None:
    """Raises :class:`CallerNotPermitted` unless ``caller``'s roles allow ``rpc``.

    ``revokes_presented_token``: a RevokeToken request whose target is a token, which a
    verifier may send (logout through the service that holds the token).
    """
    if rpc == "RevokeToken":
        if Role.ISSUER in caller.roles or (revokes_presented_token and Role.VERIFIER in caller.roles):
            return
        needed = "the verifier role with a token target, or the issuer role" if Role.VERIFIER in caller.roles \
            else "the issuer role"
        raise CallerNotPermitted(f"{caller.name} may not call RevokeToken with this target: it needs {needed}")
    roles = _NEEDS.get(rpc)
    if roles is None:
        raise CallerNotPermitted(f"{rpc} is not open to callers")
    if caller.roles.isdisjoint(roles):
        needed = " or ".join(role.value for role in roles)
        raise CallerNotPermitted(f"{caller.name} may not call {rpc}: it needs the {needed} role")


@dataclasses.dataclass(frozen=True)
class Transport:
    """The port's credentials (None: plaintext) and the interceptors that go first."""

    credentials: grpc.ServerCredentials | None
    interceptors: tuple[grpc.aio.ServerInterceptor, ...]
    # The callers the interceptors admit; None without caller authentication. The HTTP
    # port identifies its callers with the same registry.
    registry: CallerRegistry | None = None

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Binds ``address`` with these credentials; returns the port."""
        if self.credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.credentials)


def prepare_transport(settings: Settings) -> Transport:
    """Reads the TLS files and caller entries, and says plainly in the log what is open."""
    credentials = _server_credentials(settings)
    host = settings.listen.rpartition(":")[0]
    if not settings.authenticates_callers:
        if is_loopback(host):
            log.warning("no caller authentication is configured: any process on this machine may issue and "
                        "revoke tokens, so only loopback (%s) is served", host)
        else:
            log.warning("serving %s WITHOUT caller authentication (allow_unauthenticated_callers): anyone who "
                        "reaches it may issue and revoke tokens", host)
        return Transport(credentials, ())
    if credentials is None and not is_loopback(host):
        log.warning("API keys are sent in plaintext to %s: configure tls_cert_file and tls_key_file", host)
    api_keys = [parse_api_key(entry) for entry in settings.api_key_entries()]
    client_roles = dict(parse_client_role(entry) for entry in settings.client_roles)
    registry = CallerRegistry(api_keys, client_roles)
    log.info("caller authentication: %d API keys, %d client identities", len(api_keys), len(client_roles))
    return Transport(credentials, (AuthenticateCallers(registry, bool(settings.tls_client_ca_file)),), registry)


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert_file:
        return None
    chain = _certificates("tls_cert_file", settings.tls_cert_file)
    key = read_option_file("tls_key_file", settings.tls_key_file)
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError("tls_key_file", "is not an unencrypted PEM private key") from None
    # grpc would refuse a key of another certificate only when the port is added, as a
    # bare "cannot listen"; said here, it names the files.
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    if leaf.public_key().public_bytes(*spki) != private_key.public_key().public_bytes(*spki):
        raise ConfigError("tls_key_file", "is not the private key of tls_cert_file's certificate (the first in it)")
    client_ca = None
    if settings.tls_client_ca_file:
        client_ca = _certificates("tls_client_ca_file", settings.tls_client_ca_file)
    # With a client CA every connection must present a certificate it signed: one
    # without is refused during the handshake, before any request is read.
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=bool(client_ca))


def _certificates(option: str, path: str) -> bytes:
    pem = read_option_file(option, path)
    try:
        if not x509.load_pem_x509_certificates(pem):
            raise ValueError
    except ValueError:
        raise ConfigError(option, f"{path} holds no PEM certificate") from None
    return pem


def certificate_identities(context: Context) -> list[str]:
    """The verified client certificate's subject CN and SANs; empty without mutual TLS."""
    properties = context.auth_context()
    if properties.get("transport_security_type") != [b"ssl"]:
        return []
    names = [*properties.get("x509_common_name", ()), *properties.get("x509_subject_alternative_name", ())]
    return [name.decode(errors="replace") for name in names]


class AuthenticateCallers(grpc.aio.ServerInterceptor):
    """Lets a TokenAuthority call through only for an authenticated caller whose roles
    allow it; everything else passes untouched."""

    def __init__(self, registry: CallerRegistry, trust_client_certificates: bool) -> None:
        self._registry = registry
        # Certificate identities count only when the handshake verified them.
        self._trust_client_certificates = trust_client_certificates

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(_GUARDED_PREFIXES):
            return handler
        rpc = method.removeprefix(_SERVICE_PREFIX) if method.startswith(_SERVICE_PREFIX) else method[1:]
        metadata = handler_call_details.invocation_metadata or ()
        keys = [str(value) for key, value in metadata if key == API_KEY_HEADER]
        admit = self._admit
        # Every kind of method is guarded, so one added to the service later is too.
        kind = "_".join("stream" if streaming else "unary"
                        for streaming in (handler.request_streaming, handler.response_streaming))
        behavior = getattr(handler, kind)
        if inspect.isasyncgenfunction(behavior):

            async def admitted_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await admit(rpc, keys, request, context)
                async for response in behavior(request, context):
                    yield response

            admitted: Any = admitted_stream
        else:

            async def admitted_call(request: Any, context: Context) -> Any:
                await admit(rpc, keys, request, context)
                return await behavior(request, context)

            admitted = admitted_call
        return handler._replace(**{kind: admitted})  # type: ignore[attr-defined, no-any-return]

    async def _admit(self, rpc: str, keys: list[str], request: Any, context: Context) -> Caller:
        identities = certificate_identities(context) if self._trust_client_certificates else []
        try:
            caller = self._registry.identify(keys, identities)
            revokes_presented_token = isinstance(request, pb.RevokeTokenRequest) and (
                request.WhichOneof("target") == "token"
            )
            authorize(caller, rpc, revokes_presented_token)
        except (CallerUnauthenticated, CallerNotPermitted) as refused:
            # The peer address and the reason only: never the key that was presented.
            log.info("refused %s from %s: %s", rpc, context.peer(), refused)
            await context.abort(status_of(refused), str(refused))
            raise AssertionError("unreachable: abort raises") from refused
        # The handler runs next in this same task, so it reads this.
        CALLER.set(caller.name)
        return caller
