"""Caller authentication on the HTTP port, by the gRPC port's rules: an API key (sent as
``Authorization: Bearer <API key>``) or a verified client certificate identifies the
caller through the same :class:`~authority.credentials.CallerRegistry`, and its roles
decide what it may do. Without caller authentication configured the port is loopback
only (settings enforce it) and every caller is admitted, as on the gRPC port.

The ``Authorization`` header is read strictly, so a request whose credentials could be
read two ways is refused rather than guessed at: one header, the Bearer scheme (any
case), one token68 credential of at most :data:`MAX_AUTHORIZATION_BYTES`.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from authority.credentials import Caller, CallerRegistry, Role
from authority.errors import CallerNotPermitted, InvalidArgument
from authority.http.status import CredentialsMissing

AUTHORIZATION = "Authorization"
# An API key is 47 characters; this leaves room for any credential a caller might
# reasonably send and stops a header that is only there to cost us work.
MAX_AUTHORIZATION_BYTES = 1024
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_credential(request: web.Request) -> str | None:
    """The credential of the request's ``Authorization: Bearer`` header; None without one.

    Raises :class:`InvalidArgument` (400) for several headers, another scheme, an empty
    or oversized credential, or one that is not token68.
    """
    values: Sequence[str] = request.headers.getall(AUTHORIZATION, ())
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument(AUTHORIZATION, "send one Authorization header, not several")
    value = values[0]
    if len(value.encode(errors="surrogateescape")) > MAX_AUTHORIZATION_BYTES:
        raise InvalidArgument(AUTHORIZATION, f"must be at most {MAX_AUTHORIZATION_BYTES} bytes")
    scheme, _, credential = value.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidArgument(AUTHORIZATION, "use the Bearer scheme: Authorization: Bearer <API key>")
    credential = credential.strip(" \t")
    if not credential:
        raise InvalidArgument(AUTHORIZATION, "Bearer needs a credential after it")
    if not _TOKEN68.fullmatch(credential):
        raise InvalidArgument(AUTHORIZATION, "the Bearer credential must be one token68 value (RFC 6750 §2.1)")
    return credential


def certificate_identities(request: web.Request) -> list[str]:
    """The verified client certificate's subject CN and subject alternative names; empty
    without mutual TLS (the handshake refuses an unverified certificate)."""
    transport = request.transport
    if transport is None or not isinstance(transport.get_extra_info("ssl_object"), ssl.SSLObject):
        return []
    certificate: dict[str, Any] | None = transport.get_extra_info("peercert")
    if not certificate:
        return []
    names = [value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for _, value in certificate.get("subjectAltName", ())]
    return [str(name) for name in names]


class HttpCallers:
    """Admits a request's caller when its roles include the one an endpoint needs."""

    def __init__(self, registry: CallerRegistry | None, trust_client_certificates: bool) -> None:
        # None: no caller authentication is configured, so settings allow loopback only.
        self._registry = registry
        self._trust_client_certificates = trust_client_certificates

    def admit(self, request: web.Request, role: Role, endpoint: str) -> Caller | None:
        """The caller, or :class:`CredentialsMissing`, :class:`CallerUnauthenticated` or
        :class:`CallerNotPermitted`; None when callers are not authenticated."""
        key = bearer_credential(request)
        if self._registry is None:
            return None
        identities = certificate_identities(request) if self._trust_client_certificates else []
        if key is None and not identities:
            raise CredentialsMissing(
                "no caller credentials: send an API key as Authorization: Bearer <API key>, "
                "or connect with a client certificate"
            )
        caller = self._registry.identify([key] if key is not None else [], identities)
        if role not in caller.roles:
            raise CallerNotPermitted(f"{caller.name} may not call {endpoint}: it needs the {role.value} role")
        return caller
