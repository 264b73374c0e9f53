"""ASGI middleware (Starlette, FastAPI, any ASGI app) that admits only requests with a valid
bearer token, or a valid device-bound token (``Authorization: DPoP <token>``) with its proof.

::

    validator = AsyncValidator(AsyncAuthorityClient(target), ValidationSettings(mode=Mode.LOCAL))
    app = Starlette(routes=..., lifespan=...)  # start the validator in the lifespan
    app.add_middleware(BearerAuthMiddleware, validator=validator, audience="orders",
                       public_paths=["/healthz"])

A refused request gets the answer of :mod:`authority_client.http.bearer` (401 or 400 with
``WWW-Authenticate``, 503 with ``Retry-After``) and never reaches the app. An admitted
one's :class:`~authority_client.types.AccessClaims` are in ``scope["state"]["authority_claims"]``
(Starlette: ``request.state.authority_claims``) and :func:`authority_client.current_claims`.
WebSocket handshakes are checked alike: a refused one gets the same HTTP answer where the
server offers the ``websocket.http.response`` extension (uvicorn does), and is otherwise
closed before it is accepted (code 1008, policy violation; servers answer the handshake
403). Lifespan events pass through.

A DPoP proof (one ``DPoP`` header) is checked against the request's method and its URL:
``external_origin`` (set it behind a proxy; see :mod:`authority_client.http.gate`) or the
scope's scheme and ``Host`` header, and the path as sent (``raw_path``). A WebSocket
handshake is a GET: its proof names ``http``/``https`` for ``ws``/``wss``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from authority_client.context import reset_claims, set_claims
from authority_client.http.bearer import DEFAULT_REALM, Denial
from authority_client.http.gate import CLAIMS_KEY, DEFAULT_RETRY_AFTER, HttpGate, HttpRules
from authority_client.validation import AsyncValidator

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# RFC 6455 §7.4.1: the endpoint refuses a message (here, a handshake) that violates its policy.
POLICY_VIOLATION = 1008
# The handshake of a WebSocket is an HTTP request to the same origin.
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


class BearerAuthMiddleware:
    """Checks every HTTP request and WebSocket handshake with ``validator`` before ``app`` runs."""

    def __init__(
        self,
        app: App,
        validator: AsyncValidator,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or ()
        authorization = [value for name, value in headers if name.lower() == b"authorization"]
        dpop = [value for name, value in headers if name.lower() == b"dpop"]
        check = self._gate.check_for(scope.get("path", "/"), authorization, scope.get("query_string", b""), dpop)
        if check is None:
            await self.app(scope, receive, send)
            return
        if isinstance(check, Denial):
            await _refuse(scope, send, check)
            return
        proof = self._gate.proof(check, scope.get("method", "GET"), *_address(scope, headers))
        if isinstance(proof, Denial):
            await _refuse(scope, send, proof)
            return
        try:
            claims = await self._validator.validate(check.token, self._gate.rules.audience, proof)
        except Exception as error:
            await _refuse(scope, send, self._gate.denial(error, check))
            return
        # A copy: the server's scope (and a lifespan state shared by requests) stays untouched.
        admitted = {**scope, "state": {**(scope.get("state") or {}), CLAIMS_KEY: claims}}
        reset = set_claims(claims)
        try:
            await self.app(admitted, receive, send)
        finally:
            reset_claims(reset)


def _address(scope: Scope, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str, str]:
    """The request's scheme, host and path (percent-encoded as sent, no query)."""
    scheme = str(scope.get("scheme", "http"))
    host = next((value.decode("latin-1") for name, value in headers if name.lower() == b"host"), "")
    if not host and scope.get("server"):
        name, port = scope["server"]
        host = f"{name}:{port}" if port is not None else str(name)
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path:
        path = raw_path.decode("latin-1").partition("?")[0]
    else:
        path = urllib.parse.quote(scope.get("root_path", "") + scope.get("path", "/"))
    return _HTTP_SCHEMES.get(scheme, scheme), host, path


async def _refuse(scope: Scope, send: Send, denial: Denial) -> None:
    prefix = "http.response"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": denial.description})
            return
        prefix = "websocket.http.response"
    body = denial.body
    headers = [(name.encode(), value.encode()) for name, value in denial.headers]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": f"{prefix}.start", "status": denial.status, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body})
