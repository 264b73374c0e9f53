"""What the HTTP middlewares decide around the validator, shared by ASGI and WSGI.

:class:`HttpRules` says which paths answer without a token, which audience the others
require and what ``Retry-After`` a 503 carries. :class:`HttpGate` reads the request's
token through :mod:`authority_client.http.bearer` and turns what the validator raised
into a :class:`~authority_client.http.bearer.Denial`, classifying it with the gRPC
interceptors' own :class:`~authority_client.access.Gate`: a bad token, a token that cannot
be checked now, and a bug (which fails closed and is logged) are told apart in one place
for every surface.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Final

import grpc

from authority_client.access import Gate
from authority_client.http.bearer import Denial, Presented, invalid_token, read_token, unavailable
from authority_client.verify import InvalidToken

log = logging.getLogger(__name__)

# Claims reach the handler under this key: ASGI ``scope["state"]``, WSGI ``environ``.
CLAIMS_KEY: Final = "authority_claims"
DEFAULT_RETRY_AFTER: Final = 1


@dataclasses.dataclass(frozen=True)
class HttpRules:
    """Which requests need a token, for which audience.

    A public path is matched exactly, or, when it ends in ``/``, as a prefix
    (``/static/`` leaves everything below it open).
    """

    audience: str = "token-authority"
    public_paths: frozenset[str] = frozenset()
    # Seconds a client is told to wait (Retry-After) when the token cannot be checked.
    retry_after: int = DEFAULT_RETRY_AFTER

    def __post_init__(self) -> None:
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        if any(not path.startswith("/") for path in self.public_paths):
            raise ValueError("public paths start with /")

    @classmethod
    def of(cls, audience: str = "token-authority", *, public_paths: Iterable[str] = (),
           retry_after: int = DEFAULT_RETRY_AFTER) -> HttpRules:
        """Rules from plain collections."""
        return cls(audience, frozenset(public_paths), retry_after)

    def is_public(self, path: str) -> bool:
        """Whether ``path`` answers without a token."""
        if path in self.public_paths:
            return True
        return any(public.endswith("/") and path.startswith(public) for public in self.public_paths)


class HttpGate:
    """The middlewares' shared logic: what to check, and how a failure is answered."""

    def __init__(self, rules: HttpRules) -> None:
        self.rules = rules

    def check_for(self, path: str, authorization: Sequence[str | bytes], query: str | bytes) -> Presented | Denial | None:
        """None for a public path, else the token to check, or the refusal when it is not readable."""
        if self.rules.is_public(path):
            return None
        return read_token(authorization, query)

    def denial(self, error: Exception, presented: Presented) -> Denial:
        """The refusal for what the validator raised (a bug fails closed: 503, logged)."""
        refusal = Gate.refusal(error)
        if refusal.code is grpc.StatusCode.UNAUTHENTICATED and isinstance(error, InvalidToken):
            # The description carries the revocation cause, and the replacing device's name
            # where the validator knows it (remote mode, from ValidateToken).
            return invalid_token(error.reason, presented.scheme, error.cause, error.replaced_by_device_name)
        return unavailable(self.rules.retry_after)
