"""The admin command line's one way to a running authority: the generated gRPC stubs.

Everything the admin commands need from the authority goes through :class:`AdminClient`,
in plain dataclasses, and every gRPC failure leaves as :class:`AdminCallFailed`. When the
client package's ``AuthorityClient`` is ready, this module is the only one to change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

import grpc
from authority_client._convert import json_numbers
from authority_client.reasons import refusal_text
from authority_client.types import InvalidReason, RevocationCause
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from authority.cli.connection import Connection

POLICIES = {"replace": pb.SESSION_POLICY_REPLACE, "reject": pb.SESSION_POLICY_REJECT}


class AdminCallFailed(Exception):
    """A call to the authority failed; ``code`` is the gRPC status name."""

    def __init__(self, code: str, details: str, text: str | None = None) -> None:
        super().__init__(text or (f"{code}: {details}" if details else code))
        self.code = code
        self.details = details


def not_answering(reach: Connection, error: grpc.aio.AioRpcError) -> str | None:
    """What to say when the call never reached an authority's service (nothing listening,
    a failed TLS handshake, a connection closed before it: see
    :meth:`~authority.cli.connection.Connection.unreached`); None when it did."""
    if error.code() is not grpc.StatusCode.UNAVAILABLE:
        return None
    return reach.unreached(error.details() or "")


def _failure(reach: Connection, error: grpc.aio.AioRpcError) -> AdminCallFailed:
    details = error.details() or ""
    text = not_answering(reach, error)
    return AdminCallFailed(error.code().name, details if text else (details.splitlines()[0] if details else ""), text)


@dataclasses.dataclass(frozen=True)
class IssuedTokens:
    """A token pair from a sign-in or a refresh."""

    session_id: str
    access_token: str
    refresh_token: str
    expires_at: int
    refresh_expires_at: int
    replaced_session_ids: list[str]


@dataclasses.dataclass(frozen=True)
class Validation:
    """ValidateToken's answer: the claims when valid, else the reason (MALFORMED, REVOKED, ...)."""

    valid: bool
    reason: str
    claims: dict[str, Any]
    # For REVOKED: the cause's short name when known, and the text a person is shown.
    cause: str = ""
    text: str = ""


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """One live session."""

    session_id: str
    subject: str
    device_id: str
    created_at: int
    expires_at: int
    device_class: str = ""
    device_name: str = ""
    last_used_at: int = 0


def _issued(answer: pb.IssueTokenResponse) -> IssuedTokens:
    return IssuedTokens(
        session_id=answer.session_id,
        access_token=answer.access_token,
        refresh_token=answer.refresh_token,
        expires_at=answer.expires_at.seconds,
        refresh_expires_at=answer.refresh_expires_at.seconds,
        replaced_session_ids=list(answer.replaced_session_ids),
    )


