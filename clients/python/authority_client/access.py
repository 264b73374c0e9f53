"""What the server interceptors decide before a handler runs, shared by both flavours.

A call names its method as ``/package.Service/Method``. :class:`AccessRules` says which
methods need no token and which audience the others require; :class:`Gate` reads the
``authorization: Bearer <token>`` metadata and turns every way a call can be refused
into one :class:`Refusal`: a status code, a generic message (never the token, never
why in words a prober could use beyond the reason name) and the reason name for the
``x-token-invalid-reason`` trailing metadata, with, for a revoked token whose cause is
known, the cause's name in ``x-token-revocation-cause``
(:data:`authority_client.reasons.CAUSE_TEXTS` has the words for a person).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Final

import grpc

from authority_client.errors import Unavailable
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

    @classmethod
    def of(
        cls, audience: str = "token-authority", *, audiences: Mapping[str, str] | None = None,
        public: Iterable[str] = (),
    ) -> AccessRules:
        """Rules from plain collections; ``public`` adds to health and reflection.

        (To require tokens on health and reflection too, build :class:`AccessRules`
        directly with the ``public`` set you want.)
        """
        return cls(audience, dict(audiences or {}), DEFAULT_PUBLIC | frozenset(public))

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
    """A token to check before the handler runs."""

    token: str
    audience: str


_UNAUTHENTICATED = "a valid bearer token is required"


class Gate:
    """The interceptors' shared logic: what to check, and how a failure is answered."""

    def __init__(self, rules: AccessRules) -> None:
        self.rules = rules

    def check_for(self, method: str, metadata: Iterable[tuple[str, str | bytes]] | None) -> Check | Refusal | None:
        """None for a public method, else the token to check, or a refusal when there is none."""
        if self.rules.is_public(method):
            return None
        token = bearer_token(metadata)
        if token is None:
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED, MISSING)
        return Check(token, self.rules.audience_for(method))

    @staticmethod
    def refusal(error: Exception) -> Refusal:
        """The refusal for what the validator raised."""
        if isinstance(error, InvalidToken):
            # UNSPECIFIED is 0, so falsy like None: no cause header for it.
            cause = RevocationCause(error.cause).name if error.cause else ""
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, _UNAUTHENTICATED, InvalidReason(error.reason).name, cause)
        if isinstance(error, Unavailable):
            return Refusal(grpc.StatusCode.UNAVAILABLE, "the token cannot be checked right now", "UNAVAILABLE")
        # A bug, not the caller's doing: fail closed, the traceback stays in the log.
        log.error("token check failed", exc_info=error)
        return Refusal(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the ``authorization: Bearer <token>`` entry, or None."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION_HEADER or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None
