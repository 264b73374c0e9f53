"""Property-based fuzzing of token validation and issuance, with Hypothesis.

Against a real server (one per test function, not per example): ValidateToken answers
every token and audience with a verdict, never an RPC error; it accepts no token the
authority did not issue; and the consumer package's local verifier gives the same
verdict for the same input. IssueToken answers any request with OK or
INVALID_ARGUMENT, and what it issues validates with the claims asked for. The local
verifier alone, on any text at all, raises nothing but InvalidToken.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from typing import Any

import grpc
import pytest
from authority_client.v1 import authority_pb2 as pb
from authority_client.proof import InvalidProof, Proof, ProofChecker, normalize_uri
from authority_client.verify import RESERVED_CLAIMS, InvalidReason, InvalidToken, KeySet, TokenVerifier
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authority.config import Algorithm
from authority.keys import generate_key
from tests.conftest import Running, StartServer
from tests.support import dpop, forge
from tests.support.calls import Stub, new_subject, sign_in

ISSUER = "token-authority"
AUDIENCES = ("token-authority", "billing")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # nothing written to the worktree; a failure prints its example
    # One server serves every example of a test: that is the point, not an accident.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def store() -> str:
    """Fuzzing exercises decoding, not storage: SQLite only."""
    return "sqlite"


@pytest.fixture
async def fuzzed(start_server: StartServer) -> Running:
    """One authority for every example of a test."""
    return await start_server(audiences=AUDIENCES)


@pytest.fixture
async def local(fuzzed: Running) -> TokenVerifier:
    """The consumer package's verifier, with the keys the authority publishes."""
    jwks = (await fuzzed.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json
    return TokenVerifier(KeySet.from_jwks(jwks), issuer=ISSUER, leeway=0)


@pytest.fixture
async def issued(fuzzed: Running) -> tuple[str, str]:
    """Two access tokens the authority issued, to subjects of their own."""
    first = await sign_in(fuzzed.stub, new_subject(), "laptop")
    second = await sign_in(fuzzed.stub, new_subject(), "laptop")
    return first.access_token, second.access_token


# --- strategies -------------------------------------------------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Text a gRPC client can send: any Unicode but lone surrogates, which have no UTF-8 form.
sendable_text = st.text(max_size=300)
jwt_like_text = st.text(alphabet=B64URL + ".=+/ \n", max_size=400)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
claim_names = st.sampled_from(["sub", "exp", "aud", "iss", "sid", "jti", "device_id", "typ", "role", ""]) | st.text(
    max_size=10
)


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten: inputs must get past the first check to test the later ones."""
    # Not integers(): Hypothesis favours their bounds, so "bad" would come far more often.
    return st.sampled_from(range(10)).flatmap(lambda n: bad if n == 9 else good)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def mutations(draw: st.DrawFn, token: str, other: str) -> str:
    """``token`` changed in one of the ways an attacker or a broken proxy would."""
    header, payload, signature = token.split(".")
    kind = draw(st.sampled_from(
        ["flip-bits", "delete", "insert", "replace-char", "swap-segments", "drop-segment", "duplicate-segment",
         "splice-other", "reencode-claim", "reencode-header", "truncate", "append", "case", "respell", "pad",
         "standard-alphabet"]
    ))
    if kind == "flip-bits":
        chars = list(token)
        for _ in range(draw(st.integers(1, 3))):
            index = draw(st.integers(0, len(chars) - 1))
            chars[index] = chr(ord(chars[index]) ^ (1 << draw(st.integers(0, 7))))
        return "".join(chars)
    if kind == "delete":
        start = draw(st.integers(0, len(token) - 1))
        return token[:start] + token[start + draw(st.integers(1, 8)):]
    if kind == "insert":
        at = draw(st.integers(0, len(token)))
        return token[:at] + draw(st.text(alphabet=B64URL + ".=", min_size=1, max_size=4)) + token[at:]
    if kind == "replace-char":
        at = draw(st.integers(0, len(token) - 1))
        return token[:at] + draw(st.sampled_from(B64URL + ".=+/")) + token[at + 1:]
    if kind == "swap-segments":
        parts = [header, payload, signature]
        order = draw(st.permutations(range(3)))
        return ".".join(parts[i] for i in order)
    if kind == "drop-segment":
        parts = [header, payload, signature]
        del parts[draw(st.integers(0, 2))]
        return ".".join(parts)
    if kind == "duplicate-segment":
        parts = [header, payload, signature]
        index = draw(st.integers(0, 2))
        parts.insert(draw(st.integers(0, 3)), parts[index])
        return ".".join(parts)
    if kind == "splice-other":
        theirs = other.split(".")
        index = draw(st.integers(0, 2))
        parts = [header, payload, signature]
        parts[index] = theirs[index]
        return ".".join(parts)
    if kind == "reencode-claim":
        claims = json.loads(forge.unb64(payload))
        claims[draw(claim_names)] = draw(json_values)
        return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    if kind == "reencode-header":
        fields = json.loads(forge.unb64(header))
        fields[draw(st.sampled_from(["alg", "kid", "typ", "jwk", "crit", "b64", "x"]))] = draw(json_values)
        return f"{_b64(json.dumps(fields).encode())}.{payload}.{signature}"
    if kind == "respell":
        # The same bytes, another spelling: set unused low bits of a segment's last character.
        parts = [header, payload, signature]
        index = draw(st.sampled_from([i for i, part in enumerate(parts) if len(part) % 4 in (2, 3)] or [0]))
        part = parts[index]
        unused = 0b1111 if len(part) % 4 == 2 else 0b11
        if len(part) % 4 in (2, 3):
            parts[index] = part[:-1] + B64URL[B64URL.index(part[-1]) | draw(st.integers(1, unused))]
        return ".".join(parts)
    if kind == "pad":
        parts = [header, payload, signature]
        parts[draw(st.integers(0, 2))] += draw(st.sampled_from(["=", "=="]))
        return ".".join(parts)
    if kind == "standard-alphabet":
        return token.replace("-", "+").replace("_", "/")
    if kind == "truncate":
        return token[: draw(st.integers(0, len(token) - 1))]
    if kind == "append":
        return token + draw(st.text(min_size=1, max_size=8))
    at = draw(st.sampled_from([i for i, c in enumerate(token) if c.isalpha()]))
    return token[:at] + token[at].swapcase() + token[at + 1:]


# --- ValidateToken -----------------------------------------------------------------------


async def _authority_verdict(stub: Stub, token: str, audience: str) -> str:
    """VALID or the reason's name; fails the test on any RPC error but the one for an empty token."""
    try:
        answer = await stub.ValidateToken(pb.ValidateTokenRequest(token=token, audience=audience))
    except grpc.aio.AioRpcError as error:
        assert token == "" and error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        return "EMPTY"
    if answer.valid:
        return "VALID"
    return pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")


def _local_verdict(verifier: TokenVerifier, token: str, audience: str) -> str:
    try:
        verifier.verify(token, audience or AUDIENCES[0])
    except InvalidToken as invalid:
        return invalid.reason.name
    return "VALID"


@FUZZ
@given(data=st.data(), audience=mostly(st.sampled_from(["", *AUDIENCES]), sendable_text))
async def test_validate_answers_anything_with_a_verdict_and_accepts_only_issued_tokens(
    fuzzed: Running, local: TokenVerifier, issued: tuple[str, str], data: st.DataObject, audience: str
) -> None:
    token, other = issued
    candidate = data.draw(
        st.integers(0, 9).flatmap(
            lambda n: mutations(token, other) if n > 2 else [st.sampled_from(issued), sendable_text, jwt_like_text][n]
        ),
        label="token",
    )
    verdict = await _authority_verdict(fuzzed.stub, candidate, audience)
    event(verdict)
    if verdict == "EMPTY":
        return
    # The consumer's verifier must agree with the authority, reason for reason.
    assert _local_verdict(local, candidate, audience) == verdict
    if verdict == "VALID":
        assert candidate in issued, "accepted a token the authority did not issue"


# --- IssueToken --------------------------------------------------------------------------


def _struct(value: dict[str, Any]) -> Struct | None:
    claims = Struct()
    try:
        claims.update(value)
    except (ValueError, TypeError, OverflowError):
        return None  # a value protobuf itself cannot hold (an integer past int64, ...)
    return claims


durations = st.builds(
    Duration, seconds=st.integers(-(2**40), 2**40) | st.integers(-5, 4000), nanos=st.integers(-999_999_999, 999_999_999)
)


@FUZZ
@given(
    subject=mostly(st.sampled_from(["alice", "bob"]) | st.text(min_size=1, max_size=20), sendable_text),
    device_id=mostly(st.sampled_from(["laptop", "phone"]) | st.text(min_size=1, max_size=20), sendable_text),
    audience=mostly(st.sampled_from(["", *AUDIENCES]), sendable_text),
    claims=st.none() | st.dictionaries(claim_names, json_values, max_size=5),
    ttl=mostly(st.none() | st.builds(Duration, seconds=st.integers(1, 4000)), durations),
    policy=mostly(st.sampled_from([0, 1, 2]), st.integers(-3, 2**31 - 1)),
    device_class=mostly(st.sampled_from(["", "mobile", "web"]), sendable_text),
    device_name=mostly(st.sampled_from(["", "Firefox on Linux"]) | st.text(max_size=300), sendable_text),
    guarded=st.booleans(),
)
async def test_issue_answers_ok_or_invalid_argument_and_what_it_issues_validates(
    fuzzed: Running,
    local: TokenVerifier,
    subject: str,
    device_id: str,
    audience: str,
    claims: dict[str, Any] | None,
    ttl: Duration | None,
    policy: int,
    device_class: str,
    device_name: str,
    guarded: bool,
) -> None:
    request = pb.IssueTokenRequest(subject=subject, device_id=device_id, audience=audience, policy=policy,  # type: ignore[arg-type]
                                   device_class=device_class, device_name=device_name)
    if guarded:
        request.expected_replacements.SetInParent()  # "replace nothing"
    if claims is not None:
        struct = _struct(claims)
        if struct is None:
            return
        request.claims.CopyFrom(struct)
    if ttl is not None:
        request.ttl.CopyFrom(ttl)
    try:
        issued = await fuzzed.stub.IssueToken(request)
    except grpc.aio.AioRpcError as error:
        allowed = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)
        assert error.code() in allowed, (error.code(), error.details())
        event(error.code().name)
        return
    event("OK")
    wanted_audience = audience or AUDIENCES[0]
    checked = time.time()
    authority_verdict = await _authority_verdict(fuzzed.stub, issued.access_token, wanted_audience)
    local_verdict = _local_verdict(local, issued.access_token, wanted_audience)
    if issued.expires_at.seconds <= checked + 2:
        # A token of a second or two (exp is whole seconds) may end while it is checked:
        # either verdict is VALID or EXPIRED, and the local one, taken later, is never the
        # earlier of the two.
        verdicts = (authority_verdict, local_verdict)
        assert set(verdicts) <= {"VALID", "EXPIRED"} and verdicts != ("EXPIRED", "VALID"), verdicts
        return
    assert authority_verdict == local_verdict == "VALID"
    verified = local.verify(issued.access_token, wanted_audience)
    assert (verified.subject, verified.device_id, verified.audience) == (subject, device_id, wanted_audience)
    expected_extra = json_format.MessageToDict(request.claims) if request.HasField("claims") else {}
    assert verified.extra == expected_extra
    assert verified.expires_at - time.time() <= 3600 + 1  # capped at the maximum ttl


