"""The header rules every HTTP surface shares: reading the token, answering a refusal.

:func:`read_token` reads the ``Authorization`` header(s) of a request (and its query
string, to refuse a token there, and its ``DPoP`` headers for a device-bound token);
every way a request can fail becomes one
:class:`Denial`, which carries the status, the ``WWW-Authenticate`` challenge and the
JSON body, so that the Envoy external authorization, the ASGI and WSGI middlewares
answer alike. Texts come from :mod:`authority_client.reasons`, never from here.

========================================================  ======  =============================
request                                                   status  challenge (RFC 6750 §3)
========================================================  ======  =============================
no ``Authorization`` header, or one in another scheme     401     ``Bearer realm=...`` (no error, §3.1)
header longer than :data:`MAX_AUTHORIZATION_BYTES`          400     ``error="invalid_request"``
two or more ``Authorization`` headers                     400     ``error="invalid_request"``
the scheme with no token (``Bearer``)                     400     ``error="invalid_request"``
anything but ``<scheme> <token68>``                       400     ``error="invalid_request"``
``access_token`` in the query (§2.3; escaped, any case)   400     ``error="invalid_request"``
a token that does not validate                            401     ``error="invalid_token"``
``DPoP <token>`` without a ``DPoP`` header (PROOF_REQUIRED) 401     ``DPoP algs=..., error="invalid_token"``
a bound token sent as ``Bearer`` (PROOF_REQUIRED)           401     ``DPoP algs=..., error="invalid_token"``
two ``DPoP`` headers, or a proof that fails (BAD_PROOF)    401     ``DPoP algs=..., error="invalid_dpop_proof"``
a token that cannot be checked right now                  503     none; ``Retry-After``
========================================================  ======  =============================

A ``Bearer`` challenge names the protection space, ``realm="token-authority"`` unless the
surface says otherwise (:data:`DEFAULT_REALM`; the middlewares' ``realm``), as the Node.js
package's Express middleware does; a ``DPoP`` challenge names none, there as here.

RFC 6750 §3.1 makes a request that is missing a parameter, repeats one, uses more than
one way of sending the token or is otherwise malformed ``invalid_request``, answered 400;
a token that is expired, revoked or otherwise not valid is ``invalid_token``, 401. A
request with no token at all gets a challenge with no error code (§3.1), and its body the
error ``unauthorized``: ``invalid_token`` would tell a client that a token it never sent
had failed.

The scheme name is case-insensitive (RFC 7235 §2.1). ``Bearer`` and ``DPoP`` (RFC 9449)
are read. A ``DPoP`` token needs exactly one ``DPoP`` header, the proof: the proof itself
is checked by the validator (:mod:`authority_client.proof`), against the request's method
and URL, which only the surface knows (:meth:`Presented.proof_for`). A ``Bearer`` token's
``DPoP`` header is ignored: a bound token sent as ``Bearer`` is refused PROOF_REQUIRED by
the validator, whatever else came with it. Refusals about a proof, and of a ``DPoP``
token, carry the ``DPoP`` challenge with the proof algorithms accepted (RFC 9449 §7.1);
a bearer token keeps its ``Bearer`` challenge. A request with no token at all is told
``Bearer`` and its realm alone, as before: it has promised nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Sequence
from typing import Final

from authority_client.proof import DPOP_SCHEME, PROOF_ALGORITHMS, Proof
from authority_client.reasons import MISSING_TEXT, UNAVAILABLE_TEXT, RequestProblem, problem_text, refusal_text
from authority_client.verify import InvalidReason, RevocationCause

BEARER: Final = "Bearer"
DPOP: Final = DPOP_SCHEME
# The challenge's ``algs`` (RFC 9449 §7.1): the proof checker's allow-list, in a fixed order.
DPOP_ALGS: Final = " ".join(sorted(PROOF_ALGORITHMS, key=("EdDSA", "ES256", "RS256").index))
# Far above any token this authority signs (authority_client.verify.MAX_TOKEN_BYTES), far
# below what lets a header cost real work.
MAX_AUTHORIZATION_BYTES: Final = 8192
QUERY_PARAMETER: Final = "access_token"
# RFC 7235 token68, the form a JWT takes.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCHEME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
# One ``<scheme> <something>`` of several joined by a comma.
_CREDENTIALS = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+ +\S.*")
# What a quoted error_description may hold (RFC 6750 §3): printable ASCII but '"' and '\'.
_NOT_DESCRIPTION = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')

INVALID_REQUEST: Final = "invalid_request"
INVALID_TOKEN: Final = "invalid_token"
INVALID_DPOP_PROOF: Final = "invalid_dpop_proof"
TEMPORARILY_UNAVAILABLE: Final = "temporarily_unavailable"
# The body's error for a request with no token: no OAuth code fits, and its challenge names none.
UNAUTHORIZED: Final = "unauthorized"
DEFAULT_REALM: Final = "token-authority"
# What a realm may hold: printable ASCII, for it is quoted into every Bearer challenge (RFC 9110 §5.6.4).
_REALM = re.compile(r"[\x20-\x7e]*")
MISSING: Final = "MISSING"
UNAVAILABLE: Final = "UNAVAILABLE"


@dataclasses.dataclass(frozen=True)
class Presented:
    """A token as the request presented it."""

    scheme: str
    token: str = dataclasses.field(repr=False)
    # The ``DPoP`` header's value, exactly as sent; only for the ``DPoP`` scheme.
    proof: str | None = dataclasses.field(default=None, repr=False)

    def proof_for(self, method: str, uri: str) -> Proof | None:
        """The proof with the request it came with (``uri``: scheme, host and path as the
        client addressed them), or None for a bearer token."""
        return None if self.proof is None else Proof(self.proof, method, uri)


@dataclasses.dataclass(frozen=True)
class Denial:
    """A refused request: what to answer, and the reason's short name for logs and metrics."""

    status: int
    reason: str
    # The OAuth error code of the body (and of the challenge, when it names one).
    error: str
    description: str
    # The challenge's scheme; None: no challenge (the token could not be checked).
    scheme: str | None = BEARER
    # Whether the challenge names the error: not for a request with no token (RFC 6750 §3.1).
    challenge_names_error: bool = True
    retry_after: int | None = None
    # The realm a Bearer challenge names (a DPoP one names none).
    realm: str = DEFAULT_REALM

    @property
    def www_authenticate(self) -> str | None:
        """The ``WWW-Authenticate`` value, or None when there is no challenge."""
        if self.scheme is None:
            return None
        if not self.challenge_names_error:
            return challenge(self.scheme, realm=self.realm)
        return challenge(self.scheme, self.error, self.description, realm=self.realm)

    @property
    def body(self) -> bytes:
        """The JSON body: ``{"error": ..., "error_description": ...}``."""
        return json.dumps({"error": self.error, "error_description": self.description}).encode()

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every response header the refusal needs (lower-case names)."""
        headers = [("content-type", "application/json"), ("cache-control", "no-store")]
        www_authenticate = self.www_authenticate
        if www_authenticate is not None:
            headers.append(("www-authenticate", www_authenticate))
        if self.retry_after is not None:
            headers.append(("retry-after", str(self.retry_after)))
        return headers


def check_realm(realm: object) -> str:
    """``realm``, or ValueError unless it is a string of printable ASCII (it is quoted into
    every Bearer challenge), as the Node.js package checks its own."""
    if not isinstance(realm, str) or not _REALM.fullmatch(realm):
        raise ValueError("realm must be a string of printable ASCII")
    return realm


def challenge(
    scheme: str, error: str | None = None, description: str | None = None, *, realm: str | None = None
) -> str:
    """A ``WWW-Authenticate`` challenge: the scheme alone, or with its error and description;
    ``DPoP`` always names the proof algorithms (RFC 9449 §7.1), ``Bearer`` its ``realm``
    when one is given."""
    if scheme == DPOP:
        parameters = [f'algs="{DPOP_ALGS}"']
    else:
        parameters = [] if realm is None else [f"realm={_quoted(realm)}"]
    if error is not None:
        parameters.append(f'error="{error}"')
        if description:
            parameters.append(f'error_description="{_NOT_DESCRIPTION.sub("?", description)}"')
    return f"{scheme} {', '.join(parameters)}" if parameters else scheme


def _quoted(text: str) -> str:
    # A quoted-string (RFC 9110 §5.6.4): each double quote and backslash escaped with a backslash.
    return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


def missing(scheme: str = BEARER) -> Denial:
    """The refusal of a request that presents no token."""
    return Denial(401, MISSING, UNAUTHORIZED, MISSING_TEXT, scheme, challenge_names_error=False)


def invalid_request(problem: RequestProblem, scheme: str = BEARER) -> Denial:
    """The refusal of a request whose way of presenting the token is wrong."""
    return Denial(400, problem.name, INVALID_REQUEST, problem_text(problem), scheme)


def invalid_token(
    reason: InvalidReason, scheme: str = BEARER, cause: RevocationCause | None = None, device_name: str = ""
) -> Denial:
    """The refusal of a token that does not validate, with the reason's text; for a revoked
    one whose cause is known, the cause's (``revoked: signed in on another device``, or
    with the replacing device's name, ``revoked: signed in on the phone``)."""
    reason = InvalidReason(reason)
    description = refusal_text(reason, cause, device_name)
    if reason is InvalidReason.BAD_PROOF:
        return Denial(401, reason.name, INVALID_DPOP_PROOF, description, DPOP)
    if reason is InvalidReason.PROOF_REQUIRED:
        # Sent as Bearer, it is told which scheme it needs.
        return Denial(401, reason.name, INVALID_TOKEN, description, DPOP)
    return Denial(401, reason.name, INVALID_TOKEN, description, scheme)


