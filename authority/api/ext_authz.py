"""Envoy external authorization (``envoy.service.auth.v3.Authorization/Check``) on the
authority's gRPC port.

Envoy asks before it forwards a request; the answer is made of the same parts as every
other HTTP surface's: the token is read and a refusal built by
:mod:`authority_client.http.bearer`, and the token is validated by the same domain
:class:`~authority.validation.Validator` as ValidateToken, with the same reasons.

- **Allowed**: OK, with ``x-authority-subject``, ``-session-id``, ``-device-id`` and
  ``-token-id`` set for the upstream, each with ``OVERWRITE_IF_EXISTS_OR_ADD``, which
  removes every copy the client sent: a client can never spoof them. (They are not also
  named in ``headers_to_remove``: Envoy applies that list after the headers it sets, so it
  would take the authority's own values away.)
- **Denied**: the HTTP status, ``WWW-Authenticate`` challenge and JSON body of the
  :class:`~authority_client.http.bearer.Denial`. A revoked token's description carries
  its cause from the one table (``revoked: signed in on the phone``); the replacing
  device's name is read as for ValidateToken, on that rare path, and left out when the
  store cannot say in time.
- **Stale view**: the call fails with UNAVAILABLE (the one status map), like
  ValidateToken; an Envoy with ``failure_mode_allow: false`` then denies, with its
  ``status_on_error``.

The audience is the check request's context extension ``audience``, which Envoy sets
per route; without one, the authority's default audience.

**Device-bound tokens** (RFC 9449): ``Authorization: DPoP <token>`` with exactly one
``DPoP`` header, read from the check request like the token (two: BAD_PROOF; none:
PROOF_REQUIRED). The proof is checked, by the same validator, against the request's
method and its URL without the query: ``<scheme>://<host><path>`` as Envoy saw them, or,
behind another proxy that rewrites them, the context extension ``origin``
(``https://api.example.com``) and the path. Without ``origin``, a host that is not
only a host and port (``app.test/admin?`` would make the URL /admin's) is BAD_PROOF, as
in the HTTP middlewares. A refusal about the proof, or of a bound
token, carries the ``DPoP`` challenge (``DPoP algs="EdDSA ES256 RS256",
error="invalid_dpop_proof"`` or ``error="invalid_token"``); bearer tokens keep theirs.
The replay cache is the authority process's one: a proof used once through Envoy is
refused the second time, and so is the same proof at ValidateToken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import grpc
from authority_client.http.bearer import Denial, Presented, invalid_token, read_token
from authority_client.proof import DPOP_HEADER, Proof, normalize_uri
from authority_client.proof_uri import is_host
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from authority.api.answers import PerVerifiedToken
from authority.api.status import unary
from authority.app import Authority
from authority.ops.metrics import Metrics
from authority.store import RevocationCause
from authority.tokens import AccessClaims, InvalidReason, InvalidToken
from authority.validation import Revoked

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE: Final = ext.DESCRIPTOR.services_by_name["Authorization"]
SERVICE_NAME: Final = SERVICE.full_name
AUDIENCE_EXTENSION: Final = "audience"
ORIGIN_EXTENSION: Final = "origin"
SUBJECT_HEADER: Final = "x-authority-subject"
SESSION_HEADER: Final = "x-authority-session-id"
DEVICE_HEADER: Final = "x-authority-device-id"
TOKEN_ID_HEADER: Final = "x-authority-token-id"
IDENTITY_HEADERS: Final = (SUBJECT_HEADER, SESSION_HEADER, DEVICE_HEADER, TOKEN_ID_HEADER)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# The gRPC code inside a denial only tells Envoy "not OK"; the HTTP status is what a client sees.
_RPC_CODES: Final = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED}


def _header_values(http: Any, name: str) -> list[str | bytes]:
    """Every ``name`` value, one per header line when Envoy sends them raw
    (``encode_raw_headers``), else the map's single value, where Envoy joined repeats with commas."""
    if http.header_map.headers:
        return [header.raw_value or header.value for header in http.header_map.headers
                if header.key.lower() == name]
    value = http.headers.get(name)
    return [] if value is None else [value]


