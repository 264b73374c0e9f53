"""The one rule for every number, Duration and Timestamp a request carries.

Every handler's request passes :func:`check_request` before the handler sees it:

- an unsigned 64-bit field (``uint64``, ``fixed64``) above 2**63 - 1 is OUT_OF_RANGE:
  the store keeps integers as signed 64-bit, and a larger value reaches no row;
- a Duration must be one protobuf defines: at most 10,000 years either way, nanos
  within ±999,999,999 and of the same sign as the seconds;
- a Timestamp must be one protobuf defines: from 0001-01-01 to 9999-12-31 UTC, nanos
  from 0 to 999,999,999.

Each refusal names the field by its path in the request (``ttl``, ``heartbeat_interval``).
What a field then means (a ttl must be positive) is the handler's: :func:`positive_seconds`
turns a checked Duration into seconds, exactly, down to the nanosecond.

A ``ProofOfPossession`` is present when its field is set (an empty ``proof`` in it is a
malformed proof, not an absent one). :func:`proof_problem` is its rule: ``proof`` at most
8 KiB, ``http_method`` 1 to 32 bytes, ``http_uri`` 1 byte to 8 KiB, so no check of a proof
works on more than that. Each RPC answers a refusal its own way: ValidateToken with
``valid = false`` and BAD_PROOF, IssueToken with INVALID_ARGUMENT, RefreshToken with
UNAUTHENTICATED, each naming the field.
"""

from __future__ import annotations

import functools

from authority_client.proof import MAX_PROOF_BYTES, Proof
from authority_client.v1 import authority_pb2 as pb
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from authority.errors import InvalidArgument, ValueOutOfRange

INT64_MAX = 2**63 - 1
# protobuf's own bounds (duration.proto, timestamp.proto).
MAX_DURATION_SECONDS = 315_576_000_000
MAX_NANOS = 999_999_999
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z

_DURATION = Duration.DESCRIPTOR.full_name
_TIMESTAMP = Timestamp.DESCRIPTOR.full_name
# JSON-like values (Struct claims): their numbers are doubles, checked where they are used.
_FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_UNSIGNED_64 = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
# Far above any real method (the longest standard one is 7 bytes) and request URI.
MAX_HTTP_METHOD_BYTES = 32
MAX_HTTP_URI_BYTES = 8 * 1024


def check_request(request: Message) -> None:
    """Raises :class:`ValueOutOfRange` or :class:`InvalidArgument`, naming the field, for
    a number, Duration or Timestamp anywhere in ``request`` that breaks the rule above."""
    if _has_checked_fields(request.DESCRIPTOR):
        _check(request, "")


def positive_seconds(field: str, duration: Duration) -> float:
    """A checked Duration as seconds; InvalidArgument naming ``field`` unless it is above zero."""
    seconds = duration.seconds + duration.nanos / 1e9
    if not seconds > 0:
        raise InvalidArgument(field, "must be a positive duration")
    return seconds


@functools.cache
def _has_checked_fields(descriptor: Descriptor) -> bool:
    # Computed once per message type: most requests (ValidateToken) have nothing to check,
    # and the hot path then pays a cached lookup.
    return any(_field_needs_check(field, {descriptor.full_name}) for field in descriptor.fields)


def _field_needs_check(field: FieldDescriptor, seen: set[str]) -> bool:
    if field.type in _UNSIGNED_64:
        return True
    kind = field.message_type
    if kind is None or kind.full_name in _FREE_FORM or kind.full_name in seen:
        return False
    if kind.full_name in (_DURATION, _TIMESTAMP):
        return True
    return any(_field_needs_check(inner, seen | {kind.full_name}) for inner in kind.fields)


def _check(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        name = prefix + field.name
        values = list(value) if field.is_repeated else [value]
        if field.type in _UNSIGNED_64:
            if any(item > INT64_MAX for item in values):
                raise ValueOutOfRange(name, f"must be at most 2^63 - 1 ({INT64_MAX})")
            continue
        kind = field.message_type
        if kind is None or kind.full_name in _FREE_FORM or kind.GetOptions().map_entry:
            continue
        for item in values:
            if kind.full_name == _DURATION:
                _check_duration(name, item)
            elif kind.full_name == _TIMESTAMP:
                _check_timestamp(name, item)
            else:
                _check(item, name + ".")


def _check_duration(name: str, duration: Duration) -> None:
    seconds, nanos = duration.seconds, duration.nanos
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise InvalidArgument(name, f"must be within ±{MAX_DURATION_SECONDS} seconds")
    if abs(nanos) > MAX_NANOS:
        raise InvalidArgument(name, f"nanos must be within ±{MAX_NANOS}")
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        raise InvalidArgument(name, "seconds and nanos must have the same sign")


def _check_timestamp(name: str, timestamp: Timestamp) -> None:
    if not MIN_TIMESTAMP_SECONDS <= timestamp.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(name, "must be between 0001-01-01 and 9999-12-31 UTC")
    if not 0 <= timestamp.nanos <= MAX_NANOS:
        raise InvalidArgument(name, f"nanos must be from 0 to {MAX_NANOS}")


def proof_of(message: pb.ProofOfPossession) -> Proof:
    """The proof a request carries, as the proof checker takes it."""
    return Proof(message.proof, message.http_method, message.http_uri)


def proof_problem(message: pb.ProofOfPossession, path: str = "proof") -> InvalidArgument | None:
    """What breaks the rule for a ``ProofOfPossession``, naming the field by its ``path``
    (``proof.http_uri``), or None. Sizes are counted in UTF-8 bytes, as on the wire."""
    for field, value, most in (
        ("proof", message.proof, MAX_PROOF_BYTES),
        ("http_method", message.http_method, MAX_HTTP_METHOD_BYTES),
        ("http_uri", message.http_uri, MAX_HTTP_URI_BYTES),
    ):
        size = len(value.encode(errors="surrogatepass"))
        if not 0 < size <= most:
            return InvalidArgument(f"{path}.{field}", f"must be 1 to {most} bytes")
    return None
