import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_POLICY_UNSPECIFIED: _ClassVar[SessionPolicy]
    SESSION_POLICY_REPLACE: _ClassVar[SessionPolicy]
    SESSION_POLICY_REJECT: _ClassVar[SessionPolicy]

class InvalidReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVALID_REASON_UNSPECIFIED: _ClassVar[InvalidReason]
    INVALID_REASON_MALFORMED: _ClassVar[InvalidReason]
    INVALID_REASON_BAD_SIGNATURE: _ClassVar[InvalidReason]
    INVALID_REASON_UNKNOWN_KEY: _ClassVar[InvalidReason]
    INVALID_REASON_EXPIRED: _ClassVar[InvalidReason]
    INVALID_REASON_NOT_YET_VALID: _ClassVar[InvalidReason]
    INVALID_REASON_WRONG_AUDIENCE: _ClassVar[InvalidReason]
    INVALID_REASON_WRONG_ISSUER: _ClassVar[InvalidReason]
    INVALID_REASON_REVOKED: _ClassVar[InvalidReason]
    INVALID_REASON_PROOF_REQUIRED: _ClassVar[InvalidReason]
    INVALID_REASON_BAD_PROOF: _ClassVar[InvalidReason]

class RevocationCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_CAUSE_UNSPECIFIED: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_REPLACED_BY_SIGN_IN: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_LOGGED_OUT: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_SIGNED_OUT_EVERYWHERE: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_SESSION_REVOKED: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_REFRESH_TOKEN_REUSED: _ClassVar[RevocationCause]
    REVOCATION_CAUSE_OTHER_DEVICES_SIGNED_OUT: _ClassVar[RevocationCause]

class RevocationEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_EVENT_KIND_UNSPECIFIED: _ClassVar[RevocationEventKind]
    REVOCATION_EVENT_KIND_REVOCATION: _ClassVar[RevocationEventKind]
    REVOCATION_EVENT_KIND_CAUGHT_UP: _ClassVar[RevocationEventKind]
    REVOCATION_EVENT_KIND_HEARTBEAT: _ClassVar[RevocationEventKind]
    REVOCATION_EVENT_KIND_SIGNING_KEYS: _ClassVar[RevocationEventKind]

class SessionEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_EVENT_KIND_UNSPECIFIED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_SIGNED_IN: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_SIGN_IN_REFUSED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_REFRESH_TOKEN_REUSED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_SESSION_ENDED: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_CAUGHT_UP: _ClassVar[SessionEventKind]
    SESSION_EVENT_KIND_HEARTBEAT: _ClassVar[SessionEventKind]
SESSION_POLICY_UNSPECIFIED: SessionPolicy
SESSION_POLICY_REPLACE: SessionPolicy
SESSION_POLICY_REJECT: SessionPolicy
INVALID_REASON_UNSPECIFIED: InvalidReason
INVALID_REASON_MALFORMED: InvalidReason
INVALID_REASON_BAD_SIGNATURE: InvalidReason
INVALID_REASON_UNKNOWN_KEY: InvalidReason
INVALID_REASON_EXPIRED: InvalidReason
INVALID_REASON_NOT_YET_VALID: InvalidReason
INVALID_REASON_WRONG_AUDIENCE: InvalidReason
INVALID_REASON_WRONG_ISSUER: InvalidReason
INVALID_REASON_REVOKED: InvalidReason
INVALID_REASON_PROOF_REQUIRED: InvalidReason
INVALID_REASON_BAD_PROOF: InvalidReason
REVOCATION_CAUSE_UNSPECIFIED: RevocationCause
REVOCATION_CAUSE_REPLACED_BY_SIGN_IN: RevocationCause
REVOCATION_CAUSE_LOGGED_OUT: RevocationCause
REVOCATION_CAUSE_SIGNED_OUT_EVERYWHERE: RevocationCause
REVOCATION_CAUSE_SESSION_REVOKED: RevocationCause
REVOCATION_CAUSE_REFRESH_TOKEN_REUSED: RevocationCause
REVOCATION_CAUSE_OTHER_DEVICES_SIGNED_OUT: RevocationCause
REVOCATION_EVENT_KIND_UNSPECIFIED: RevocationEventKind
REVOCATION_EVENT_KIND_REVOCATION: RevocationEventKind
REVOCATION_EVENT_KIND_CAUGHT_UP: RevocationEventKind
REVOCATION_EVENT_KIND_HEARTBEAT: RevocationEventKind
REVOCATION_EVENT_KIND_SIGNING_KEYS: RevocationEventKind
SESSION_EVENT_KIND_UNSPECIFIED: SessionEventKind
SESSION_EVENT_KIND_SIGNED_IN: SessionEventKind
SESSION_EVENT_KIND_SIGN_IN_REFUSED: SessionEventKind
SESSION_EVENT_KIND_REFRESH_TOKEN_REUSED: SessionEventKind
SESSION_EVENT_KIND_SESSION_ENDED: SessionEventKind
SESSION_EVENT_KIND_CAUGHT_UP: SessionEventKind
SESSION_EVENT_KIND_HEARTBEAT: SessionEventKind

