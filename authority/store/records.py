"""The rows that cross from the store to the domain, as plain frozen dataclasses."""

from __future__ import annotations

import dataclasses


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


@dataclasses.dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of the revocation log: a session (and, on logout, the token named)."""

    sequence: int
    session_id: str
    token_id: str | None
    expires_at: float


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
