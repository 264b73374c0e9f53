"""Who a sign-in signs out: the single-device rule with device classes and a total cap.

Pure decisions over the subject's live sessions, read under the subject's lock by
:mod:`authority.sessions`, which applies them:

- a live session on the same device is always replaced;
- with ``session_limits``, the sign-in's class (an empty ``device_class``, or one the
  limits do not name, counts as ``*``) keeps at most its limit: REPLACE signs out the
  class's oldest sessions, REJECT refuses; other classes are never touched for it;
- the total cap (``max_sessions_per_subject``, or the sum of the class limits) binds
  across classes: REPLACE signs out the subject's oldest sessions in any class, REJECT
  refuses.

With none of that configured (REPLACE, no classes, a total cap of one: the single-device
rule as it comes) a sign-in signs out every live session, whatever they are
(:func:`replaces_every_live_session`), so on PostgreSQL it need not read them first.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Mapping, Sequence

from authority.config import Policy
from authority.errors import InvalidArgument
from authority.store import SessionRecord

ANY_CLASS = "*"
MAX_DEVICE_CLASS_BYTES = 64
MAX_DEVICE_NAME_BYTES = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What a sign-in would do: the sessions it signs out, and whether it is refused."""

    replaced: tuple[SessionRecord, ...]
    # REJECT, and other devices would have to be signed out.
    refused: bool

    @property
    def replaced_ids(self) -> frozenset[str]:
        """The ids of the sessions it signs out."""
        return frozenset(s.session_id for s in self.replaced)


# Bidirectional controls: embeddings, overrides and isolates, and the marks that steer
# them. One in a device name shown to a person can make the text read as another.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Cc: the C0 and C1 controls (NUL, newline, escape...); Zl, Zp: the line and paragraph
# separators, which some viewers break lines at.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def check_no_controls(field: str, value: str) -> None:
    """Raises :class:`InvalidArgument` naming ``field`` for a control character in
    ``value``: a C0 or C1 control, a line or paragraph separator, or a bidirectional
    control. They would garble a device list, a log line or a header, or make a name
    read as another; the joiners emoji use are not among them."""
    if any(unicodedata.category(char) in _CONTROL_CATEGORIES or char in _BIDI_CONTROLS for char in value):
        raise InvalidArgument(field, "must not contain control characters")


def _check_label(field: str, value: str, limit: int) -> None:
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid UTF-8") from None
    if size > limit:
        raise InvalidArgument(field, f"must be at most {limit} bytes")
    check_no_controls(field, value)


def check_device_name(device_name: str) -> None:
    """Raises :class:`InvalidArgument` for a name over 256 bytes or with control characters."""
    _check_label("device_name", device_name, MAX_DEVICE_NAME_BYTES)


def class_of(device_class: str, limits: Mapping[str, int]) -> str:
    """The class a sign-in counts in; raises :class:`InvalidArgument` for a bad class, or
    one the limits do not name when there is no ``*``."""
    _check_label("device_class", device_class, MAX_DEVICE_CLASS_BYTES)
    if not limits:
        return device_class or ANY_CLASS
    if device_class in limits:
        return device_class
    if ANY_CLASS in limits:
        return ANY_CLASS
    raise InvalidArgument("device_class", f"must be one of {', '.join(sorted(limits))}")


def _counted_in(session: SessionRecord, limits: Mapping[str, int]) -> str:
    # A session keeps the class it signed in with; one the limits no longer name counts as *.
    return session.device_class if session.device_class in limits else ANY_CLASS


def decide(
    live: Sequence[SessionRecord],
    device_id: str,
    counted_class: str,
    policy: Policy,
    limits: Mapping[str, int],
    total_cap: int,
) -> Decision:
    """Who a sign-in on ``device_id`` in ``counted_class`` signs out; ``live`` oldest first."""
    same_device = [s for s in live if s.device_id == device_id]
    others = [s for s in live if s.device_id != device_id]
    signed_out: list[SessionRecord] = []
    if limits:
        in_class = [s for s in others if _counted_in(s, limits) == counted_class]
        signed_out += in_class[: max(len(in_class) + 1 - limits[counted_class], 0)]
    remaining = [s for s in others if s not in signed_out]
    signed_out += remaining[: max(len(remaining) + 1 - total_cap, 0)]
    refused = bool(signed_out) and policy is Policy.REJECT
    return Decision(tuple(same_device + signed_out), refused)


def replaces_every_live_session(policy: Policy, limits: Mapping[str, int], total_cap: int) -> bool:
    """Whether :func:`decide` signs out every live session, whichever they are: under
    REPLACE with no classes and a total cap of one, it replaces the device's own sessions
    and, to keep one in all, every other. (A guarded sign-in still reads them, to compare.)"""
    return policy is Policy.REPLACE and not limits and total_cap == 1
