"""Client interceptors that attach the access token, and a DPoP proof for a bound one, to every call.

The token comes from a callable asked on each call, so a caller that refreshes its
token just returns the new one. :class:`BearerToken` is for grpc channels
(``grpc.intercept_channel(channel, BearerToken(get_token))``) and
:class:`AsyncBearerToken` for grpc.aio ones (``grpc.aio.insecure_channel(target,
interceptors=[AsyncBearerToken(get_token)])``), where the callable may be async.

A device whose tokens are bound to its key (RFC 9449; signed in with a proof, see
:class:`~authority_client.proof.DeviceKey`) gives the key and the name of the service
it calls, as that service's interceptor is configured (``external_authority``)::

    BearerToken(get_token, device_key=key, authority="orders.example.com")

A bound token then goes as ``authorization: DPoP <token>`` with a fresh proof in the
``dpop`` metadata on every call: ``htm`` ``POST``, ``htu``
``https://orders.example.com/<package.Service>/<Method>``, ``ath`` the token's hash. A
token is bound when its payload carries ``cnf`` (read without verifying it: the server
verifies; the client only picks the scheme), so a bearer token from the same callable
still goes as ``Bearer``. A bound token without a key is sent as ``Bearer`` too, and
the server refuses it, PROOF_REQUIRED.
"""

from __future__ import annotations

import base64
import binascii
import collections
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from authority_client.access import AUTHORIZATION_HEADER
from authority_client.proof import DPOP_HEADER, DPOP_SCHEME, DeviceKey, grpc_proof_uri


def is_bound(token: str) -> bool:
    """Whether ``token``'s payload (not verified) carries ``cnf``: a token bound to a key."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return False
    return isinstance(payload, dict) and "cnf" in payload


class _Attach:
    """What both flavours attach: the scheme, the token, and for a bound token its proof."""

    def __init__(self, device_key: DeviceKey | None, authority: str) -> None:
        if device_key is not None and not authority:
            raise ValueError("a device key needs the authority name its proofs are made for")
        self._device_key = device_key
        self._authority = authority
        # The last token seen and whether it is bound: one decode per token, not per call.
        self._last: tuple[str, bool] = ("", False)

    def _bound(self, token: str) -> bool:
        last = self._last
        if last[0] != token:
            last = (token, is_bound(token))
            self._last = last
        return last[1]

    def metadata(self, metadata: Any, method: str | bytes, token: str) -> list[tuple[str, Any]]:
        replaced = (AUTHORIZATION_HEADER, DPOP_HEADER)
        kept = [(key, value) for key, value in (metadata or ()) if key.lower() not in replaced]
        if self._device_key is None or not self._bound(token):
            return [*kept, (AUTHORIZATION_HEADER, f"Bearer {token}")]
        name = method.decode() if isinstance(method, bytes) else method
        proof = self._device_key.proof("POST", grpc_proof_uri(self._authority, name), access_token=token)
        return [*kept, (AUTHORIZATION_HEADER, f"{DPOP_SCHEME} {token}"), (DPOP_HEADER, proof)]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends ``token()`` as the access token of every call on a grpc channel; with
    ``device_key`` and ``authority``, a bound token as DPoP with a fresh proof."""

    def __init__(self, token: Callable[[], str], *, device_key: DeviceKey | None = None, authority: str = "") -> None:
        self._token = token
        self._attach = _Attach(device_key, authority)

    def _details(self, details: Any) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            self._attach.metadata(details.metadata, details.method, self._token()),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


class AsyncBearerToken(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Sends ``token()`` (a plain or an async callable) as the access token on a grpc.aio
    channel; with ``device_key`` and ``authority``, a bound token as DPoP with a fresh proof."""

    def __init__(
        self, token: Callable[[], str] | Callable[[], Awaitable[str]], *, device_key: DeviceKey | None = None,
        authority: str = "",
    ) -> None:
        self._token = token
        self._attach = _Attach(device_key, authority)

    async def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        token = self._token()
        if inspect.isawaitable(token):
            token = await token
        assert isinstance(token, str)
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*self._attach.metadata(details.metadata, details.method, token)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(await self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(await self._details(client_call_details), request_iterator)
