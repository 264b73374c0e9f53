"""The rows that cross from the store to the domain, as plain frozen dataclasses."""

from __future__ import annotations

import dataclasses
import enum

# One definition, shared with the consumer package (the contract's numbers).
from authority_client.verify import RevocationCause as RevocationCause


class SessionEventKind(enum.IntEnum):
    """What a session event records; the numbers are the contract's ``SessionEventKind``."""

    SIGNED_IN = 1
    SIGN_IN_REFUSED = 2
    REFRESH_TOKEN_REUSED = 3
    SESSION_ENDED = 4


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRecord:
    """One subject signed in on one device."""

    session_id: str
    subject: str
    device_id: str
    audience: str
    claims: str
    access_ttl: int
    created_at: float
    expires_at: float
    last_used_at: float
    access_expires_at: float
    revoked_at: float | None
    device_class: str = ""
    device_name: str = ""
    # The RFC 7638 thumbprint of the device key the session is bound to; "" for bearer.
    key_thumbprint: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of the revocation log: a session (and, on logout, the token named)."""

    sequence: int
    session_id: str
    token_id: str | None
    expires_at: float
    cause: RevocationCause = RevocationCause.UNSPECIFIED
    # For REPLACED_BY_SIGN_IN: the device that signed in.
    replaced_by_device_id: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class RevocationDetail:
    """What explains a refused token: why and when its session was revoked, and by which
    device (for a replacement)."""

    cause: RevocationCause
    revoked_at: float
    replaced_by_device_id: str = ""
    replaced_by_device_name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SessionEvent:
    """One entry of the session event log (``sequence`` 0 until it is stored)."""

    kind: SessionEventKind
    occurred_at: float
    subject: str
    session_id: str = ""
    device_id: str = ""
    device_class: str = ""
    device_name: str = ""
    replaced_session_ids: tuple[str, ...] = ()
    cause: RevocationCause = RevocationCause.UNSPECIFIED
    caller: str = ""
    sequence: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    """A signing key as stored: the private half is PEM."""

    kid: str
    algorithm: str
    private_key: bytes
    created_at: float
    activates_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A refresh token's hash, its session, and whether it was already traded."""

    session: SessionRecord
    used_at: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class LogState:
    """Which revocation log the store holds now, and where it is served from.

    ``epoch`` changes when the log may have gone backwards: a new database, a restore
    (a renewed epoch id), a PostgreSQL timeline change (a promotion, a point-in-time
    recovery). A log position means something only within its epoch.
    """

    epoch: str
    host: str
    primary: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RetainedKeyRecord:
    """The public half of a purged signing key, kept for logout: PEM SubjectPublicKeyInfo."""

    kid: str
    algorithm: str
    public_key: bytes
    replaced_at: float
