"""WSGI middleware (Flask, Django, any WSGI app) that admits only requests with a valid
bearer token, or a valid device-bound token (``Authorization: DPoP <token>``) with its proof.

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

A DPoP proof (one ``DPoP`` header) is checked against ``REQUEST_METHOD`` and the request's
URL: ``external_origin`` (set it behind a proxy; see :mod:`authority_client.http.gate`) or
``wsgi.url_scheme`` and the ``Host`` header, and the path as the server received it (its
``RAW_URI`` or ``REQUEST_URI`` when it gives one, else ``SCRIPT_NAME`` and ``PATH_INFO``
quoted again, with the ``SCRIPT_NAME`` from before Werkzeug's ``ProxyFix`` added a
forwarded prefix: that prefix belongs in ``external_origin``). WSGI joins repeated
headers with commas, so two ``DPoP`` headers arrive as one value with a comma, which no
proof holds: refused, BAD_PROOF.
"""

from __future__ import annotations

import http
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from authority_client.context import reset_claims, set_claims
from authority_client.http.bearer import DEFAULT_REALM, Denial
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
        external_origin: str = "",
        realm: str = DEFAULT_REALM,
    ) -> None:
        self.app = app
        self._validator = validator
        self._gate = HttpGate(HttpRules.of(audience, public_paths=public_paths, retry_after=retry_after,
                                           external_origin=external_origin, realm=realm))

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # WSGI servers hand over one HTTP_AUTHORIZATION; repeated headers arrive joined by
        # commas, which the header rules recognise.
        authorization = environ.get("HTTP_AUTHORIZATION")
        dpop = environ.get("HTTP_DPOP")
        check = self._gate.check_for(
            environ.get("PATH_INFO") or "/", [] if authorization is None else [authorization],
            environ.get("QUERY_STRING", ""), [] if dpop is None else [dpop],
        )
        if check is None:
            return self.app(environ, start_response)
        if isinstance(check, Denial):
            return _refuse(start_response, check)
        proof = self._gate.proof(check, environ.get("REQUEST_METHOD", "GET"), *_address(environ))
        if isinstance(proof, Denial):
            return _refuse(start_response, proof)
        try:
            claims = self._validator.validate(check.token, self._gate.rules.audience, proof)
        except Exception as error:
            return _refuse(start_response, self._gate.denial(error, check))
        environ[CLAIMS_KEY] = claims
        reset = set_claims(claims)
        try:
            body = self.app(environ, start_response)
        finally:
            reset_claims(reset)
        # A body already made is handed on as it is (a file wrapper keeps its sendfile);
        # one still to be produced, a generator's, is produced with the claims readable.
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(body, (list, tuple)) or (isinstance(file_wrapper, type) and isinstance(body, file_wrapper)):
            return body
        return _Claimed(body, claims)


class _Claimed:
    """An app's body, produced with :func:`~authority_client.current_claims` answering: a
    streamed body runs after the app has returned, as the server iterates it."""

    def __init__(self, body: Iterable[bytes], claims: AccessClaims) -> None:
        self._body = body
        self._claims = claims

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._body)
        while True:
            reset = set_claims(self._claims)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                reset_claims(reset)
            yield chunk

    def close(self) -> None:
        """Closes the app's body, as PEP 3333 asks of the server, with the claims readable."""
        close = getattr(self._body, "close", None)
        if close is not None:
            reset = set_claims(self._claims)
            try:
                close()
            finally:
                reset_claims(reset)


def _address(environ: Environ) -> tuple[str, str, str]:
    """The request's scheme, host and path (percent-encoded as sent, no query)."""
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        path = raw.partition("?")[0]
    else:
        # As the server received it, as RAW_URI would say: before Werkzeug's ProxyFix put
        # X-Forwarded-Prefix in SCRIPT_NAME (external_origin holds that prefix).
        original = environ.get("werkzeug.proxy_fix.orig")
        script = original.get("SCRIPT_NAME") if isinstance(original, dict) else None
        if not isinstance(script, str):
            script = environ.get("SCRIPT_NAME", "")
        path = urllib.parse.quote(script + environ.get("PATH_INFO", ""), encoding="latin-1")
    return str(environ.get("wsgi.url_scheme", "http")), str(host), path


def _refuse(start_response: StartResponse, denial: Denial) -> list[bytes]:
    body = denial.body
    status = f"{denial.status} {http.HTTPStatus(denial.status).phrase}"
    start_response(status, [*denial.headers, ("content-length", str(len(body)))])
    return [body]
