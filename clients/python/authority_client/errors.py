"""The errors the client raises in place of ``grpc.RpcError``.

Every failed call becomes one of these, translated at one seam (:func:`from_rpc_error`);
the gRPC status code and the server's message travel along as ``code`` and ``details``::

    AuthorityError
    ├── Unavailable           UNAVAILABLE: the authority (or its database) cannot be reached
    ├── DeadlineExceeded      DEADLINE_EXCEEDED: no answer within the call's deadline
    ├── Unauthenticated       UNAUTHENTICATED: this caller was not recognised
    │   └── RefreshRejected   a refresh token that is unknown, ended or already used
    ├── PermissionDenied      PERMISSION_DENIED: this caller may not make this call
    ├── InvalidArgument       INVALID_ARGUMENT: the request was refused as it stands
    ├── SessionLimitReached   FAILED_PRECONDITION: a REJECT sign-in while other devices are signed in
    ├── ResourceExhausted     RESOURCE_EXHAUSTED: too many calls, or a watcher fell too far behind
    └── Internal              any other status: the authority failed unexpectedly
"""

from __future__ import annotations

import grpc


class AuthorityError(Exception):
    """A call to the token authority failed."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        super().__init__(details or self.__class__.__name__)
        self.details = details
        if code is not None:
            self.code = code


class Unavailable(AuthorityError):
    """The authority, or the database behind it, cannot be reached right now."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(AuthorityError):
    """The authority did not answer within the call's deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(AuthorityError):
    """The authority did not recognise this caller."""

    code = grpc.StatusCode.UNAUTHENTICATED


class RefreshRejected(Unauthenticated):
    """The refresh token is unknown, its session ended, or it was already used."""


class PermissionDenied(AuthorityError):
    """This caller may not make this call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(AuthorityError):
    """The request was refused as it stands; ``details`` names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class SessionLimitReached(AuthorityError):
    """A sign-in under policy REJECT while the subject is signed in elsewhere."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class SignInAborted(AuthorityError):
    """A guarded sign-in (``expected_replacements``) would sign out other sessions than
    expected; nothing changed: preview again and ask the user again."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(AuthorityError):
    """Too many calls, or a revocation watcher fell too far behind."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(AuthorityError):
    """The authority failed in a way the caller cannot fix."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[AuthorityError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: SessionLimitReached,
    grpc.StatusCode.ABORTED: SignInAborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(error: grpc.RpcError, *, refreshing: bool = False) -> AuthorityError:
    """The :class:`AuthorityError` for a failed call (``refreshing``: it was RefreshToken)."""
    # Both grpc's and grpc.aio's errors carry these; neither shares a base that types them.
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = (error.details() if callable(getattr(error, "details", None)) else None) or ""
    if not isinstance(code, grpc.StatusCode):
        return Internal(str(details))
    if refreshing and code is grpc.StatusCode.UNAUTHENTICATED:
        return RefreshRejected(details)
    return _BY_CODE.get(code, Internal)(str(details), code)
