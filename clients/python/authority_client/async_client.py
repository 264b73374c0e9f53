"""``AsyncAuthorityClient``: every RPC of the token authority over a grpc.aio channel."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from authority_client import _convert
from authority_client.channel import ChannelSettings, call_metadata, warn_if_plaintext_api_key
from authority_client.errors import from_rpc_error
from authority_client.types import (
    IssuedToken, Proof, RevocationEvent, Session, SessionPolicy, SignInPreview, SigningKeySet, Validation,
)
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc


class AsyncAuthorityClient:
    """An asyncio client of the token authority; the twin of :class:`AuthorityClient`.

    Create it inside the event loop it will be used from (grpc.aio channels belong to one
    loop).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        api_key: str | None = None,
        channel: grpc.aio.Channel | None = None,
        settings: ChannelSettings = ChannelSettings(),
    ) -> None:
        if (target is None) == (channel is None):
            raise ValueError("give a target or a channel, not both")
        self.settings = settings
        self._owns_channel = channel is None
        if channel is None:
            assert target is not None
            options = settings.options()
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=options)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.channel = channel
        self._stub = authority_pb2_grpc.TokenAuthorityStub(channel)
        self._metadata = call_metadata(api_key)
        # Set by close(): a stream ended by it is no outage to report.
        self.closed = False
        warn_if_plaintext_api_key(target, credentials, api_key)

    async def _call(self, method: str, request: Any, timeout: float | None, refreshing: bool = False) -> Any:
        try:
            return await getattr(self._stub, method)(
                request, timeout=self.settings.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error, refreshing=refreshing) from None

    async def issue_token(
        self,
        subject: str,
        device_id: str,
        *,
        policy: SessionPolicy = SessionPolicy.DEFAULT,
        audience: str = "",
        claims: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        timeout: float | None = None,
        device_class: str = "",
        device_name: str = "",
        expected_replacements: Sequence[str] | None = None,
        proof: Proof | None = None,
    ) -> IssuedToken:
        """Signs ``subject`` in on ``device_id`` (of ``device_class``, shown as ``device_name``);
        never retried (a sign-in is not idempotent). With ``expected_replacements`` (from
        :meth:`preview_sign_in`) it commits only if it would sign out exactly those
        sessions, else raises :class:`~authority_client.errors.SignInAborted`.

        With ``proof`` (the DPoP proof the device sent with its sign-in request, see
        :class:`~authority_client.proof.DeviceKey`) the session is bound to the device's
        key: the result's ``token_type`` is ``"DPoP"``. A bad proof, or none where the
        authority requires one, raises :class:`~authority_client.errors.InvalidArgument`."""
        request = _convert.issue_request(subject, device_id, policy, audience, claims, ttl, proof)
        request.device_class, request.device_name = device_class, device_name
        _convert.guard(request, expected_replacements)
        return _convert.issued(await self._call("IssueToken", request, timeout))

    async def validate_token(
        self, token: str, audience: str = "", proof: Proof | None = None, *, timeout: float | None = None
    ) -> Validation:
        """The authority's verdict on ``token`` for ``audience`` (empty: its default).

        A bound token (``claims.key_thumbprint`` set) is valid only with the ``proof``
        that came with the request being authorised: without one the verdict is
        PROOF_REQUIRED, with a bad one BAD_PROOF. A proof is good for one request."""
        request = _convert.validate_request(token, audience, proof)
        return _convert.validation(await self._call("ValidateToken", request, timeout))

    async def revoke_token(
        self,
        *,
        token: str | None = None,
        session_id: str | None = None,
        subject: str | None = None,
        reason: str = "",
        timeout: float | None = None,
        refresh_token: str | None = None,
    ) -> int:
        """Logout by access token or refresh token (either works for the session's whole
        life), end one session, or sign a subject out; returns sessions ended."""
        request = _convert.revoke_request(token, session_id, subject, reason, refresh_token)
        response: pb.RevokeTokenResponse = await self._call("RevokeToken", request, timeout)
        return response.revoked_sessions

    async def preview_sign_in(
        self,
        subject: str,
        device_id: str,
        *,
        policy: SessionPolicy = SessionPolicy.DEFAULT,
        device_class: str = "",
        expected_replacements: Sequence[str] | None = None,
        timeout: float | None = None,
        proof: Proof | None = None,
    ) -> SignInPreview:
        """What :meth:`issue_token` would do now (allowed, and whom it would sign out); changes nothing.

        Where the authority requires proofs, give the sign-in's ``proof``: it is not
        checked (nor used up) here, only required."""
        request = _convert.guard(
            pb.IssueTokenRequest(subject=subject, device_id=device_id, policy=int(policy), device_class=device_class),  # type: ignore[arg-type]
            expected_replacements,
        )
        if proof is not None:
            request.proof.CopyFrom(_convert.proof_message(proof))
        return _convert.preview(await self._call("PreviewSignIn", request, timeout))

    async def revoke_other_sessions(
        self, *, token: str | None = None, session_id: str | None = None, reason: str = "",
        timeout: float | None = None, proof: Proof | None = None,
    ) -> int:
        """"Sign out my other devices": ends every other live session of the subject of the
        session that ``token`` (or ``session_id``) names; returns how many ended.

        A token bound to a device key (``token_type`` DPoP) needs the ``proof`` the device
        sent with the request that asked for this (with ``ath``); without a good one the
        call raises :class:`~authority_client.errors.InvalidArgument` and nothing changes."""
        request = _convert.other_sessions_request(token, session_id, reason, proof)
        response: pb.RevokeTokenResponse = await self._call("RevokeToken", request, timeout)
        return response.revoked_sessions

    async def refresh_token(
        self, refresh_token: str, proof: Proof | None = None, *, timeout: float | None = None
    ) -> IssuedToken:
        """A new token pair on the same session; raises :class:`RefreshRejected`.

        A bound session (``token_type`` DPoP) needs a ``proof`` by its device key, and a
        bearer session takes none: otherwise the refresh is refused and nothing changes."""
        request = _convert.refresh_request(refresh_token, proof)
        return _convert.issued(await self._call("RefreshToken", request, timeout, refreshing=True))

    async def list_sessions(self, subject: str, *, timeout: float | None = None) -> list[Session]:
        """The subject's live sessions, oldest first."""
        request = pb.ListSessionsRequest(subject=subject)
        return _convert.sessions(await self._call("ListSessions", request, timeout))

    async def get_signing_keys(self, *, timeout: float | None = None) -> str:
        """The authority's public keys as a JWK Set (JSON text)."""
        return (await self.get_signing_key_set(timeout=timeout)).jwks_json

    async def get_signing_key_set(self, *, timeout: float | None = None) -> SigningKeySet:
        """The authority's public keys with the set's version (see :class:`SigningKeySet`)."""
        return _convert.key_set(await self._call("GetSigningKeys", pb.GetSigningKeysRequest(), timeout))

    async def watch_revocations(
        self, after_sequence: int = 0, *, heartbeat_interval: float | None = None, epoch: str = ""
    ) -> AsyncGenerator[RevocationEvent, None]:
        """The revocation stream after ``after_sequence`` of ``epoch`` (the epoch of the event
        it came from; a position of another epoch fails with OUT_OF_RANGE); it has no deadline.

        Closing the iterator (or cancelling its task) cancels the call.
        """
        request = _convert.watch_request(after_sequence, heartbeat_interval, epoch)
        call = self._stub.WatchRevocations(request, metadata=self._metadata)
        try:
            async for message in call:
                yield _convert.revocation_event(message)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Closes the channel, unless it was given; a follower of this client's revocation
        stream then stops quietly (close the validator first to stop it at once)."""
        self.closed = True
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncAuthorityClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
