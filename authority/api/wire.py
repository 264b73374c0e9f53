"""Which field makes a request undecodable: the protobuf wire format, read just far
enough to name it.

grpc decodes a request before any handler runs, and a string field that is not UTF-8
fails the whole message with a parser error that names nothing. When that happens the
bytes are walked here, field by field, against the message's descriptor, so the caller
is told which field to fix (``subject``, ``claims``) rather than that something, somewhere,
is wrong.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Free-form JSON-like values: a bad string inside one is reported as the field holding it.
_FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_MAX_DEPTH = 32


class _Malformed(Exception):
    """The bytes are not protobuf at all: nothing to name."""


def non_utf8_field(descriptor: Descriptor, data: bytes) -> str | None:
    """The dotted path of the first string field in ``data`` (a serialised ``descriptor``
    message) that is not valid UTF-8, or None when there is none to name."""
    try:
        return _walk(descriptor, memoryview(data), 0)
    except _Malformed:
        return None


def _walk(descriptor: Descriptor, data: memoryview, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        raise _Malformed
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            _, position = _varint(data, position)
            continue
        if wire_type in (_FIXED64, _FIXED32):
            position += 8 if wire_type == _FIXED64 else 4
            continue
        if wire_type != _LENGTH_DELIMITED:
            raise _Malformed
        size, position = _varint(data, position)
        body, position = data[position : position + size], position + size
        if position > len(data):
            raise _Malformed
        field = descriptor.fields_by_number.get(number)
        if field is None:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                bytes(body).decode("utf-8")
            except UnicodeDecodeError:
                return field.name
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
            kind = field.message_type
            inner = _walk(kind, body, depth + 1)
            if inner is not None:
                return field.name if kind.full_name in _FREE_FORM else f"{field.name}.{inner}"
    return None


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise _Malformed
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
