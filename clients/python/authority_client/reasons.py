"""The one table of texts every surface shows for a refused token.

gRPC trailing metadata carries the short names (``x-token-invalid-reason``, and for a
revoked token ``x-token-revocation-cause``); people read the text: HTTP
``error_description``, the Node.js package, the command line and the demo all take it
from here, and the shared token corpus (``tests/vectors``) carries it, so the surfaces
cannot drift apart. A text never quotes the token.

The API::

    reason_text(reason)                      "the token has expired"
    cause_text(cause, device_name="")        "signed in on another device" / "signed in on the phone"
    refusal_text(reason, cause, device_name) "revoked: signed in on another device"
    signed_out_text(cause, device_name)      "signed out: signed in on the phone"

``refusal_text`` is what a refused call is told (a reason, and for REVOKED its cause when
known); ``signed_out_text`` is what the signed-out device shows its user.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from authority_client.verify import InvalidReason, RevocationCause

REASON_TEXTS: Final[Mapping[InvalidReason, str]] = {
    InvalidReason.MALFORMED: "the token is malformed",
    InvalidReason.BAD_SIGNATURE: "the token's signature does not verify",
    InvalidReason.UNKNOWN_KEY: "the token is signed with an unknown key",
    InvalidReason.EXPIRED: "the token has expired",
    InvalidReason.NOT_YET_VALID: "the token is not valid yet",
    InvalidReason.WRONG_AUDIENCE: "the token is not for this audience",
    InvalidReason.WRONG_ISSUER: "the token is from another issuer",
    InvalidReason.REVOKED: "the token has been revoked",
    InvalidReason.PROOF_REQUIRED: "the token is bound to a device key and needs a proof of possession",
    InvalidReason.BAD_PROOF: "the proof of possession is not valid",
}
# For a call that carries no token at all.
MISSING_TEXT: Final = "no token was presented"
# For a token that cannot be checked right now (the authority's view is stale or it is
# unreachable): on gRPC, and on HTTP, where Retry-After says when to try again.
UNAVAILABLE_TEXT: Final = "the token cannot be checked right now"


class RequestProblem(enum.Enum):
    """Why an HTTP request's way of presenting a token is refused before any token is checked
    (RFC 6750 ``invalid_request``)."""

    OVERSIZED = "OVERSIZED"
    MALFORMED_HEADER = "MALFORMED_HEADER"
    SEVERAL_HEADERS = "SEVERAL_HEADERS"
    EMPTY_TOKEN = "EMPTY_TOKEN"
    TOKEN_IN_QUERY = "TOKEN_IN_QUERY"


REQUEST_TEXTS: Final[Mapping[RequestProblem, str]] = {
    RequestProblem.OVERSIZED: "the Authorization header is too long",
    RequestProblem.MALFORMED_HEADER: "the Authorization header is malformed",
    RequestProblem.SEVERAL_HEADERS: "send one Authorization header, not several",
    RequestProblem.EMPTY_TOKEN: "the Authorization header names the scheme but carries no token",
    RequestProblem.TOKEN_IN_QUERY: "tokens in the query string are refused; send an Authorization header",
}

# Why a revoked token's session was revoked. UNSPECIFIED has no text: the reason's stands.
CAUSE_TEXTS: Final[Mapping[RevocationCause, str]] = {
    RevocationCause.REPLACED_BY_SIGN_IN: "signed in on another device",
    RevocationCause.LOGGED_OUT: "logged out",
    RevocationCause.SIGNED_OUT_EVERYWHERE: "signed out everywhere",
    RevocationCause.SESSION_REVOKED: "the session was ended",
    RevocationCause.REFRESH_TOKEN_REUSED: "the session's refresh token was used twice",
    RevocationCause.OTHER_DEVICES_SIGNED_OUT: "signed out from another device",
}
# REPLACED_BY_SIGN_IN when the replacing device's name is known.
REPLACED_BY_DEVICE_TEXT: Final = "signed in on {device_name}"
# The prefixes that compose a reason with its cause.
REVOKED_PREFIX: Final = "revoked: "
SIGNED_OUT_PREFIX: Final = "signed out: "


def reason_text(reason: InvalidReason) -> str:
    """What a person is told about a token refused for ``reason``."""
    return REASON_TEXTS[reason]


def problem_text(problem: RequestProblem) -> str:
    """What a person is told about a request refused for ``problem``."""
    return REQUEST_TEXTS[problem]


def cause_text(cause: RevocationCause, device_name: str = "") -> str:
    """Why a session was revoked, naming the replacing device when its name is known.
    Empty for UNSPECIFIED."""
    if cause is RevocationCause.REPLACED_BY_SIGN_IN and device_name:
        return REPLACED_BY_DEVICE_TEXT.format(device_name=device_name)
    return CAUSE_TEXTS.get(cause, "")


def refusal_text(reason: InvalidReason, cause: RevocationCause | None = None, device_name: str = "") -> str:
    """What a refused call is told: the reason's text, or for REVOKED with a known cause
    ``revoked: <cause>`` (``revoked: signed in on another device``)."""
    if reason is InvalidReason.REVOKED and cause is not None:
        text = cause_text(cause, device_name)
        if text:
            return REVOKED_PREFIX + text
    return reason_text(reason)


def signed_out_text(cause: RevocationCause | None, device_name: str = "") -> str:
    """What a signed-out device shows its user (``signed out: signed in on the phone``)."""
    text = "" if cause is None else cause_text(cause, device_name)
    return SIGNED_OUT_PREFIX + (text or "the session has ended")
