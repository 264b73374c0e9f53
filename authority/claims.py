"""Extra claims as they arrive in a ``google.protobuf.Struct``, whose numbers are doubles.

A Struct carries every number as a double, so a caller's ``3`` arrives as ``3.0``. An
integral double below 2^53 in magnitude says exactly which integer was meant, and becomes
a JSON integer in the token (``"n":3``, never ``"n":3.0``). From 2^53 on a double no longer
does (12345678901234567 arrives as 12345678901234568), so such a claim is refused naming
it rather than signed as something the caller did not say. 2^53 is also where JavaScript
stops reading integers exactly, so every consumer reads the claims as they were sent.

A claim's value nests at most :data:`MAX_CLAIM_DEPTH` levels of lists and objects, so a
token's payload (one level more) stays within what every verifier reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authority.errors import InvalidArgument

# Integers of smaller magnitude are exact as doubles (and as JavaScript numbers).
EXACT_INTEGER_LIMIT = 2**53
# How much of a claim's name an error shows: a name is the caller's text, of any length,
# and the error travels back in a header (grpc-message) that has a size limit.
NAME_SHOWN = 64
# How deep lists and objects may nest in one claim's value: the payload that holds the
# claims is one level more, MAX_JSON_DEPTH (33) of authority_client.jws, the most any
# verifier reads. Spelled here, not imported, so the command line checks it without
# loading the verifier (tests/test_claim_types.py holds the two together).
MAX_CLAIM_DEPTH = 32


def from_struct(values: Mapping[str, Any], field: str = "claims") -> dict[str, Any]:
    """``values`` (a Struct as a dict) with integral numbers as ints; raises
    :class:`InvalidArgument` naming ``field.NAME`` for an integral number of 2^53 or more
    (a name longer than NAME_SHOWN characters cut there, with an ellipsis)."""
    return {name: _value(value, f"{field}.{_shown(name)}") for name, value in values.items()}


def _shown(name: str) -> str:
    return name if len(name) <= NAME_SHOWN else name[:NAME_SHOWN] + "…"


def _value(value: Any, where: str) -> Any:
    if isinstance(value, float) and value.is_integer():
        if abs(value) >= EXACT_INTEGER_LIMIT:
            raise InvalidArgument(
                where, "is an integer of 2^53 or more, which a Struct's double cannot carry exactly; send it as a string"
            )
        return int(value)
    if isinstance(value, dict):
        return from_struct(value, where)
    if isinstance(value, list):
        return [_value(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value