def unavailable(retry_after: int) -> Denial:
    """The refusal while a token cannot be checked (stale view, unreachable authority)."""
    return Denial(503, UNAVAILABLE, TEMPORARILY_UNAVAILABLE, UNAVAILABLE_TEXT, None, retry_after=retry_after)


def read_token(
    authorization: Sequence[str | bytes], query: str | bytes = "", schemes: Sequence[str] = (BEARER, DPOP),
    dpop: Sequence[str | bytes] = (),
) -> Presented | Denial:
    """The token of a request, from its ``Authorization`` values (one per header line, as
    received), its raw query string and its ``DPoP`` values; or the :class:`Denial` to answer.

    ``schemes`` are the schemes read (case-insensitive); a header in any other scheme
    counts as no token. A proxy or server that joined repeated headers with commas is
    seen through: a token68 never holds a comma, and neither does a proof (a compact JWS).
    A ``DPoP`` token with no ``DPoP`` value is PROOF_REQUIRED, with two BAD_PROOF.
    """
    if _token_in_query(query):
        return invalid_request(RequestProblem.TOKEN_IN_QUERY)
    if not authorization:
        return missing()
    if len(authorization) > 1:
        return invalid_request(RequestProblem.SEVERAL_HEADERS)
    raw = authorization[0]
    if len(raw) > MAX_AUTHORIZATION_BYTES:
        return invalid_request(RequestProblem.OVERSIZED)
    value = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    presented = _parse(value.strip(" \t"), schemes)
    if isinstance(presented, Denial) or presented.scheme != DPOP:
        return presented
    return _with_proof(presented, dpop)


