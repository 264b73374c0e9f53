"""The gRPC servicer: protobuf in, one domain call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from authority.api.answers import PerVerifiedToken
from authority.api.callers import CALLER
from authority.api.inputs import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    positive_seconds,
    proof_of,
    proof_problem,
)
from authority.api.status import streaming, unary
from authority.app import Authority
from authority.binding import token_type
from authority.claims import from_struct
from authority.config import Policy
from authority.errors import InvalidArgument, RefreshTokenRejected, SessionLimitReached
from authority.ops.metrics import Metrics
from authority.revocations import CaughtUp, Heartbeat
from authority.sessions import Device, SignIn
from authority.store import Revocation, RevocationCause, SessionEvent, SessionRecord
from authority.tokens import AccessClaims, InvalidReason, InvalidToken, Proof
from authority.validation import Revoked

Context = grpc.aio.ServicerContext[Any, Any]

_POLICIES = {
    pb.SESSION_POLICY_UNSPECIFIED: None,
    pb.SESSION_POLICY_REPLACE: Policy.REPLACE,
    pb.SESSION_POLICY_REJECT: Policy.REJECT,
}


# WatchRevocations heartbeats: the default, and the bounds a request is clamped to.
HEARTBEAT_INTERVAL = 1.0
MIN_HEARTBEAT_INTERVAL = 0.1
MAX_HEARTBEAT_INTERVAL = 30.0


def _heartbeat_interval(request: pb.WatchRevocationsRequest | pb.WatchSessionEventsRequest) -> float:
    if not request.HasField("heartbeat_interval"):
        return HEARTBEAT_INTERVAL
    seconds = positive_seconds("heartbeat_interval", request.heartbeat_interval)
    return min(max(seconds, MIN_HEARTBEAT_INTERVAL), MAX_HEARTBEAT_INTERVAL)


def _timestamp(seconds: float) -> Timestamp:
    # protobuf builds a Timestamp past its range without a word; a reply must never carry one.
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise ValueError("a time outside 0001-01-01 to 9999-12-31 UTC has no Timestamp")
    whole = int(seconds)
    return Timestamp(seconds=whole, nanos=int((seconds - whole) * 1e9))


def _issue_response(sign_in: SignIn) -> pb.IssueTokenResponse:
    return pb.IssueTokenResponse(
        access_token=sign_in.access_token,
        refresh_token=sign_in.refresh_token,
        session_id=sign_in.session_id,
        expires_at=_timestamp(sign_in.expires_at),
        refresh_expires_at=_timestamp(sign_in.refresh_expires_at),
        replaced_session_ids=sign_in.replaced_session_ids,
        token_type=token_type(sign_in.key_thumbprint),
    )


def _claims(claims: AccessClaims) -> pb.Claims:
    message = pb.Claims(
        subject=claims.subject,
        device_id=claims.device_id,
        session_id=claims.session_id,
        token_id=claims.token_id,
        issuer=claims.issuer,
        audience=claims.audience,
        issued_at=Timestamp(seconds=claims.issued_at),
        expires_at=Timestamp(seconds=claims.expires_at),
        key_thumbprint=claims.key_thumbprint,
    )
    if claims.extra:
        message.extra.update(claims.extra)
    return message


def _valid_answer(claims: AccessClaims) -> pb.ValidateTokenResponse:
    return pb.ValidateTokenResponse(valid=True, claims=_claims(claims))


def _extra_claims(request: pb.IssueTokenRequest) -> dict[str, Any] | None:
    if not request.HasField("claims"):
        return None
    try:
        values = json_format.MessageToDict(request.claims)
    except ValueError:  # NaN and infinities have no JSON form
        raise InvalidArgument("claims", "numbers must be finite") from None
    return from_struct(values)


def _session(s: SessionRecord) -> pb.Session:
    return pb.Session(
        session_id=s.session_id,
        subject=s.subject,
        device_id=s.device_id,
        created_at=_timestamp(s.created_at),
        expires_at=_timestamp(s.expires_at),
        device_class=s.device_class,
        device_name=s.device_name,
        last_used_at=_timestamp(s.last_used_at),
    )


def _device(request: pb.IssueTokenRequest) -> Device:
    return Device(request.device_id, request.device_class, request.device_name)


def _policy(request: pb.IssueTokenRequest) -> Policy | None:
    if request.policy not in _POLICIES:
        raise InvalidArgument("policy", f"{request.policy} is not a SessionPolicy")
    return _POLICIES[request.policy]


def _expected(request: pb.IssueTokenRequest) -> list[str] | None:
    if not request.HasField("expected_replacements"):
        return None
    # Unknown ids simply do not match; only their shape is checked, so none is echoed.
    ids = list(request.expected_replacements.session_ids)
    if len(ids) > 1000 or any(not 0 < len(i) <= 64 for i in ids):
        raise InvalidArgument("expected_replacements", "holds at most 1000 session ids of 1 to 64 characters")
    return ids


def _session_event(event: SessionEvent, sent_at: float, epoch: str) -> pb.SessionEvent:
    return pb.SessionEvent(
        epoch=epoch,
        sequence=event.sequence,
        kind=int(event.kind),  # type: ignore[arg-type]
        occurred_at=_timestamp(event.occurred_at),
        sent_at=_timestamp(sent_at),
        subject=event.subject,
        session_id=event.session_id,
        device_id=event.device_id,
        device_class=event.device_class,
        device_name=event.device_name,
        replaced_session_ids=event.replaced_session_ids,
        cause=int(event.cause),  # type: ignore[arg-type]
        caller=event.caller,
    )


def _proof(request: pb.IssueTokenRequest | pb.RefreshTokenRequest) -> Proof | None:
    """The request's proof, None when it has none; :class:`InvalidArgument` naming the
    field that breaks the input rule (see :mod:`authority.api.inputs`)."""
    if not request.HasField("proof"):
        return None
    problem = proof_problem(request.proof)
    if problem is not None:
        raise problem
    return proof_of(request.proof)


def _ttl(request: pb.IssueTokenRequest) -> float | None:
    return positive_seconds("ttl", request.ttl) if request.HasField("ttl") else None


class TokenAuthorityService(authority_pb2_grpc.TokenAuthorityServicer):
    """``authority.v1.TokenAuthority`` on top of one :class:`Authority`."""

    def __init__(self, authority: Authority, metrics: Metrics | None = None) -> None:
        self._authority = authority
        self._sessions = authority.sessions
        self._validator = authority.validator
        self._clock = authority.clock
        self._metrics = metrics or Metrics()
        # Keyed by reason, None for valid: counting is a dict lookup and an increment.
        self._validations = self._metrics.validation_outcomes
        self._valid = self._validations[None]
        # A warm token's answer, its Claims copied in, is built once (authority/api/answers.py).
        self._answers = PerVerifiedToken(_valid_answer)

    @unary
    async def IssueToken(self, request: pb.IssueTokenRequest, context: Context) -> pb.IssueTokenResponse:
        policy = _policy(request)
        try:
            sign_in = await self._sessions.sign_in(
                request.subject,
                _device(request),
                policy=policy,
                audience=request.audience,
                claims=_extra_claims(request),
                ttl=_ttl(request),
                expected_replacements=_expected(request),
                caller=CALLER.get(),
                # Built inside the transaction: nothing commits whose reply cannot be built.
                before_commit=_issue_response,
                proof=_proof(request),
            )
        except SessionLimitReached:
            self._metrics.count_rejected_sign_in()
            raise
        self._metrics.count_sign_in(replaced=bool(sign_in.replaced_session_ids))
        return _issue_response(sign_in)

    @unary
    async def ValidateToken(self, request: pb.ValidateTokenRequest, context: Context) -> pb.ValidateTokenResponse:
        if not request.token:
            raise InvalidArgument("token", "must not be empty")
        proof = None
        if request.HasField("proof"):
            # A proof breaking the input rule is a bad proof: an answer, never an error.
            if proof_problem(request.proof) is not None:
                self._validations[InvalidReason.BAD_PROOF].inc()
                return pb.ValidateTokenResponse(valid=False, reason=pb.INVALID_REASON_BAD_PROOF)
            proof = proof_of(request.proof)
        try:
            claims = self._validator.validate(request.token, request.audience, proof)
        except Revoked as revoked:
            self._validations[revoked.reason].inc()
            return await self._explained(revoked)
        except InvalidToken as invalid:
            self._validations[invalid.reason].inc()
            return pb.ValidateTokenResponse(valid=False, reason=invalid.reason.value)  # type: ignore[arg-type]
        self._valid.inc()
        return self._answers.get(request.token, claims)

    async def _explained(self, revoked: Revoked) -> pb.ValidateTokenResponse:
        """A REVOKED answer with its cause (from the mirror) and, read from the store on this
        rare path, when and by which device."""
        answer = pb.ValidateTokenResponse(
            valid=False, reason=pb.INVALID_REASON_REVOKED, revocation_cause=int(revoked.cause)  # type: ignore[arg-type]
        )
        detail = await self._authority.explanations.explain(revoked.session_id)
        if detail is not None:
            answer.revoked_at.CopyFrom(_timestamp(detail.revoked_at))
            if revoked.cause is RevocationCause.REPLACED_BY_SIGN_IN:
                answer.replaced_by_device_id = detail.replaced_by_device_id
                answer.replaced_by_device_name = detail.replaced_by_device_name
        return answer

    @unary
    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: Context) -> pb.RevokeTokenResponse:
        target = request.WhichOneof("target")
        caller = CALLER.get()
        if target == "token":
            revoked = await self._sessions.revoke_token(request.token, request.reason, caller)
        elif target == "session_id":
            revoked = await self._sessions.revoke_session(request.session_id, request.reason, caller)
        elif target == "subject":
            revoked = await self._sessions.revoke_subject(request.subject, request.reason, caller)
        elif target == "refresh_token":
            revoked = await self._sessions.revoke_refresh_token(request.refresh_token, request.reason, caller)
        elif target == "other_sessions":
            ref = request.other_sessions
            named = ref.WhichOneof("ref")
            if named is None:
                raise InvalidArgument("other_sessions", "name a token or a session_id")
            proof = None
            if ref.HasField("proof"):
                problem = proof_problem(ref.proof, "other_sessions.proof")
                if problem is not None:
                    raise problem
                proof = proof_of(ref.proof)
            # Only the field the request names, even empty: an error names that field.
            revoked = await self._sessions.revoke_other_sessions(
                token=ref.token if named == "token" else None,
                session_id=ref.session_id if named == "session_id" else None,
                reason=request.reason, caller=caller, proof=proof,
            )
        else:
            raise InvalidArgument("target", "name a token, a refresh_token, a session_id, a subject or other_sessions")
        return pb.RevokeTokenResponse(revoked_sessions=revoked)

    @unary
    async def PreviewSignIn(self, request: pb.IssueTokenRequest, context: Context) -> pb.PreviewSignInResponse:
        preview = await self._sessions.preview(
            request.subject, _device(request), policy=_policy(request), audience=request.audience,
            claims=_extra_claims(request), ttl=_ttl(request), expected_replacements=_expected(request),
            proof=_proof(request),
        )
        return pb.PreviewSignInResponse(
            allowed=preview.allowed, would_replace=[_session(s) for s in preview.would_replace]
        )

    @unary
    async def RefreshToken(self, request: pb.RefreshTokenRequest, context: Context) -> pb.IssueTokenResponse:
        try:
            proof = _proof(request)
        except InvalidArgument as problem:
            # As any proof a refresh cannot take: the refresh token is not traded.
            raise RefreshTokenRejected(str(problem)) from None
        refreshed = await self._sessions.refresh(request.refresh_token, before_commit=_issue_response, proof=proof)
        return _issue_response(refreshed)

    @unary
    async def ListSessions(self, request: pb.ListSessionsRequest, context: Context) -> pb.ListSessionsResponse:
        sessions = await self._sessions.list_sessions(request.subject)
        return pb.ListSessionsResponse(sessions=[_session(s) for s in sessions])

    @unary
    async def GetSigningKeys(self, request: pb.GetSigningKeysRequest, context: Context) -> pb.GetSigningKeysResponse:
        keyring = self._authority.codec.keyring
        return pb.GetSigningKeysResponse(jwks_json=keyring.jwks_json, key_set_version=keyring.version)

    @streaming
    async def WatchRevocations(
        self, request: pb.WatchRevocationsRequest, context: Context
    ) -> AsyncIterator[pb.RevocationEvent]:
        authority = self._authority
        heartbeat_interval = _heartbeat_interval(request)
        # The stream's epoch: should the log change epoch, the feed ends (OUT_OF_RANGE).
        epoch = authority.mirror.epoch
        feed = authority.mirror.follow(
            authority.store, request.after_sequence, heartbeat_interval, authority.heartbeat_freshness, request.epoch
        )
        async for event in feed:
            if isinstance(event, Revocation):
                yield pb.RevocationEvent(
                    kind=pb.REVOCATION_EVENT_KIND_REVOCATION,
                    sequence=event.sequence,
                    token_id=event.token_id or "",
                    session_id=event.session_id,
                    expires_at=_timestamp(event.expires_at),
                    sent_at=_timestamp(self._clock()),
                    epoch=epoch,
                    cause=int(event.cause),  # type: ignore[arg-type]
                    replaced_by_device_id=event.replaced_by_device_id,
                )
            elif isinstance(event, CaughtUp):
                yield self._position_event(pb.REVOCATION_EVENT_KIND_CAUGHT_UP, event.sequence, epoch)
            elif isinstance(event, Heartbeat):
                yield self._position_event(pb.REVOCATION_EVENT_KIND_HEARTBEAT, event.sequence, epoch)
            else:
                yield self._signing_keys_event(epoch)

    @streaming
    async def WatchSessionEvents(
        self, request: pb.WatchSessionEventsRequest, context: Context
    ) -> AsyncIterator[pb.SessionEvent]:
        authority = self._authority
        heartbeat_interval = _heartbeat_interval(request)
        # The stream's epoch: should the log change epoch, the feed ends (OUT_OF_RANGE).
        epoch = authority.session_events.epoch
        feed = authority.session_events.follow(
            request.after_sequence, heartbeat_interval, lambda: authority.mirror.age() <= authority.heartbeat_freshness,
            request.epoch,
        )
        async for event in feed:
            if isinstance(event, SessionEvent):
                yield _session_event(event, self._clock(), epoch)
            else:
                kind = pb.SESSION_EVENT_KIND_CAUGHT_UP if isinstance(event, CaughtUp) else pb.SESSION_EVENT_KIND_HEARTBEAT
                yield pb.SessionEvent(
                    kind=kind, sequence=event.sequence, sent_at=_timestamp(self._clock()), epoch=epoch
                )

    def _signing_keys_event(self, epoch: str) -> pb.RevocationEvent:
        keyring = self._authority.codec.keyring  # the set and its version from one ring
        return pb.RevocationEvent(
            kind=pb.REVOCATION_EVENT_KIND_SIGNING_KEYS,
            jwks_json=keyring.jwks_json,
            key_set_version=keyring.version,
            sent_at=_timestamp(self._clock()),
            epoch=epoch,
        )

    def _position_event(self, kind: pb.RevocationEventKind, sequence: int, epoch: str) -> pb.RevocationEvent:
        return pb.RevocationEvent(kind=kind, sequence=sequence, sent_at=_timestamp(self._clock()), epoch=epoch)
