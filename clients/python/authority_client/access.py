"""What the server interceptors decide before a handler runs, shared by both flavours.

A call names its method as ``/package.Service/Method``. :class:`AccessRules` says which
methods need no token, which audience the others require and the authority name
(``external_authority``) DPoP proofs are made for; :class:`Gate` reads the
``authorization: Bearer <token>`` or ``authorization: DPoP <token>`` metadata, and a
DPoP token's proof from the ``dpop`` metadata, and turns every way a call can be refused
into one :class:`Refusal`: a status code, a generic message (never the token, never
why in words a prober could use beyond the reason name) and the reason name for the
``x-token-invalid-reason`` trailing metadata, with, for a revoked token whose cause is
known, the cause's name in ``x-token-revocation-cause``
(:data:`authority_client.reasons.CAUSE_TEXTS` has the words for a person).

Device-bound tokens (RFC 9449) on gRPC: the token as ``authorization: DPoP <token>`` and
exactly one ``dpop`` metadata value, a proof with ``htm`` ``POST`` and ``htu``
``https://<external_authority>/<package.Service>/<Method>``
(:func:`authority_client.proof.grpc_proof_uri`). grpcio's server context does not show
the ``:authority`` the client called, so the name comes from the rules: it is the name
clients dial (``orders.example.com``), the same for every replica behind it. The
validator checks the proof; here, before it runs:

- ``DPoP`` with no ``dpop`` value: PROOF_REQUIRED; with two or more: BAD_PROOF;
- ``DPoP`` with a proof while ``external_authority`` is not configured: BAD_PROOF (no
  ``htu`` can be checked), and one warning in the log. A bound token cannot be admitted
  by such a server at all: sent as ``Bearer`` it is refused PROOF_REQUIRED by the
  validator, like every bound token without a proof;
- ``Bearer`` with a ``dpop`` value: the value is ignored; the token is a bearer token or
  is refused PROOF_REQUIRED.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Final

import grpc

from authority_client.errors import Unavailable
from authority_client.proof import DPOP_HEADER, DPOP_SCHEME, Proof, grpc_proof_uri
from authority_client.reasons import UNAVAILABLE_TEXT
from authority_client.types import InvalidReason, RevocationCause
from authority_client.verify import InvalidToken

log = logging.getLogger(__name__)

AUTHORIZATION_HEADER: Final = "authorization"
REASON_HEADER: Final = "x-token-invalid-reason"
CAUSE_HEADER: Final = "x-token-revocation-cause"
MISSING: Final = "MISSING"
# The standard health and reflection services answer without a token by default.
DEFAULT_PUBLIC: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
)


@dataclasses.dataclass(frozen=True)
class AccessRules:
    """Which calls need a token, and for which audience.

    Names in ``public`` and keys of ``audiences`` are a whole service
    (``package.Service``) or one method (``/package.Service/Method``); a method's
    setting wins over its service's.
    """

    # The audience every token must carry unless a method or service says otherwise.
    audience: str = "token-authority"
    audiences: Mapping[str, str] = dataclasses.field(default_factory=dict)
    public: frozenset[str] = DEFAULT_PUBLIC
    # The host (and port, if clients name one) clients dial, which DPoP proofs name in
    # their ``htu``; "" admits no device-bound token.
    external_authority: str = ""

    def __post_init__(self) -> None:
        if self.external_authority and any(c in self.external_authority for c in "/?#@ "):
            raise ValueError("external_authority is host[:port], as clients dial it")

    @classmethod
    def of(
        cls, audience: str = "token-authority", *, audiences: Mapping[str, str] | None = None,
        public: Iterable[str] = (), external_authority: str = "",
    ) -> AccessRules:
        """Rules from plain collections; ``public`` adds to health and reflection.

        (To require tokens on health and reflection too, build :class:`AccessRules`
        directly with the ``public`` set you want.)
        """
        return cls(audience, dict(audiences or {}), DEFAULT_PUBLIC | frozenset(public), external_authority)

    def is_public(self, method: str) -> bool:
        """Whether ``method`` answers without a token."""
        return method in self.public or _service(method) in self.public

    def audience_for(self, method: str) -> str:
        """The audience a token must carry to call ``method``."""
        return self.audiences.get(method) or self.audiences.get(_service(method)) or self.audience


def _service(method: str) -> str:
    return method.lstrip("/").partition("/")[0]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a call is refused before its handler runs."""

    code: grpc.StatusCode
    message: str
    reason: str
    # The revocation cause's short name (REPLACED_BY_SIGN_IN), when known.
    cause: str = ""

    @property
    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """The reason (and the cause, when known) as trailing metadata."""
        if self.cause:
            return ((REASON_HEADER, self.reason), (CAUSE_HEADER, self.cause))
        return ((REASON_HEADER, self.reason),)