class IssueTokenRequest(_message.Message):
    __slots__ = ("subject", "device_id", "policy", "audience", "claims", "ttl", "device_class", "device_name", "expected_replacements", "proof")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REPLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    subject: str
    device_id: str
    policy: SessionPolicy
    audience: str
    claims: _struct_pb2.Struct
    ttl: _duration_pb2.Duration
    device_class: str
    device_name: str
    expected_replacements: SessionIds
    proof: ProofOfPossession
    def __init__(self, subject: _Optional[str] = ..., device_id: _Optional[str] = ..., policy: _Optional[_Union[SessionPolicy, str]] = ..., audience: _Optional[str] = ..., claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., device_class: _Optional[str] = ..., device_name: _Optional[str] = ..., expected_replacements: _Optional[_Union[SessionIds, _Mapping]] = ..., proof: _Optional[_Union[ProofOfPossession, _Mapping]] = ...) -> None: ...

class ProofOfPossession(_message.Message):
    __slots__ = ("proof", "http_method", "http_uri")
    PROOF_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    HTTP_URI_FIELD_NUMBER: _ClassVar[int]
    proof: str
    http_method: str
    http_uri: str
    def __init__(self, proof: _Optional[str] = ..., http_method: _Optional[str] = ..., http_uri: _Optional[str] = ...) -> None: ...

class SessionIds(_message.Message):
    __slots__ = ("session_ids",)
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PreviewSignInResponse(_message.Message):
    __slots__ = ("allowed", "would_replace")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    WOULD_REPLACE_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    would_replace: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, allowed: _Optional[bool] = ..., would_replace: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("access_token", "refresh_token", "session_id", "expires_at", "replaced_session_ids", "refresh_expires_at", "token_type")
    ACCESS_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACED_SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    REFRESH_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_FIELD_NUMBER: _ClassVar[int]
    access_token: str
    refresh_token: str
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    replaced_session_ids: _containers.RepeatedScalarFieldContainer[str]
    refresh_expires_at: _timestamp_pb2.Timestamp
    token_type: str
    def __init__(self, access_token: _Optional[str] = ..., refresh_token: _Optional[str] = ..., session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replaced_session_ids: _Optional[_Iterable[str]] = ..., refresh_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., token_type: _Optional[str] = ...) -> None: ...

class ValidateTokenRequest(_message.Message):
    __slots__ = ("token", "audience", "proof")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    token: str
    audience: str
    proof: ProofOfPossession
    def __init__(self, token: _Optional[str] = ..., audience: _Optional[str] = ..., proof: _Optional[_Union[ProofOfPossession, _Mapping]] = ...) -> None: ...

class ValidateTokenResponse(_message.Message):
    __slots__ = ("valid", "reason", "claims", "revocation_cause", "revoked_at", "replaced_by_device_id", "replaced_by_device_name")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_CAUSE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REPLACED_BY_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLACED_BY_DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: InvalidReason
    claims: Claims
    revocation_cause: RevocationCause
    revoked_at: _timestamp_pb2.Timestamp
    replaced_by_device_id: str
    replaced_by_device_name: str
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[_Union[InvalidReason, str]] = ..., claims: _Optional[_Union[Claims, _Mapping]] = ..., revocation_cause: _Optional[_Union[RevocationCause, str]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replaced_by_device_id: _Optional[str] = ..., replaced_by_device_name: _Optional[str] = ...) -> None: ...

