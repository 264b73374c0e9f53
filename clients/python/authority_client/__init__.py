"""What consumer services of the token authority install.

- :class:`AuthorityClient` / :class:`AsyncAuthorityClient`: every RPC with Python types
  and the errors of :mod:`authority_client.errors`.
- :class:`AuthInterceptor` / :class:`AsyncAuthInterceptor`: server interceptors that
  admit only calls with a valid bearer token, checked by a :class:`Validator` /
  :class:`AsyncValidator` in remote or local mode; handlers read the caller with
  :func:`current_claims`.
- :class:`BearerToken` / :class:`AsyncBearerToken`: client interceptors that send one.
- :class:`DeviceKey`: a device's proof key, signing DPoP proofs (RFC 9449) for
  device-bound tokens; :class:`ProofChecker` checks them (:mod:`authority_client.proof`).
- :mod:`authority_client.local`: local mode's signing keys, revocation mirror and the
  follower of the revocation stream.

The generated gRPC stubs for ``authority.v1`` live in :mod:`authority_client.v1`. An
in-process authority for a consumer's own tests is the server's: :mod:`authority.testing`.

Nothing in this package imports the server package :mod:`authority` (import-linter keeps
it so): consumers install the client alone.
"""

from authority_client.access import AccessRules
from authority_client.async_client import AsyncAuthorityClient
from authority_client.bearer import AsyncBearerToken, BearerToken
from authority_client.channel import ChannelSettings, PlaintextApiKeyWarning
from authority_client.client import AuthorityClient
from authority_client.context import current_claims
from authority_client.interceptors import AsyncAuthInterceptor, AuthInterceptor
from authority_client.local.follow import FollowSettings
from authority_client.proof import (
    DeviceKey,
    InvalidProof,
    Proof,
    ProofChecker,
    grpc_proof_uri,
    jwk_thumbprint,
    normalize_uri,
)
from authority_client.types import (
    AccessClaims,
    InvalidReason,
    IssuedToken,
    RevocationEvent,
    RevocationEventKind,
    Session,
    SessionPolicy,
    SignInPreview,
    SigningKeySet,
    Validation,
)
from authority_client.validation import AsyncValidator, Mode, ValidationSettings, Validator

__all__ = [
    "AccessClaims",
    "AccessRules",
    "AsyncAuthInterceptor",
    "AsyncAuthorityClient",
    "AsyncBearerToken",
    "AsyncValidator",
    "AuthInterceptor",
    "AuthorityClient",
    "BearerToken",
    "ChannelSettings",
    "DeviceKey",
    "FollowSettings",
    "InvalidProof",
    "InvalidReason",
    "IssuedToken",
    "Mode",
    "PlaintextApiKeyWarning",
    "Proof",
    "ProofChecker",
    "RevocationEvent",
    "RevocationEventKind",
    "Session",
    "SessionPolicy",
    "SignInPreview",
    "SigningKeySet",
    "Validation",
    "ValidationSettings",
    "Validator",
    "current_claims",
    "grpc_proof_uri",
    "jwk_thumbprint",
    "normalize_uri",
]