def _authorization(http: Any) -> list[str | bytes]:
    """Every ``authorization`` value (see :func:`_header_values`)."""
    return _header_values(http, "authorization")


def request_proof(presented: Presented, http: Any, origin: str) -> Proof | Denial | None:
    """The proof that came with a DPoP token and the request it came with, as Envoy saw it
    (``origin`` replaces its scheme and host); None for a bearer token."""
    if presented.proof is None:
        return None
    path = http.path.partition("?")[0]
    if not origin and not is_host(http.host):
        return invalid_token(InvalidReason.BAD_PROOF)  # a Host that would point the URL elsewhere
    uri = f"{origin.rstrip('/')}{path}" if origin else f"{http.scheme or 'http'}://{http.host}{path}"
    try:
        normalize_uri(uri)
    except ValueError:
        # A host or path no URL can hold: no proof can name it.
        return invalid_token(InvalidReason.BAD_PROOF)
    return presented.proof_for(http.method, uri)


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def allowed(claims: AccessClaims) -> ext.CheckResponse:
    """OK, with the token's identity for the upstream, replacing whatever the client sent."""
    identity = (claims.subject, claims.session_id, claims.device_id, claims.token_id)
    return ext.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=ext.OkHttpResponse(
            headers=[_header(key, value) for key, value in zip(IDENTITY_HEADERS, identity)],
        ),
    )


def denied(denial: Denial) -> ext.CheckResponse:
    """The HTTP answer of ``denial``, for Envoy to send in place of the upstream's."""
    headers: Sequence[tuple[str, str]] = denial.headers
    return ext.CheckResponse(
        status=status_pb2.Status(code=_RPC_CODES.get(denial.status, code_pb2.PERMISSION_DENIED)),
        denied_response=ext.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=denial.status),
            headers=[_header(key, value) for key, value in headers],
            body=denial.body.decode(),
        ),
    )


class ExternalAuthorization(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """``envoy.service.auth.v3.Authorization`` on top of one :class:`Authority`."""

    def __init__(self, authority: Authority, metrics: Metrics | None = None) -> None:
        self._validator = authority.validator
        self._explanations = authority.explanations
        # The same counters as ValidateToken: one view of every token checked.
        self._validations = (metrics or Metrics()).validation_outcomes
        # A warm token's OK answer is built once (authority/api/answers.py).
        self._allowed = PerVerifiedToken(allowed)

    @unary
    async def Check(self, request: ext.CheckRequest, context: Context) -> ext.CheckResponse:
        http = request.attributes.request.http
        presented = read_token(_authorization(http), http.path.partition("?")[2], dpop=_header_values(http, DPOP_HEADER))
        if isinstance(presented, Denial):
            return denied(presented)
        extensions = request.attributes.context_extensions
        proof = request_proof(presented, http, extensions.get(ORIGIN_EXTENSION, ""))
        if isinstance(proof, Denial):
            return denied(proof)
        audience = extensions.get(AUDIENCE_EXTENSION, "")
        try:
            # StaleView escapes to the status map: UNAVAILABLE, as for ValidateToken.
            claims = self._validator.validate(presented.token, audience, proof)
        except Revoked as revoked:
            self._validations[revoked.reason].inc()
            return denied(invalid_token(revoked.reason, presented.scheme, revoked.cause, await self._device_name(revoked)))
        except InvalidToken as invalid:
            self._validations[invalid.reason].inc()
            return denied(invalid_token(invalid.reason, presented.scheme))
        self._validations[None].inc()
        return self._allowed.get(presented.token, claims)

    async def _device_name(self, revoked: Revoked) -> str:
        """The name of the device that replaced the revoked session, when there was one."""
        if revoked.cause is not RevocationCause.REPLACED_BY_SIGN_IN:
            return ""
        detail = await self._explanations.explain(revoked.session_id)
        return "" if detail is None else detail.replaced_by_device_name


def add_to_server(servicer: Any, server: grpc.aio.Server) -> None:
    """Registers ``servicer`` (an :class:`ExternalAuthorization`, or a stand-in with its
    methods) on ``server``."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
