"""Token introspection (RFC 7662) and revocation (RFC 7009) over HTTP.

Both take an ``application/x-www-form-urlencoded`` body and make exactly the domain call
their gRPC twin makes: introspection asks the :class:`~authority.validation.Validator`
that answers ValidateToken (the same checks, reasons and staleness bound), revocation
calls :meth:`~authority.sessions.Sessions.revoke_token` (or ``revoke_refresh_token``)
as RevokeToken does. Every token
that does not validate, for whatever reason, is ``{"active": false}``: RFC 7662 §2.2
tells the caller nothing more, and neither do we. A view too old to vouch for any token
answers 503, never an answer that might be wrong.

Revoking a token this authority did not issue answers 200, as RFC 7009 §2.2 requires (an
unknown token is as revoked as it will ever be). A refresh token ends its session as an
access token does; which one was sent is told by its shape, not by ``token_type_hint``.

A device-bound token (RFC 9449 section 6.2) is introspected without a proof: the
introspecting resource server checks the proof that came to it, against the key this
answer names, ``cnf: {"jkt": <thumbprint>}``, with ``token_type: "DPoP"``. Every other check
is the validator's (:meth:`~authority.validation.Validator.introspect`).
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from authority.app import Authority
from authority.credentials import Role
from authority.errors import InvalidArgument, TokenRejected
from authority.http.callers import HttpCallers
from authority.http.status import HttpRefusal
from authority.ops.metrics import Metrics
from authority.tokens import AccessClaims, InvalidToken

FORM_TYPE = "application/x-www-form-urlencoded"
# Far more than a form of an 8 KiB token and a few short fields needs.
MAX_FORM_FIELDS = 8
INACTIVE: Mapping[str, Any] = {"active": False}
# RFC 6749 §7.1: unbound access tokens are bearer tokens; bound ones DPoP (RFC 9449 §6.2).
TOKEN_TYPE = "Bearer"
BOUND_TOKEN_TYPE = "DPoP"
# Refresh tokens are 256 random bits, base64url: 43 characters and never a dot, where an
# access token (a JWT) always has two.
_REFRESH_TOKEN_CHARS = 43
_NO_STORE = {"Cache-Control": "no-store"}
_IDENTITY = frozenset({"", "identity"})
# A percent sign that does not begin a %XX escape (RFC 3986 §2.1).
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
# The fields the endpoints read; an error names no other.
_FIELDS = frozenset({"token", "token_type_hint", "audience"})
# The most a body may hold (the application's client_max_size): forms of one token and a
# few fields.
MAX_BODY_BYTES = 64 * 1024


async def read_form(request: web.Request, timeout: float) -> dict[str, str]:
    """The request's form fields, each at most once (RFC 6749 §3.1); :class:`HttpRefusal`
    or :class:`InvalidArgument` (400) for any other body, 408 for one that has not all come
    within ``timeout`` seconds (``http_read_timeout``)."""
    if request.content_type != FORM_TYPE:
        raise HttpRefusal(400, "invalid_request", f"the body must be {FORM_TYPE}")
    if any(coding.strip().lower() not in _IDENTITY for coding in request.headers.getall("Content-Encoding", ())):
        # aiohttp reads a gzip stream cut short as the part that arrived, and an unknown
        # coding as plain bytes: a revocation could then answer 200 for a token it never
        # saw. A form of one token gains nothing from compression (RFC 9110 §15.5.16).
        raise HttpRefusal(415, "invalid_request", "the body must not be encoded (Content-Encoding)")
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        # Said by the header alone: waiting for a body that will be refused anyway would
        # hold the connection for http_read_timeout when less than declared is sent.
        raise HttpRefusal(413, "invalid_request", "the body is larger than the endpoint takes")
    try:
        async with asyncio.timeout(timeout):
            body = await request.read()  # at most the application's client_max_size, else 413
    except TimeoutError:
        raise HttpRefusal(408, "invalid_request", "the body did not arrive within http_read_timeout") from None
    except (web.RequestPayloadError, ConnectionResetError):
        # A body that ends before its length or its last chunk, a client gone: the
        # client's doing, never a 500.
        raise HttpRefusal(400, "invalid_request", "the body could not be read") from None
    if _BAD_ESCAPE.search(body):  # parse_qsl would keep "%zz" as it is, and read a token so
        raise HttpRefusal(400, "invalid_request", "the body is not a well-formed form")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body),
            encoding="utf-8", errors="strict", max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:  # not ASCII, not percent-encoded UTF-8, not NAME=VALUE pairs, too many
        raise HttpRefusal(400, "invalid_request", "the body is not a well-formed form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            if name not in _FIELDS:  # a name the client chose may be anything, a token too
                raise HttpRefusal(400, "invalid_request", "a form field must be given once")
            raise InvalidArgument(name, "must be given once")
        form[name] = value
    return form


def _required(form: Mapping[str, str], field: str) -> str:
    value = form.get(field, "")
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return value


def introspection(claims: AccessClaims) -> dict[str, Any]:
    """The RFC 7662 §2.2 answer for an active token; a bound one's names its key (RFC 9449 §6.2)."""
    answer: dict[str, Any] = {
        "active": True,
        "sub": claims.subject,
        "exp": claims.expires_at,
        "iat": claims.issued_at,
        "jti": claims.token_id,
        "aud": claims.audience,
        "iss": claims.issuer,
        "sid": claims.session_id,
        "device_id": claims.device_id,
        "token_type": TOKEN_TYPE,
    }
    if claims.key_thumbprint:
        answer["token_type"] = BOUND_TOKEN_TYPE
        answer["cnf"] = {"jkt": claims.key_thumbprint}
    return answer


