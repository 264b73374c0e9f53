"""What the HTTP middlewares decide around the validator, shared by ASGI and WSGI.

:class:`HttpRules` says which paths answer without a token, which audience the others
require, what ``Retry-After`` a 503 carries, which ``realm`` a ``Bearer`` challenge names
and, for apps behind a proxy, the origin clients address (``external_origin``), which a
DPoP proof's ``htu`` is checked against.
:class:`HttpGate` reads the request's token through :mod:`authority_client.http.bearer`
and turns what the validator raised into a :class:`~authority_client.http.bearer.Denial`,
classifying it with the gRPC interceptors' own :class:`~authority_client.access.Gate`: a
bad token, a token that cannot be checked now, and a bug (which fails closed and is
logged) are told apart in one place for every surface.

A DPoP proof is checked against the request's method and its URL as the client
addressed it: scheme, host and path, no query (RFC 9449 §4.3). Without
``external_origin`` the scheme and host are the request's own (its ``Host`` header), which
is right for an app reached directly; behind a proxy or load balancer that rewrites
them, set ``external_origin="https://orders.example.com"`` and only the path is taken
from the request. Behind a proxy that also strips a path prefix (clients address
``/orders/items``, the app receives ``/items``), give the prefix too:
``external_origin="https://example.com/orders"``. Setting it is also what stops a proof
made for another host from being admitted here by a client that sends that host's name in
``Host``.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Final

import grpc

from authority_client.access import Gate
from authority_client.http.bearer import (
    DEFAULT_REALM,
    Denial,
    Presented,
    check_realm,
    invalid_token,
    read_token,
    unavailable,
)
from authority_client.proof import Proof, normalize_uri
from authority_client.proof_uri import is_host
from authority_client.verify import InvalidReason, InvalidToken

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
    # ``scheme://host[:port]`` clients address (behind a proxy), optionally with the path
    # prefix a proxy strips before the app sees the request; "" takes the request's own.
    external_origin: str = ""
    # The protection space every Bearer challenge names: printable ASCII.
    realm: str = DEFAULT_REALM

    def __post_init__(self) -> None:
        if self.retry_after < 0:
            raise ValueError("retry_after must not be negative")
        check_realm(self.realm)
        if any(not path.startswith("/") for path in self.public_paths):
            raise ValueError("public paths start with /")
        if self.external_origin:
            _check_external_origin(self.external_origin)

    @classmethod
    def of(cls, audience: str = "token-authority", *, public_paths: Iterable[str] = (),
           retry_after: int = DEFAULT_RETRY_AFTER, external_origin: str = "", realm: str = DEFAULT_REALM) -> HttpRules:
        """Rules from plain collections."""
        return cls(audience, frozenset(public_paths), retry_after, external_origin, realm)

    def request_uri(self, scheme: str, host: str, path: str) -> str:
        """The URL a proof's ``htu`` is checked against: ``external_origin`` (or the
        request's scheme and host) and the request's path as sent (percent-encoded); a
        path prefix in ``external_origin`` comes before it."""
        if self.external_origin:
            return self.external_origin.rstrip("/") + path
        return f"{scheme}://{host}{path}"

    def is_public(self, path: str) -> bool:
        """Whether ``path`` answers without a token."""
        if path in self.public_paths:
            return True
        return any(public.endswith("/") and path.startswith(public) for public in self.public_paths)


def _check_external_origin(origin: str) -> None:
    """Refuses (ValueError, without quoting it) an ``external_origin`` that is not
    ``scheme://host[:port][/prefix]`` as clients address the app."""
    try:
        if not isinstance(origin, str):
            raise ValueError(origin)
        parts = urllib.parse.urlsplit(origin)
        parts.port  # noqa: B018 - raises for a port that is no number
        normalize_uri(origin)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc \
            or parts.query or parts.fragment or "?" in origin or "#" in origin:
        raise ValueError("external_origin is scheme://host[:port], with an optional /path prefix, as clients "
                         "address the app")


class HttpGate:
    """The middlewares' shared logic: what to check, and how a failure is answered."""

    def __init__(self, rules: HttpRules) -> None:
        self.rules = rules

    def check_for(
        self, path: str, authorization: Sequence[str | bytes], query: str | bytes, dpop: Sequence[str | bytes] = ()
    ) -> Presented | Denial | None:
        """None for a public path, else the token to check, or the refusal when it is not readable."""
        if self.rules.is_public(path):
            return None
        presented = read_token(authorization, query, dpop=dpop)
        return self._in_realm(presented) if isinstance(presented, Denial) else presented

    def proof(self, presented: Presented, method: str, scheme: str, host: str, path: str) -> Proof | Denial | None:
        """The proof that came with ``presented`` and the request it came with (None: a bearer
        token); the refusal when the request's own URL is not one a proof can name."""
        if presented.proof is None:
            return None
        if not self.rules.external_origin and not is_host(host):
            return self._in_realm(invalid_token(InvalidReason.BAD_PROOF))
        uri = self.rules.request_uri(scheme, host, path)
        try:
            normalize_uri(uri)
        except ValueError:
            # A Host header no URL can hold: no proof can match it.
            return self._in_realm(invalid_token(InvalidReason.BAD_PROOF))
        return presented.proof_for(method, uri)

    def denial(self, error: Exception, presented: Presented) -> Denial:
        """The refusal for what the validator raised (a bug fails closed: 503, logged)."""
        refusal = Gate.refusal(error)
        if refusal.code is grpc.StatusCode.UNAUTHENTICATED and isinstance(error, InvalidToken):
            # The description carries the revocation cause, and the replacing device's name
            # where the validator knows it (remote mode, from ValidateToken).
            return self._in_realm(
                invalid_token(error.reason, presented.scheme, error.cause, error.replaced_by_device_name))
        return unavailable(self.rules.retry_after)

    def _in_realm(self, denial: Denial) -> Denial:
        return dataclasses.replace(denial, realm=self.rules.realm)