def _with_proof(presented: Presented, dpop: Sequence[str | bytes]) -> Presented | Denial:
    if not dpop:
        return invalid_token(InvalidReason.PROOF_REQUIRED, DPOP)
    values = [value.decode("latin-1") if isinstance(value, bytes) else value for value in dpop]
    if len(values) > 1 or "," in values[0]:
        return invalid_token(InvalidReason.BAD_PROOF, DPOP)
    return Presented(DPOP, presented.token, values[0].strip(" \t"))


def _parse(value: str, schemes: Sequence[str]) -> Presented | Denial:
    if "," in value:
        joined = all(_CREDENTIALS.fullmatch(part.strip(" \t")) for part in value.split(","))
        return invalid_request(RequestProblem.SEVERAL_HEADERS if joined else RequestProblem.MALFORMED_HEADER)
    scheme, _, rest = value.partition(" ")
    if not _SCHEME.fullmatch(scheme):
        return invalid_request(RequestProblem.MALFORMED_HEADER)
    known = {name.lower(): name for name in schemes}
    if scheme.lower() not in known:
        # Another scheme (Basic, say) is no bearer token: the plain challenge says which to use.
        return missing()
    token = rest.strip(" \t")
    if not token:
        return invalid_request(RequestProblem.EMPTY_TOKEN, known[scheme.lower()])
    if not _TOKEN68.fullmatch(token):
        return invalid_request(RequestProblem.MALFORMED_HEADER, known[scheme.lower()])
    return Presented(known[scheme.lower()], token)


def _token_in_query(query: str | bytes) -> bool:
    # The name as a server would read it: its escapes decoded (access%5Ftoken is the same
    # name), in any case (a server elsewhere may fold it).
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if "%" not in text and QUERY_PARAMETER not in text.lower():  # the common case: no escape, no such name
        return False
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    return any(name.lower() == QUERY_PARAMETER for name, _ in pairs)