class Claims(_message.Message):
    __slots__ = ("subject", "device_id", "session_id", "token_id", "issuer", "audience", "issued_at", "expires_at", "extra", "key_thumbprint")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    KEY_THUMBPRINT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    device_id: str
    session_id: str
    token_id: str
    issuer: str
    audience: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    extra: _struct_pb2.Struct
    key_thumbprint: str
    def __init__(self, subject: _Optional[str] = ..., device_id: _Optional[str] = ..., session_id: _Optional[str] = ..., token_id: _Optional[str] = ..., issuer: _Optional[str] = ..., audience: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., key_thumbprint: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token", "session_id", "subject", "refresh_token", "other_sessions", "reason")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OTHER_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    token: str
    session_id: str
    subject: str
    refresh_token: str
    other_sessions: SessionRef
    reason: str
    def __init__(self, token: _Optional[str] = ..., session_id: _Optional[str] = ..., subject: _Optional[str] = ..., refresh_token: _Optional[str] = ..., other_sessions: _Optional[_Union[SessionRef, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("token", "session_id", "proof")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    token: str
    session_id: str
    proof: ProofOfPossession
    def __init__(self, token: _Optional[str] = ..., session_id: _Optional[str] = ..., proof: _Optional[_Union[ProofOfPossession, _Mapping]] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revoked_sessions",)
    REVOKED_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    revoked_sessions: int
    def __init__(self, revoked_sessions: _Optional[int] = ...) -> None: ...

class RefreshTokenRequest(_message.Message):
    __slots__ = ("refresh_token", "proof")
    REFRESH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    refresh_token: str
    proof: ProofOfPossession
    def __init__(self, refresh_token: _Optional[str] = ..., proof: _Optional[_Union[ProofOfPossession, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "subject", "device_id", "created_at", "expires_at", "device_class", "device_name", "last_used_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    subject: str
    device_id: str
    created_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    device_class: str
    device_name: str
    last_used_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., subject: _Optional[str] = ..., device_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device_class: _Optional[str] = ..., device_name: _Optional[str] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetSigningKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSigningKeysResponse(_message.Message):
    __slots__ = ("jwks_json", "key_set_version")
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    KEY_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    jwks_json: str
    key_set_version: int
    def __init__(self, jwks_json: _Optional[str] = ..., key_set_version: _Optional[int] = ...) -> None: ...

class WatchRevocationsRequest(_message.Message):
    __slots__ = ("after_sequence", "heartbeat_interval", "epoch")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    heartbeat_interval: _duration_pb2.Duration
    epoch: str
    def __init__(self, after_sequence: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., epoch: _Optional[str] = ...) -> None: ...

class RevocationEvent(_message.Message):
    __slots__ = ("sequence", "token_id", "session_id", "expires_at", "kind", "sent_at", "jwks_json", "epoch", "cause", "replaced_by_device_id", "key_set_version")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    JWKS_JSON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    REPLACED_BY_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    token_id: str
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    kind: RevocationEventKind
    sent_at: _timestamp_pb2.Timestamp
    jwks_json: str
    epoch: str
    cause: RevocationCause
    replaced_by_device_id: str
    key_set_version: int
    def __init__(self, sequence: _Optional[int] = ..., token_id: _Optional[str] = ..., session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[RevocationEventKind, str]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jwks_json: _Optional[str] = ..., epoch: _Optional[str] = ..., cause: _Optional[_Union[RevocationCause, str]] = ..., replaced_by_device_id: _Optional[str] = ..., key_set_version: _Optional[int] = ...) -> None: ...

class WatchSessionEventsRequest(_message.Message):
    __slots__ = ("after_sequence", "heartbeat_interval", "epoch")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    heartbeat_interval: _duration_pb2.Duration
    epoch: str
    def __init__(self, after_sequence: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., epoch: _Optional[str] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("sequence", "kind", "occurred_at", "sent_at", "subject", "session_id", "device_id", "device_class", "device_name", "replaced_session_ids", "cause", "caller", "epoch")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLACED_SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: SessionEventKind
    occurred_at: _timestamp_pb2.Timestamp
    sent_at: _timestamp_pb2.Timestamp
    subject: str
    session_id: str
    device_id: str
    device_class: str
    device_name: str
    replaced_session_ids: _containers.RepeatedScalarFieldContainer[str]
    cause: RevocationCause
    caller: str
    epoch: str
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[SessionEventKind, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., session_id: _Optional[str] = ..., device_id: _Optional[str] = ..., device_class: _Optional[str] = ..., device_name: _Optional[str] = ..., replaced_session_ids: _Optional[_Iterable[str]] = ..., cause: _Optional[_Union[RevocationCause, str]] = ..., caller: _Optional[str] = ..., epoch: _Optional[str] = ...) -> None: ...
