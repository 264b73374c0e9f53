"""What a standard OAuth consumer discovers: the signing keys (RFC 7517 JWK Set) and the
authorization server metadata (RFC 8414).

The JWK Set may be cached for half of ``key_publish_ahead``: a new key is published that
long before it signs, so a consumer that honours ``Cache-Control`` has fetched it before
the first token it signs arrives, with time to spare for a slow fetch. With no
publish-ahead time a new key signs at once, and the set must not be cached at all.
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from typing import Any

from aiohttp import web

from authority.app import Authority
from authority.config import Settings, is_https_url

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
INTROSPECT_PATH = "/introspect"
REVOKE_PATH = "/revoke"
JWK_SET_TYPE = "application/jwk-set+json"
# The metadata changes only with the settings, that is with a restart.
METADATA_MAX_AGE = 300


def jwks_cache_control(key_publish_ahead: int) -> str:
    """The ``Cache-Control`` of the JWK Set for this publish-ahead time."""
    max_age = key_publish_ahead // 2
    return f"public, max-age={max_age}" if max_age > 0 else "no-cache"


def metadata_document(settings: Settings) -> dict[str, Any] | None:
    """The RFC 8414 metadata, or None when the issuer is not an https URL (RFC 8414 §2
    requires one, so nothing standard could be served)."""
    if not is_https_url(settings.issuer):
        return None
    base = (settings.public_url or settings.issuer).rstrip("/")
    return {
        "issuer": settings.issuer,
        "jwks_uri": base + JWKS_PATH,
        "introspection_endpoint": base + INTROSPECT_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        # Tokens are issued over gRPC (IssueToken), never through an OAuth grant here.
        "grant_types_supported": [],
        "response_types_supported": [],
    }


def metadata_paths(issuer: str) -> list[str]:
    """Where the metadata is served: the well-known path, and for an issuer with a path
    component, that path after it too, where RFC 8414 §3.1 has clients look."""
    paths = [METADATA_PATH]
    if is_https_url(issuer):
        issuer_path = urllib.parse.urlsplit(issuer).path.rstrip("/")
        if issuer_path:
            paths.append(METADATA_PATH + issuer_path)
    return paths


class Discovery:
    """The JWKS and metadata endpoints of one authority; both public."""

    def __init__(self, authority: Authority) -> None:
        self._authority = authority
        self._cache_control = jwks_cache_control(authority.settings.key_publish_ahead)
        self._metadata = metadata_document(authority.settings)
        # The key ring the ETag below was computed for; recomputed when keys change.
        self._etag_for: object = None
        self._etag = ""

    def explain_metadata(self) -> None:
        """Logs once, at start, why the metadata is not served when it is not."""
        if self._metadata is None:
            log.info(
                "not serving %s: the issuer %r is not an https URL, which RFC 8414 requires "
                "(set AUTHORITY_ISSUER to one, and AUTHORITY_PUBLIC_URL when the endpoints live elsewhere)",
                METADATA_PATH, self._authority.settings.issuer,
            )

    async def jwks(self, request: web.Request) -> web.Response:
        """``GET /.well-known/jwks.json``: the same set as GetSigningKeys."""
        keyring = self._authority.codec.keyring
        body = keyring.jwks_json
        if self._etag_for is not keyring:
            self._etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
            self._etag_for = keyring
        headers = {"Cache-Control": self._cache_control, "ETag": self._etag}
        presented = (tag.strip() for value in request.headers.getall("If-None-Match", ()) for tag in value.split(","))
        if self._etag in presented:
            return web.Response(status=304, headers=headers)
        return web.Response(text=body, content_type=JWK_SET_TYPE, headers=headers)

    async def metadata(self, request: web.Request) -> web.Response:
        """``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata, or 404."""
        if self._metadata is None:
            raise web.HTTPNotFound(reason="no metadata: the issuer is not an https URL (RFC 8414 §2)")
        return web.json_response(self._metadata, headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"})