class AdminClient:
    """An async connection to one authority; use it as ``async with AdminClient(...)``."""

    def __init__(self, reach: Connection, *, timeout: float = 10.0) -> None:
        self._reach = reach
        self._channel = reach.channel()
        self._stub = authority_pb2_grpc.TokenAuthorityStub(self._channel)
        self._metadata = reach.metadata
        self._timeout = timeout

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._channel.close()

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise _failure(self._reach, error) from None

    async def issue(
        self,
        subject: str,
        device_id: str,
        *,
        policy: str = "",
        audience: str = "",
        ttl: int | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> IssuedTokens:
        """Signs ``subject`` in on ``device_id``."""
        request = pb.IssueTokenRequest(
            subject=subject, device_id=device_id, policy=POLICIES.get(policy, 0), audience=audience  # type: ignore[arg-type]
        )
        if ttl is not None:
            request.ttl.CopyFrom(Duration(seconds=ttl))
        if claims:
            request.claims.update(dict(claims))
        return _issued(await self._call("IssueToken", request))

    async def validate(self, token: str, audience: str = "") -> Validation:
        """Asks whether ``token`` is valid for ``audience`` (empty: the server's default)."""
        answer: pb.ValidateTokenResponse = await self._call(
            "ValidateToken", pb.ValidateTokenRequest(token=token, audience=audience)
        )
        if not answer.valid:
            reason = pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")
            cause = RevocationCause(answer.revocation_cause) if answer.revocation_cause else None
            text = refusal_text(InvalidReason(answer.reason), cause, answer.replaced_by_device_name)
            return Validation(False, reason, {}, cause.name if cause else "", text)
        claims = answer.claims
        shown: dict[str, Any] = {
            "subject": claims.subject,
            "device_id": claims.device_id,
            "session_id": claims.session_id,
            "token_id": claims.token_id,
            "issuer": claims.issuer,
            "audience": claims.audience,
            "issued_at": claims.issued_at.seconds,
            "expires_at": claims.expires_at.seconds,
        }
        if claims.HasField("extra"):
            shown["extra"] = json_numbers(json_format.MessageToDict(claims.extra))
        return Validation(True, "", shown)

    async def revoke(
        self, *, token: str = "", refresh_token: str = "", session_id: str = "", subject: str = "", reason: str = ""
    ) -> int:
        """Revokes by exactly one of token, refresh token, session or subject; returns how
        many sessions ended."""
        if token:
            request = pb.RevokeTokenRequest(token=token, reason=reason)
        elif refresh_token:
            request = pb.RevokeTokenRequest(refresh_token=refresh_token, reason=reason)
        elif session_id:
            request = pb.RevokeTokenRequest(session_id=session_id, reason=reason)
        else:
            request = pb.RevokeTokenRequest(subject=subject, reason=reason)
        answer: pb.RevokeTokenResponse = await self._call("RevokeToken", request)
        return answer.revoked_sessions

    async def refresh(self, refresh_token: str) -> IssuedTokens:
        """Trades a refresh token for a new pair."""
        return _issued(await self._call("RefreshToken", pb.RefreshTokenRequest(refresh_token=refresh_token)))

    async def sessions(self, subject: str) -> list[SessionInfo]:
        """The subject's live sessions, oldest first."""
        answer: pb.ListSessionsResponse = await self._call("ListSessions", pb.ListSessionsRequest(subject=subject))
        return [
            SessionInfo(
                s.session_id, s.subject, s.device_id, s.created_at.seconds, s.expires_at.seconds,
                s.device_class, s.device_name, s.last_used_at.seconds,
            )
            for s in answer.sessions
        ]

    async def session_events(
        self, *, follow: bool, subject: str = "", restarted: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The session event log from its start, as plain dicts; with ``follow`` new events
        as they happen, else only until the backlog is sent. ``subject`` filters.

        Following, the position is kept with its epoch: a stream cut off for falling
        behind resumes after it, and a log that changed epoch (a restore, a failover:
        OUT_OF_RANGE) is printed again from its start, after calling ``restarted``, since
        the new log may write events at positions already printed."""
        position, epoch = 0, ""
        while True:
            stream = self._stub.WatchSessionEvents(
                pb.WatchSessionEventsRequest(after_sequence=position, epoch=epoch),
                metadata=self._metadata, timeout=None if follow else self._timeout,
            )
            progressed = False
            try:
                async for event in stream:
                    progressed = True
                    position, epoch = event.sequence, event.epoch
                    if event.kind == pb.SESSION_EVENT_KIND_CAUGHT_UP and not follow:
                        return
                    if event.kind in (pb.SESSION_EVENT_KIND_CAUGHT_UP, pb.SESSION_EVENT_KIND_HEARTBEAT):
                        continue
                    if subject and event.subject != subject:
                        continue
                    yield _event(event)
                return
            except grpc.aio.AioRpcError as error:
                code = error.code()
                # Started again only where that cannot repeat: a stream from 0 with no epoch
                # is never OUT_OF_RANGE, and one cut off for falling behind had got somewhere.
                new_log = code is grpc.StatusCode.OUT_OF_RANGE and bool(position or epoch)
                behind = code is grpc.StatusCode.RESOURCE_EXHAUSTED and progressed
                if not (follow and (new_log or behind)):
                    raise AdminCallFailed(code.name, (error.details() or "").splitlines()[0]) from None
                if new_log:
                    position, epoch = 0, ""
                    if restarted is not None:
                        restarted()
            finally:
                stream.cancel()


def _event(event: pb.SessionEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "kind": pb.SessionEventKind.Name(event.kind).removeprefix("SESSION_EVENT_KIND_"),
        "occurred_at": event.occurred_at.seconds,
        "subject": event.subject,
        "session_id": event.session_id,
        "device_id": event.device_id,
        "device_class": event.device_class,
        "device_name": event.device_name,
        "replaced_session_ids": list(event.replaced_session_ids),
        "cause": pb.RevocationCause.Name(event.cause).removeprefix("REVOCATION_CAUSE_") if event.cause else "",
        "caller": event.caller,
        # The log's epoch: a sequence is a position within it.
        "epoch": event.epoch,
    }
