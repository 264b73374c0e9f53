"""The one table of texts every surface shows for a refused token.

gRPC trailing metadata carries the reason's short name (``x-token-invalid-reason``);
people read the text: HTTP ``error_description``, the Node.js package, the command line
and the demo all take it from here, and the shared token corpus (``tests/vectors``)
carries it, so the surfaces cannot drift apart. A text never quotes the token.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from authority_client.verify import InvalidReason

REASON_TEXTS: Final[Mapping[InvalidReason, str]] = {
    InvalidReason.MALFORMED: "the token is malformed",
    InvalidReason.BAD_SIGNATURE: "the token's signature does not verify",
    InvalidReason.UNKNOWN_KEY: "the token is signed with an unknown key",
    InvalidReason.EXPIRED: "the token has expired",
    InvalidReason.NOT_YET_VALID: "the token is not valid yet",
    InvalidReason.WRONG_AUDIENCE: "the token is not for this audience",
    InvalidReason.WRONG_ISSUER: "the token is from another issuer",
    InvalidReason.REVOKED: "the token has been revoked",
}
# For a call that carries no token at all.
MISSING_TEXT: Final = "no token was presented"
# For a token that cannot be checked right now (the authority's view is stale or it is unreachable).
UNAVAILABLE_TEXT: Final = "the token cannot be checked right now; try again shortly"


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


def reason_text(reason: InvalidReason) -> str:
    """What a person is told about a token refused for ``reason``."""
    return REASON_TEXTS[reason]


def problem_text(problem: RequestProblem) -> str:
    """What a person is told about a request refused for ``problem``."""
    return REQUEST_TEXTS[problem]
