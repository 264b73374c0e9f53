"""Protobuf messages to and from the client's dataclasses; shared by both clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from authority_client.frozen import frozen
from authority_client.jws import MAX_JSON_DEPTH
from authority_client.types import (
    AccessClaims,
    InvalidReason,
    IssuedToken,
    RevocationCause,
    RevocationEvent,
    RevocationEventKind,
    Session,
    Proof,
    SessionPolicy,
    SignInPreview,
    SigningKeySet,
    Validation,
)
from authority_client.v1 import authority_pb2 as pb


def seconds(timestamp: Timestamp) -> float:
    """Unix seconds of a Timestamp."""
    return timestamp.seconds + timestamp.nanos / 1e9


def duration(value: float) -> Duration:
    """A Duration of ``value`` seconds."""
    message = Duration()
    message.FromNanoseconds(int(value * 1e9))
    return message


def issue_request(
    subject: str,
    device_id: str,
    policy: SessionPolicy,
    audience: str,
    claims: Mapping[str, Any] | None,
    ttl: float | None,
    proof: Proof | None = None,
) -> pb.IssueTokenRequest:
    """The IssueToken request for a sign-in (bound to the proof's key, when given)."""
    request = pb.IssueTokenRequest(subject=subject, device_id=device_id, policy=int(policy), audience=audience)  # type: ignore[arg-type]
    if claims is not None:
        _check_depth(claims)
        request.claims.update(dict(claims))
    if ttl is not None:
        request.ttl.CopyFrom(duration(ttl))
    if proof is not None:
        request.proof.CopyFrom(proof_message(proof))
    return request


def _check_depth(claims: Mapping[str, Any]) -> None:
    """ValueError for claims nested deeper than a token may carry (the claims object is the
    payload, the first of MAX_JSON_DEPTH levels), as the authority refuses them, and before
    the Struct conversion would recurse into a RecursionError."""
    level: list[Any] = [claims]
    for _ in range(MAX_JSON_DEPTH):
        level = [inner for value in level for inner in _children(value)]
        if not level:
            return
    raise ValueError(f"claims must not nest more than {MAX_JSON_DEPTH - 1} levels deep")


def _children(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [inner for inner in value.values() if isinstance(inner, (Mapping, list, tuple))]
    if isinstance(value, (list, tuple)):
        return [inner for inner in value if isinstance(inner, (Mapping, list, tuple))]
    return []


def proof_message(proof: Proof) -> pb.ProofOfPossession:
    """The contract's ProofOfPossession for ``proof``."""
    return pb.ProofOfPossession(proof=proof.proof, http_method=proof.http_method, http_uri=proof.http_uri)


def refresh_request(refresh_token: str, proof: Proof | None) -> pb.RefreshTokenRequest:
    """The RefreshToken request; a bound session's needs a proof by its key."""
    request = pb.RefreshTokenRequest(refresh_token=refresh_token)
    if proof is not None:
        request.proof.CopyFrom(proof_message(proof))
    return request


def validate_request(token: str, audience: str, proof: Proof | None) -> pb.ValidateTokenRequest:
    """The ValidateToken request; a bound token's needs the proof that came with it."""
    request = pb.ValidateTokenRequest(token=token, audience=audience)
    if proof is not None:
        request.proof.CopyFrom(proof_message(proof))
    return request


def revoke_request(
    token: str | None, session_id: str | None, subject: str | None, reason: str, refresh_token: str | None = None
) -> pb.RevokeTokenRequest:
    """The RevokeToken request for exactly one target."""
    targets = {"token": token, "refresh_token": refresh_token, "session_id": session_id, "subject": subject}
    named = {key: value for key, value in targets.items() if value is not None}
    if len(named) != 1:
        raise ValueError("name exactly one of token, refresh_token, session_id or subject")
    request = pb.RevokeTokenRequest(reason=reason)
    for key, value in named.items():
        setattr(request, key, value)
    return request


def issued(response: pb.IssueTokenResponse) -> IssuedToken:
    """An IssueToken or RefreshToken answer."""
    return IssuedToken(
        access_token=response.access_token,
        refresh_token=response.refresh_token,
        session_id=response.session_id,
        expires_at=seconds(response.expires_at),
        refresh_expires_at=seconds(response.refresh_expires_at),
        replaced_session_ids=tuple(response.replaced_session_ids),
        # An authority older than device-bound tokens says nothing: its tokens are bearer tokens.
        token_type=response.token_type or "Bearer",
    )


def claims(message: pb.Claims) -> AccessClaims:
    """Claims as the authority reports them."""
    return AccessClaims(
        subject=message.subject,
        device_id=message.device_id,
        session_id=message.session_id,
        token_id=message.token_id,
        issuer=message.issuer,
        audience=message.audience,
        issued_at=message.issued_at.seconds,
        expires_at=message.expires_at.seconds,
        extra=frozen(json_numbers(json_format.MessageToDict(message.extra) if message.HasField("extra") else {})),
        key_thumbprint=message.key_thumbprint,
    )


# Integers of smaller magnitude are exact as doubles; the authority refuses larger ones.
_EXACT_INTEGER_LIMIT = 2**53


def json_numbers(value: Any) -> Any:
    """``value`` from a Struct with its integral numbers as ints, as the token holds them.

    A Struct carries numbers as doubles, so the claim ``"n": 3`` arrives as ``3.0``; turned
    back, remote validation reports the same ``extra`` as local validation reads from the
    token itself.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGER_LIMIT:
        return int(value)
    if isinstance(value, dict):
        return {name: json_numbers(item) for name, item in value.items()}
    if isinstance(value, list):
        return [json_numbers(item) for item in value]
    return value


def validation(response: pb.ValidateTokenResponse) -> Validation:
    """A ValidateToken answer."""
    if response.valid:
        return Validation(valid=True, claims=claims(response.claims))
    try:
        reason = InvalidReason(response.reason)
    except ValueError:  # a reason newer than this client: still not valid
        reason = InvalidReason.MALFORMED
    return Validation(
        valid=False,
        reason=reason,
        revocation_cause=_cause(response.revocation_cause) if reason is InvalidReason.REVOKED else None,
        revoked_at=seconds(response.revoked_at),
        replaced_by_device_id=response.replaced_by_device_id,
        replaced_by_device_name=response.replaced_by_device_name,
    )


def _cause(number: int) -> RevocationCause:
    try:
        return RevocationCause(number)
    except ValueError:  # a cause newer than this client
        return RevocationCause.UNSPECIFIED


def session(s: pb.Session) -> Session:
    """One session as the authority reports it."""
    return Session(
        s.session_id, s.subject, s.device_id, seconds(s.created_at), seconds(s.expires_at),
        s.device_class, s.device_name, seconds(s.last_used_at),
    )


def sessions(response: pb.ListSessionsResponse) -> list[Session]:
    """A ListSessions answer."""
    return [session(s) for s in response.sessions]


def preview(response: pb.PreviewSignInResponse) -> SignInPreview:
    """A PreviewSignIn answer."""
    return SignInPreview(response.allowed, tuple(session(s) for s in response.would_replace))


def guard(request: pb.IssueTokenRequest, expected_replacements: Sequence[str] | None) -> pb.IssueTokenRequest:
    """``request`` guarded by ``expected_replacements`` (None: unguarded; empty: replace nothing)."""
    if expected_replacements is not None:
        request.expected_replacements.SetInParent()
        request.expected_replacements.session_ids.extend(expected_replacements)
    return request


def other_sessions_request(
    token: str | None, session_id: str | None, reason: str, proof: Proof | None = None
) -> pb.RevokeTokenRequest:
    """The RevokeToken request that ends every other session of the one referenced (by a
    bound token: with the device's ``proof`` for it)."""
    if (token is None) == (session_id is None):
        raise ValueError("name exactly one of token or session_id")
    ref = pb.SessionRef(token=token) if token is not None else pb.SessionRef(session_id=session_id)
    if proof is not None:
        ref.proof.CopyFrom(proof_message(proof))
    return pb.RevokeTokenRequest(other_sessions=ref, reason=reason)


def revocation_event(message: pb.RevocationEvent) -> RevocationEvent:
    """One WatchRevocations event."""
    try:
        kind = RevocationEventKind(message.kind)
    except ValueError:
        kind = RevocationEventKind.UNSPECIFIED
    # Servers older than the kinds send revocations with the kind unset.
    if kind is RevocationEventKind.UNSPECIFIED and message.session_id:
        kind = RevocationEventKind.REVOCATION
    return RevocationEvent(
        kind=kind,
        sequence=message.sequence,
        token_id=message.token_id,
        session_id=message.session_id,
        expires_at=seconds(message.expires_at),
        sent_at=seconds(message.sent_at),
        jwks_json=message.jwks_json,
        epoch=message.epoch,
        cause=_cause(message.cause),
        replaced_by_device_id=message.replaced_by_device_id,
        key_set_version=message.key_set_version,
    )


def watch_request(
    after_sequence: int, heartbeat_interval: float | None, epoch: str = ""
) -> pb.WatchRevocationsRequest:
    """The WatchRevocations request resuming after ``after_sequence`` of ``epoch``."""
    request = pb.WatchRevocationsRequest(after_sequence=after_sequence, epoch=epoch)
    if heartbeat_interval is not None:
        request.heartbeat_interval.CopyFrom(duration(heartbeat_interval))
    return request


def key_set(message: pb.GetSigningKeysResponse) -> SigningKeySet:
    return SigningKeySet(jwks_json=message.jwks_json, version=message.key_set_version)