# --- the local verifier alone ------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed() -> tuple[TokenVerifier, Any]:
    key = generate_key(Algorithm.ES256, time.time())
    # At the fixed time the payloads' times are drawn around (now, below), however late
    # in the run the module's tests come.
    verifier = TokenVerifier(KeySet.of([(key.kid, key.algorithm.value, key.public_key)]), issuer=ISSUER, leeway=0,
                             clock=lambda: now)
    return verifier, key


any_text = st.text(st.characters(codec=None, exclude_categories=[]), max_size=300)  # surrogates too


@FUZZ
@given(token=any_text | jwt_like_text, audience=any_text)
def test_local_verifier_raises_nothing_but_invalid_token_on_any_text(keyed: tuple[TokenVerifier, Any], token: str, audience: str) -> None:
    verifier, _ = keyed
    try:
        verifier.verify(token, audience)
    except InvalidToken:
        return
    raise AssertionError("accepted a token nobody signed")


MISSING = object()
now = int(time.time())


def _time(good: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return mostly(good, st.just(MISSING) | st.integers(-(2**64), 2**64) | json_values)


finite_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _present(**members: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with these members, each left out when it draws MISSING."""
    return st.fixed_dictionaries(members).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})


def _valid_or_not(good: Any) -> st.SearchStrategy[Any]:
    return mostly(st.just(good), st.just(MISSING) | json_values)


headers = _present(
    alg=mostly(st.just("ES256"), st.just(MISSING) | st.sampled_from(["none", "HS256", "EdDSA", "es256"]) | json_values),
    typ=_valid_or_not("at+jwt"),
    jwk=mostly(st.just(MISSING), json_values),
    crit=mostly(st.just(MISSING), json_values),
)
payloads = st.tuples(
    _present(
        iss=_valid_or_not(ISSUER), sub=mostly(st.text(max_size=5), st.just(MISSING) | json_values),
        aud=_valid_or_not(AUDIENCES[0]), exp=_time(st.integers(now + 100, now + 1000)),
        iat=_time(st.integers(now - 1000, now)), nbf=_time(st.integers(now - 1000, now)),
        jti=mostly(st.text(max_size=5), st.just(MISSING) | json_values),
        sid=mostly(st.text(max_size=5), st.just(MISSING) | json_values),
        device_id=mostly(st.text(max_size=5), st.just(MISSING) | json_values),
    ),
    mostly(st.dictionaries(st.text(max_size=10), finite_json_values, max_size=3),
           st.dictionaries(claim_names, json_values, max_size=3)),
).map(lambda parts: {**parts[1], **parts[0]})


@FUZZ
@given(header=headers, payload=payloads, use_kid=mostly(st.just(True), st.just(False)))
def test_local_verifier_on_signed_structures_accepts_only_well_typed_claims(
    keyed: tuple[TokenVerifier, Any], header: dict[str, Any], payload: dict[str, Any], use_kid: bool
) -> None:
    # Signed for real, so the checks after the signature are reached too.
    verifier, key = keyed
    if use_kid:
        header = {**header, "kid": key.kid}
    token = forge.sign_input(key, f"{forge.segment(header)}.{forge.segment(payload)}")
    try:
        claims = verifier.verify(token, AUDIENCES[0])
    except InvalidToken as invalid:
        event(invalid.reason.name)
        return
    event("VALID")
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"] == key.kid
    assert not {"jwk", "crit"} & header.keys()
    for name in ("exp", "iat", "nbf"):
        assert type(payload[name]) is int
    assert claims.issued_at <= now < claims.expires_at
    assert claims.extra == {k: v for k, v in payload.items() if k not in RESERVED_CLAIMS}
    assert (claims.issuer, claims.audience) == (ISSUER, AUDIENCES[0])


# --- proofs of possession: the checker alone -----------------------------------------------

PROOF_NOW = 1_800_000_000
PROOF_URI = "https://api.example.com/orders"
_DEVICE = ed25519.Ed25519PrivateKey.generate()
_DEVICE_JWK = dpop.public_jwk(_DEVICE)


def _proof_checker() -> ProofChecker:
    return ProofChecker(clock=lambda: PROOF_NOW)


def _bound_verifier() -> tuple[TokenVerifier, str]:
    """A verifier of its own (a fresh proof checker: no jti seen yet) and a token of its
    key, bound to the fuzzing device."""
    key, token = _bound_key_and_token()
    verifier = TokenVerifier(KeySet.of([(key.kid, "EdDSA", key.public_key)]), issuer=ISSUER, leeway=0,
                             clock=lambda: PROOF_NOW, proofs=_proof_checker())
    return verifier, token


@functools.cache
def _bound_key_and_token() -> tuple[Any, str]:
    key = generate_key(Algorithm.EDDSA, PROOF_NOW)
    token = forge.sign(key, {
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCES[0], "iat": PROOF_NOW, "nbf": PROOF_NOW, "exp": PROOF_NOW + 300,
        "jti": "t", "sid": "s", "device_id": "laptop", "cnf": {"jkt": dpop.thumbprint(_DEVICE)},
    })
    return key, token


@st.composite
def proof_mutations(draw: st.DrawFn) -> str:
    """A good proof for the bound token, then cut, spliced or re-spelt."""
    _, token = _bound_key_and_token()
    good = dpop.craft(_DEVICE, dpop.claims(PROOF_NOW, "POST", PROOF_URI, token=token, jti=draw(st.text(max_size=8))))
    return draw(mutations(good, dpop.craft(_DEVICE, dpop.claims(PROOF_NOW, "GET", PROOF_URI))))


@FUZZ
@given(proof=any_text | jwt_like_text | proof_mutations(), method=any_text | st.sampled_from(["POST", "GET"]),
       uri=any_text | st.just(PROOF_URI), thumbprint=st.none() | any_text, access_token=st.none() | any_text)
def test_proof_checker_raises_nothing_but_invalid_proof_on_any_text(
    proof: str, method: str, uri: str, thumbprint: str | None, access_token: str | None
) -> None:
    try:
        _proof_checker().check(Proof(proof, method, uri), access_token=access_token, key_thumbprint=thumbprint)
    except InvalidProof as invalid:
        event(invalid.check)
        assert invalid.reason is InvalidReason.BAD_PROOF
        assert proof not in str(invalid) or len(proof) < 16
        return
    # Only a proof signed by the device key passes: an unmangled good one, for its request.
    event("VALID")
    assert proof.count(".") == 2 and method == "POST" and thumbprint in (None, dpop.thumbprint(_DEVICE))


@FUZZ
@given(proof=any_text | jwt_like_text | proof_mutations(), method=any_text | st.sampled_from(["POST", "GET"]),
       uri=any_text | st.just(PROOF_URI))
def test_the_verifier_with_any_proof_raises_nothing_but_invalid_token(proof: str, method: str, uri: str) -> None:
    verifier, token = _bound_verifier()
    try:
        verifier.verify(token, AUDIENCES[0], Proof(proof, method, uri))
    except InvalidToken as invalid:
        event(invalid.reason.name)
        assert invalid.reason is InvalidReason.BAD_PROOF
        return
    event("VALID")
    assert method == "POST" and uri == PROOF_URI and proof.count(".") == 2


def test_the_verifier_accepts_the_unmangled_proof_once() -> None:
    """The accepting path the fuzzing above must be able to reach: a good proof for the
    request verifies the bound token, once (its jti is then spent)."""
    verifier, token = _bound_verifier()
    proof = Proof(dpop.craft(_DEVICE, dpop.claims(PROOF_NOW, "POST", PROOF_URI, token=token, jti="once")),
                  "POST", PROOF_URI)
    assert verifier.verify(token, AUDIENCES[0], proof).device_id == "laptop"
    with pytest.raises(InvalidToken) as replayed:
        verifier.verify(token, AUDIENCES[0], proof)
    assert replayed.value.reason is InvalidReason.BAD_PROOF


@FUZZ
@given(uri=any_text | st.from_regex(r"\A[hH][tT][tT][pP][sS]?://[\w.:\[\]@%-]{0,20}(/[\w.%~-]{0,6}){0,4}([?#].*)?\Z"))
def test_uri_normalisation_raises_nothing_but_value_error_and_is_idempotent(uri: str) -> None:
    try:
        normalized = normalize_uri(uri)
    except ValueError:
        return
    assert normalize_uri(normalized) == normalized
    assert "?" not in normalized and "#" not in normalized


_TOKEN = "a.b.c"
proof_headers = _present(
    typ=mostly(st.just("dpop+jwt"), st.just(MISSING) | st.sampled_from(["JWT", "at+jwt", "DPOP+JWT"]) | json_values),
    alg=mostly(st.just("EdDSA"), st.just(MISSING) | st.sampled_from(["none", "HS256", "ES256", "RS256", "Ed25519"])
               | json_values),
    jwk=mostly(st.just(_DEVICE_JWK), st.just(MISSING) | json_values | st.just({**_DEVICE_JWK, "d": forge.b64(bytes(32))})
               | st.just({**_DEVICE_JWK, "kid": "k", "ext": True})),
    crit=mostly(st.just(MISSING), json_values),
    kid=mostly(st.just(MISSING), json_values),
)
proof_claims = _present(
    jti=mostly(st.text(min_size=1, max_size=20), st.just(MISSING) | st.just("") | st.text(min_size=257, max_size=260)
               | json_values),
    htm=mostly(st.just("POST"), st.just(MISSING) | st.sampled_from(["GET", "post"]) | json_values),
    htu=mostly(st.sampled_from([PROOF_URI, "HTTPS://api.example.com:443/orders?x"]),
               st.just(MISSING) | st.just("https://api.example.com/other") | json_values),
    iat=mostly(st.integers(PROOF_NOW - 60, PROOF_NOW + 60) | st.floats(PROOF_NOW - 60, PROOF_NOW + 60),
               st.just(MISSING) | st.integers(-(2**64), 2**64) | json_values),
    ath=mostly(st.just(dpop.ath(_TOKEN)), st.just(MISSING) | json_values),
    extra=mostly(st.just(MISSING), finite_json_values),
)


@FUZZ
@given(header=proof_headers, claims=proof_claims)
def test_proof_checker_on_signed_structures_accepts_only_well_formed_proofs(
    header: dict[str, Any], claims: dict[str, Any]
) -> None:
    # Signed for real by the key the header names (when it names it), so every check is reached.
    proof = dpop.sign_raw(_DEVICE, f"{dpop.segment(header)}.{dpop.segment(claims)}")
    try:
        thumbprint = _proof_checker().check(Proof(proof, "POST", PROOF_URI), access_token=_TOKEN)
    except InvalidProof as invalid:
        event(invalid.check)
        return
    event("VALID")
    assert thumbprint == dpop.thumbprint(_DEVICE)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "EdDSA" and "crit" not in header
    assert {name: header["jwk"][name] for name in _DEVICE_JWK} == _DEVICE_JWK and "d" not in header["jwk"]
    assert type(claims["jti"]) is str and 0 < len(claims["jti"]) <= 256
    assert claims["htm"] == "POST" and normalize_uri(claims["htu"]) == PROOF_URI
    assert type(claims["iat"]) in (int, float) and abs(claims["iat"] - PROOF_NOW) <= 60
    assert claims["ath"] == dpop.ath(_TOKEN)
