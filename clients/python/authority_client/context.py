"""The verified caller of the call being handled, for handlers to read."""

from __future__ import annotations

import contextvars

from authority_client.types import AccessClaims

_claims: contextvars.ContextVar[AccessClaims | None] = contextvars.ContextVar("authority_claims", default=None)


def current_claims() -> AccessClaims:
    """The claims of the token that authenticated the call being handled.

    Raises :class:`LookupError` outside a call or request an interceptor or middleware
    authenticated (for instance in a method or path configured to need no token).
    """
    claims = _claims.get()
    if claims is None:
        raise LookupError("no authenticated caller: this call was not checked for a token")
    return claims


def set_claims(claims: AccessClaims | None) -> contextvars.Token[AccessClaims | None]:
    """Sets the current claims; the interceptors call this, and reset them afterwards."""
    return _claims.set(claims)


def reset_claims(token: contextvars.Token[AccessClaims | None]) -> None:
    """Restores the claims as they were before :func:`set_claims`."""
    try:
        _claims.reset(token)
    except ValueError:  # a generator finalised in another context: clear this one instead
        _claims.set(None)
