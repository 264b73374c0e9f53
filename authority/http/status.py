"""The one map from errors to HTTP answers on the HTTP port, and the answers' shape.

Errors are JSON objects as RFC 6749 §5.2 draws them (``{"error": "invalid_request",
"error_description": "..."}``), which RFC 7009 and RFC 7662 reuse; a refused caller also
gets the ``WWW-Authenticate`` challenge of RFC 6750 §3. A domain error's message never
holds a secret, so it is the description. Anything unexpected is a bug: the traceback is
logged here, on the server, and the caller gets 500 with a fixed text.

This is the HTTP twin of :mod:`authority.api.status`; the gRPC codes stay there.
"""

from __future__ import annotations

import logging

from aiohttp import web

from authority.errors import (
    AuthorityError,
    CallerNotPermitted,
    CallerUnauthenticated,
    InvalidArgument,
    StoreUnavailable,
    TokenRejected,
)

log = logging.getLogger(__name__)

INTERNAL_DESCRIPTION = "internal error"
# The Server header of every answer: a caller needs neither aiohttp's name nor its version.
SERVER_NAME = "token-authority"
# How soon a caller turned away by an unavailable store or a stale view may try again.
RETRY_AFTER_SECONDS = 1


class HttpRefusal(Exception):
    """An answer that only HTTP has: an unknown path, a body that is not a form, a token
    type that cannot be revoked. ``error`` is the RFC 6749 §5.2 code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error


class CredentialsMissing(CallerUnauthenticated):
    """The request carried no caller credentials at all: RFC 6750 §3.1 says the challenge
    then names no error."""


# Status and RFC 6749 §5.2 / RFC 6750 §3.1 error code, by the nearest mapped class.
ANSWERS: dict[type[AuthorityError], tuple[int, str]] = {
    InvalidArgument: (400, "invalid_request"),
    TokenRejected: (400, "invalid_request"),
    CallerUnauthenticated: (401, "invalid_client"),
    CallerNotPermitted: (403, "insufficient_scope"),
    StoreUnavailable: (503, "temporarily_unavailable"),
}
# aiohttp's own refusals (routing, body size), as the error codes above.
_HTTP_ERRORS = {404: "not_found", 405: "invalid_request", 413: "invalid_request"}


def error_response(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    """An RFC 6749 §5.2 error object, never cached."""
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _challenge(error: AuthorityError) -> str:
    if isinstance(error, CredentialsMissing):
        return "Bearer"
    code = "insufficient_scope" if isinstance(error, CallerNotPermitted) else "invalid_token"
    return f'Bearer error="{code}", error_description="{_quoted(str(error))}"'


def _quoted(text: str) -> str:
    # A quoted-string (RFC 9110 §5.6.4) of printable ASCII: the texts are ours, but a
    # header must never carry a quote, a backslash or a line break unescaped.
    printable = "".join(c if " " <= c <= "~" else "?" for c in text)
    return printable.replace("\\", "\\\\").replace('"', '\\"')


def answer_for(error: BaseException, endpoint: str) -> web.Response:
    """The response for what a handler raised."""
    if isinstance(error, HttpRefusal):
        response = error_response(error.status, error.error, str(error))
        if error.status == 408:  # the rest of a body that came too slowly is not awaited
            response.force_close()
        return response
    if isinstance(error, web.HTTPException):
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(error.status, _HTTP_ERRORS.get(error.status, "invalid_request"), error.reason, headers)
    if isinstance(error, AuthorityError):
        for kind in type(error).__mro__:
            if kind in ANSWERS:
                status, code = ANSWERS[kind]
                headers = {}
                if status in (401, 403):
                    headers["WWW-Authenticate"] = _challenge(error)
                if status == 503:
                    headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
                return error_response(status, code, str(error), headers)
        log.error("%s: unmapped domain error %s", endpoint, type(error).__name__)
        return error_response(500, "server_error", INTERNAL_DESCRIPTION)
    log.error("%s failed", endpoint, exc_info=error)
    return error_response(500, "server_error", INTERNAL_DESCRIPTION)
