"""The Python shapes of the authority's messages: what the clients take and return.

Claims and reasons are the verifier's own (:class:`AccessClaims`,
:class:`InvalidReason`), so a token checked remotely and one checked in-process look alike;
a proof of possession is the proof checker's own :class:`Proof`.
"""

from __future__ import annotations

import dataclasses
import enum

from authority_client.proof import Proof
from authority_client.verify import AccessClaims, InvalidReason, RevocationCause

__all__ = [
    "AccessClaims",
    "InvalidReason",
    "IssuedToken",
    "Proof",
    "RevocationCause",
    "RevocationEvent",
    "RevocationEventKind",
    "Session",
    "SessionPolicy",
    "SignInPreview",
    "Validation",
]


class SessionPolicy(enum.IntEnum):
    """What a sign-in does when the subject is already signed in elsewhere."""

    DEFAULT = 0  # the authority's configured default
    REPLACE = 1  # the oldest sessions are signed out
    REJECT = 2  # the sign-in fails with SessionLimitReached


class RevocationEventKind(enum.IntEnum):
    """What a :class:`RevocationEvent` carries; the numbers are the proto's."""

    UNSPECIFIED = 0
    REVOCATION = 1
    CAUGHT_UP = 2
    HEARTBEAT = 3
    SIGNING_KEYS = 4


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token pair from a sign-in or a refresh; times are Unix seconds.

    ``token_type`` is ``"DPoP"`` when the tokens are bound to the device key of the
    sign-in's proof (send the access token as ``authorization: DPoP <token>`` with a
    fresh proof, and refresh with a proof by the same key), else ``"Bearer"``.
    """

    access_token: str
    refresh_token: str
    session_id: str
    expires_at: float
    refresh_expires_at: float
    replaced_session_ids: tuple[str, ...] = ()
    token_type: str = "Bearer"

    @property
    def is_bound(self) -> bool:
        """Whether the tokens are bound to a device key (``token_type`` DPoP)."""
        return self.token_type == "DPoP"

    def __repr__(self) -> str:  # the tokens are secrets: keep them out of logs
        return (
            f"IssuedToken(session_id={self.session_id!r}, expires_at={self.expires_at}, "
            f"token_type={self.token_type!r})"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """One subject signed in on one device."""

    session_id: str
    subject: str
    device_id: str
    created_at: float
    expires_at: float
    device_class: str = ""
    device_name: str = ""
    last_used_at: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class SignInPreview:
    """What a sign-in would do now: whether it is allowed, and whom it would sign out."""

    allowed: bool
    would_replace: tuple[Session, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Validation:
    """The authority's verdict on a token: ``claims`` when valid, else ``reason``."""

    valid: bool
    reason: InvalidReason | None = None
    claims: AccessClaims | None = None
    # For reason REVOKED: why and when; for REPLACED_BY_SIGN_IN, the device that signed in.
    revocation_cause: RevocationCause | None = None
    revoked_at: float = 0.0
    replaced_by_device_id: str = ""
    replaced_by_device_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RevocationEvent:
    """One event of the WatchRevocations stream (see the proto for each kind's fields)."""

    kind: RevocationEventKind
    sequence: int
    token_id: str = ""
    session_id: str = ""
    expires_at: float = 0.0
    sent_at: float = 0.0
    jwks_json: str = ""
    # The revocation log's epoch: sequences are positions within one epoch.
    epoch: str = ""
    cause: RevocationCause = RevocationCause.UNSPECIFIED
    replaced_by_device_id: str = ""
    # For SIGNING_KEYS: the set's version (SigningKeySet.version); 0 when the server does not say.
    key_set_version: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class SigningKeySet:
    """The authority's public keys, as GetSigningKeys answers them."""

    # The RFC 7517 JWK Set, as JSON text.
    jwks_json: str
    # Raised by the database on every change to the stored keys: of two sets of one log
    # epoch, the higher version is the newer, whichever replica answered. 0: the server
    # does not say (an authority older than the field).
    version: int = 0
