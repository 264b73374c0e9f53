"""The authority's domain errors.

    AuthorityError
    ├── ConfigError            an option has an invalid value
    ├── SchemaError            the database schema is not one this version can run on
    ├── NoDatabase             a command that only reads found no database to read
    ├── InvalidArgument        a request field is invalid
    │   └── ValueOutOfRange    a number beyond what the authority can store (2^63 - 1)
    ├── SessionLimitReached    REJECT policy: the subject already has its sessions
    ├── SignInAborted          a guarded sign-in would replace other sessions than expected
    ├── RefreshTokenRejected   a refresh token that cannot be traded
    │   └── RefreshTokenReused an already-rotated refresh token: the session is revoked
    ├── TokenRejected          a token that cannot be revoked by (not this authority's)
    ├── StoreUnavailable       the database cannot be reached or did not commit
    │   └── StaleView          the revocation view is too old to vouch for a token
    ├── CallerUnauthenticated  a call came with no valid caller credentials
    ├── CallerNotPermitted     the caller's roles do not allow this call
    ├── WatcherTooSlow         a revocation watcher fell too far behind and must resume
    └── SequenceUnknown        a watcher resumes after a sequence the log never reached
        └── LogEpochChanged    ... or of another epoch of the log (restored, failed over)

Only :mod:`authority.api.status` turns these into gRPC status codes. Messages may reach
callers, so they never contain a token, a refresh token or key material.
"""

from __future__ import annotations


class AuthorityError(Exception):
    """Root of every error the authority raises on purpose."""


class ConfigError(AuthorityError):
    """An option has an invalid value."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")
        self.option = option


class SchemaError(AuthorityError):
    """The database schema is not one this version of the authority can run on."""


class NoDatabase(AuthorityError):
    """A command that only reads was pointed at a database that does not exist."""


class InvalidArgument(AuthorityError):
    """A request field is invalid; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ValueOutOfRange(InvalidArgument):
    """A request number is beyond the largest the authority stores (2^63 - 1)."""


class SessionLimitReached(AuthorityError):
    """The subject already has as many live sessions as allowed and the policy is REJECT."""


class SignInAborted(AuthorityError):
    """A guarded sign-in (expected_replacements) would sign out other sessions than those
    expected; nothing changed, and the user should be asked again."""


class RefreshTokenRejected(AuthorityError):
    """The refresh token is unknown, expired, or its session has ended."""


class RefreshTokenReused(RefreshTokenRejected):
    """An already-rotated refresh token was presented; its session has been revoked."""


class TokenRejected(AuthorityError):
    """A token given to revoke is not one this authority signed."""


class StoreUnavailable(AuthorityError):
    """The database cannot be reached, or the change did not commit."""


class StaleView(StoreUnavailable):
    """The revocation view has not been confirmed current for longer than max_staleness."""

    def __init__(self) -> None:
        super().__init__("the revocation list cannot be confirmed current (the revocation log is unreadable); try again")


class WatcherTooSlow(AuthorityError):
    """A revocation watcher fell so far behind that events were dropped; it must resume."""

    def __init__(self) -> None:
        super().__init__(
            "this watcher fell too far behind (its client read too slowly) and was cut off; reconnect with "
            "after_sequence set to the last sequence received (in a REVOCATION, CAUGHT_UP or HEARTBEAT event) "
            "to miss nothing"
        )


class SequenceUnknown(AuthorityError):
    """A watcher resumes after a sequence beyond the end of the log; it must start from 0."""

    def __init__(self, log: str = "revocation log") -> None:
        super().__init__(f"after_sequence is beyond the end of the {log}; resume from 0")


class CallerUnauthenticated(AuthorityError):
    """A call came with no caller credentials, or with credentials that are not valid."""


class CallerNotPermitted(AuthorityError):
    """The calling service is known, but its roles do not allow this call."""


class LogEpochChanged(SequenceUnknown):
    """A watcher's position is of another epoch of the log (a restore, a failover); it must start from 0."""

    def __init__(self, log: str = "revocation log") -> None:
        AuthorityError.__init__(
            self, f"the {log} is of another epoch (restored or failed over); start again from 0 with no epoch"
        )