def _looks_like_refresh_token(token: str) -> bool:
    return len(token) == _REFRESH_TOKEN_CHARS and "." not in token


class TokenEndpoints:
    """``POST /introspect`` (verifier role) and ``POST /revoke`` (issuer role)."""

    def __init__(self, authority: Authority, callers: HttpCallers, metrics: Metrics) -> None:
        self._validator = authority.validator
        self._sessions = authority.sessions
        self._callers = callers
        self._read_timeout = authority.settings.http_read_timeout
        # Introspections count in the same validation outcomes as ValidateToken.
        self._validations = metrics.validation_outcomes

    async def introspect(self, request: web.Request) -> web.Response:
        """RFC 7662: ``token`` (and our ``audience``, ValidateToken's default when absent)."""
        self._callers.admit(request, Role.VERIFIER, "introspect")
        form = await read_form(request, self._read_timeout)
        token = _required(form, "token")
        try:
            claims = self._validator.introspect(token, form.get("audience", ""))
        except InvalidToken as invalid:
            self._validations[invalid.reason].inc()
            return web.json_response(INACTIVE, headers=_NO_STORE)
        self._validations[None].inc()
        return web.json_response(introspection(claims), headers=_NO_STORE)

    async def revoke(self, request: web.Request) -> web.Response:
        """RFC 7009: ``token``, and a ``token_type_hint`` that, being a hint, decides nothing."""
        caller = self._callers.admit(request, Role.ISSUER, "revoke")
        # Named in the session event log, as a RevokeToken's caller is.
        name = "" if caller is None else caller.name
        form = await read_form(request, self._read_timeout)
        token = _required(form, "token")
        try:
            if _looks_like_refresh_token(token):
                # 0 sessions for a token the store does not know: 200 all the same.
                await self._sessions.revoke_refresh_token(token, caller=name)
            else:
                await self._sessions.revoke_token(token, caller=name)
        except TokenRejected:
            pass  # not a token this authority issued: RFC 7009 §2.2 answers 200 all the same
        return web.Response(status=200, headers=_NO_STORE)