@dataclasses.dataclass(frozen=True)
class Check:
    """A token to check before the handler runs, and its proof (None: a bearer token)."""

    token: str = dataclasses.field(repr=False)
    audience: str
    proof: Proof | None = dataclasses.field(default=None, repr=False)


_UNAUTHENTICATED = "a valid bearer token is required"


def _refused(reason: InvalidReason) -> Refusal:
    return Refusal(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED, reason.name)


class Gate:
    """The interceptors' shared logic: what to check, and how a failure is answered."""

    def __init__(self, rules: AccessRules) -> None:
        self.rules = rules
        self._warned = threading.Event()

    def check_for(self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Check | Refusal | None:
        """None for a public method, else the token (and proof) to check, or a refusal."""
        if self.rules.is_public(method):
            return None
        entries = list(metadata or ())
        presented = presented_token(entries)
        if presented is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED, MISSING)
        scheme, token = presented
        audience = self.rules.audience_for(method)
        if scheme != DPOP_SCHEME:
            return Check(token, audience)
        proofs = [value for key, value in entries if key.lower() == DPOP_HEADER]
        if not proofs:
            return _refused(InvalidReason.PROOF_REQUIRED)
        if len(proofs) > 1 or not isinstance(proofs[0], str):
            return _refused(InvalidReason.BAD_PROOF)
        if not self.rules.external_authority:
            if not self._warned.is_set():
                self._warned.set()
                log.warning(
                    "a call came with a DPoP proof, but external_authority is not configured in the "
                    "AccessRules: device-bound tokens are refused (BAD_PROOF) until it is"
                )
            return _refused(InvalidReason.BAD_PROOF)
        return Check(token, audience, Proof(proofs[0], "POST", grpc_proof_uri(self.rules.external_authority, method)))

    @staticmethod
    def refusal(error: Exception) -> Refusal:
        """The refusal for what the validator raised."""
        if isinstance(error, InvalidToken):
            # UNSPECIFIED is 0, so falsy like None: no cause header for it.
            cause = RevocationCause(error.cause).name if error.cause else ""
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED, InvalidReason(error.reason).name, cause)
        if isinstance(error, Unavailable):
            return Refusal(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_TEXT, "UNAVAILABLE")
        # A bug, not the caller's doing: fail closed, the traceback stays in the log.
        log.error("token check failed", exc_info=error)
        return Refusal(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")


def presented_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str, str] | None:
    """The scheme (``Bearer`` or ``DPoP``) and token of the ``authorization`` entry, or None:
    for none, one in another scheme or without a token, and for several (which one would
    be believed?)."""
    values = [value for key, value in metadata or () if key.lower() == AUTHORIZATION_HEADER]
    if len(values) != 1 or not isinstance(values[0], str):
        return None
    scheme, _, token = values[0].strip().partition(" ")
    if not token.strip():
        return None
    if scheme.lower() == "bearer":
        return "Bearer", token.strip()
    if scheme.lower() == DPOP_SCHEME.lower():
        return DPOP_SCHEME, token.strip()
    return None


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the ``authorization: Bearer <token>`` entry, or None."""
    presented = presented_token(metadata)
    return presented[1] if presented is not None and presented[0] == "Bearer" else None
