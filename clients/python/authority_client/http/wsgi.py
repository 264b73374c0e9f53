"""WSGI middleware (Flask, Django, any WSGI app) that admits only requests with a valid
bearer token.

::

    validator = Validator(AuthorityClient(target), ValidationSettings(mode=Mode.LOCAL)).start()
    app.wsgi_app = BearerAuthMiddleware(app.wsgi_app, validator, audience="orders",
                                        public_paths=["/healthz"])  # Flask
    application = BearerAuthMiddleware(get_wsgi_application(), validator)  # Django

A refused request gets the answer of :mod:`authority_client.http.bearer` (401 or 400 with
``WWW-Authenticate``, 503 with ``Retry-After``) and never reaches the app. An admitted
one's :class:`~authority_client.types.AccessClaims` are in ``environ["authority_claims"]``
(read them with :func:`claims_of`), and :func:`authority_client.current_claims` returns
them while the app handles the request, so a Flask view may do
``g.claims = current_claims()`` or read them wherever it needs them.
"""

from __future__ import annotations

import http
from collections.abc import Callable, Iterable
from typing import Any

from authority_client.context import reset_claims, set_claims
from authority_client.http.bearer import Denial
from authority_client.http.gate import CLAIMS_KEY, DEFAULT_RETRY_AFTER, HttpGate, HttpRules
from authority_client.types import AccessClaims
from authority_client.validation import Validator

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def claims_of(environ: Environ) -> AccessClaims:
    """The claims the middleware admitted this request with; :class:`LookupError` on a public path."""
    claims = environ.get(CLAIMS_KEY)
    if not isinstance(claims, AccessClaims):
        raise LookupError("no authenticated caller: this request was not checked by the middleware")
    return claims


class BearerAuthMiddleware:
    """Checks every request with ``validator`` (a started, blocking :class:`Validator`) before ``app`` runs."""

    def __init__(
        self,
        app: WsgiApp,
        validator: Validator,
        *,
        audience: str = "token-authority",
        public_paths: Iterable[str] = (),
        retry_after: int = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.app = app
        self._validator = validator
        self._gate = HttpGate(HttpRules.of(audience, public_paths=public_paths, retry_after=retry_after))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # WSGI servers hand over one HTTP_AUTHORIZATION; repeated headers arrive joined by
        # commas, which the header rules recognise.
        authorization = environ.get("HTTP_AUTHORIZATION")
        check = self._gate.check_for(
            environ.get("PATH_INFO") or "/", [] if authorization is None else [authorization],
            environ.get("QUERY_STRING", ""),
        )
        if check is None:
            return self.app(environ, start_response)
        if isinstance(check, Denial):
            return _refuse(start_response, check)
        try:
            claims = self._validator.validate(check.token, self._gate.rules.audience)
        except Exception as error:
            return _refuse(start_response, self._gate.denial(error, check))
        environ[CLAIMS_KEY] = claims
        reset = set_claims(claims)
        try:
            return self.app(environ, start_response)
        finally:
            reset_claims(reset)


def _refuse(start_response: StartResponse, denial: Denial) -> list[bytes]:
    body = denial.body
    status = f"{denial.status} {http.HTTPStatus(denial.status).phrase}"
    start_response(status, [*denial.headers, ("content-length", str(len(body)))])
    return [body]
