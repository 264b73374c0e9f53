"""Attacks on token validation: a catalogue of malicious tokens, each rejected with the
right reason by the authority (ValidateToken on a real server) and by the consumer
package's local verifier (built from the server's GetSigningKeys), from one body.

Forgeries that must be valid but for one defect are signed with the server's own
private key; the control tests at the end show that without the defect they pass, so
each rejection is due to the defect alone. Replays of revoked tokens (logout, a sign-in
on a second device, a subject-wide revoke) can only be caught by the authority, and run
on both stores.

The catalogue also feeds the conformance corpus every verifier is held to
(``tests/vectors/tokens.json``, written by ``tests/vectors/generate.py``): there a
:class:`Target` has fixed keys, a fixed time and seeded identifiers instead of a server.

The proof attacks (device-bound tokens with bad DPoP proofs, tests/support/proof_attacks.py)
run against the local verifier, one fresh verifier per case, and against the authority's
ValidateToken once it checks proofs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import inspect
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import pytest_asyncio
from authority_client.v1 import authority_pb2 as pb
from authority_client.v1 import authority_pb2_grpc
from authority_client.proof import InvalidProof, Proof, ProofChecker
from authority_client.verify import InvalidToken, KeySet, TokenVerifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from google.protobuf.struct_pb2 import Struct

from authority.api.server import create_server
from authority.config import Algorithm, Settings
from authority.keys import SigningKey, generate_key
from tests.support import dpop, forge
from tests.support.calls import Stub, new_subject, reason, sign_in
from tests.support.proof_attacks import PROOF_ATTACKS, Presentation, ProofAttack, ProofTarget

ISSUER = "token-authority"
AUDIENCE = "api"
OTHER_AUDIENCE = "billing"
LIMIT = 8 * 1024
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# --- the server under attack -----------------------------------------------------------


@dataclasses.dataclass
class Target:
    """A running authority, the key it signs with, and what it has issued."""

    algorithm: Algorithm
    stub: Stub | None  # None for the corpus, which has no server
    key: SigningKey  # the server's own signing key, private half included
    foreign: SigningKey  # same algorithm, a key the server does not hold
    verifier: TokenVerifier | None  # the consumer package's, from the published key set
    issued: pb.IssueTokenResponse  # a real sign-in for AUDIENCE
    issued_elsewhere: pb.IssueTokenResponse  # a real sign-in for OTHER_AUDIENCE
    # For the corpus: a fixed time, seeded identifiers and fixed keys of no authority.
    fixed_now: int | None = None
    new_id: Callable[[], str] = functools.partial(secrets.token_urlsafe, 16)
    strangers: dict[Algorithm, SigningKey] | None = None

    def now(self) -> int:
        """The time tokens are made for: now, or the corpus's fixed time."""
        return int(time.time()) if self.fixed_now is None else self.fixed_now

    def stranger(self, algorithm: Algorithm) -> SigningKey:
        """A key of ``algorithm`` that no authority holds."""
        return _stranger(algorithm) if self.strangers is None else self.strangers[algorithm]

    def payload(self, without: str = "", **changes: Any) -> dict[str, Any]:
        """Claims of a valid token, changed as asked."""
        now = self.now()
        claims = {
            "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
            "jti": self.new_id(), "sid": self.new_id(), "device_id": "laptop",
            "role": "user", **changes,
        }
        claims.pop(without, None)
        return claims

    def header(self, **changes: Any) -> dict[str, Any]:
        """The header of a valid token, changed as asked."""
        return {"alg": self.algorithm.value, "kid": self.key.kid, "typ": "at+jwt", **changes}

    def forged(self, without: str = "", **changes: Any) -> str:
        """A token signed with the server's key whose claims are changed as asked (any JSON
        value: PyJWT's own encoder would refuse some of them)."""
        return self.signed_json(json.dumps(self.payload(without, **changes)))

    def signed_json(self, payload_json: bytes | str, header_json: bytes | str | None = None) -> str:
        """Segments of exactly this JSON text, signed with the server's key."""
        header = json.dumps(self.header()) if header_json is None else header_json
        return forge.sign_input(self.key, f"{_segment_of(header)}.{_segment_of(payload_json)}")


def _segment_of(text: bytes | str) -> str:
    return forge.b64(text.encode() if isinstance(text, str) else text)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=list(Algorithm), ids=lambda a: a.value)
async def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    """One authority per algorithm for the whole catalogue (SQLite: the store plays no part)."""
    algorithm: Algorithm = request.param
    database = tmp_path_factory.mktemp(f"attacks-{algorithm.value}") / "authority.db"
    settings = Settings(
        listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{database}", leeway=0,
        audiences=(AUDIENCE, OTHER_AUDIENCE), signing_algorithm=algorithm,
    )
    server = await create_server(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = authority_pb2_grpc.TokenAuthorityStub(channel)
        jwks = (await stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json
        yield Target(
            algorithm=algorithm,
            stub=stub,
            key=server.authority.codec.keyring.signing_key_at(time.time()),
            foreign=generate_key(algorithm, time.time()),
            verifier=TokenVerifier(KeySet.from_jwks(jwks), issuer=ISSUER, leeway=0),
            issued=await sign_in(stub, new_subject(), "laptop", audience=AUDIENCE),
            issued_elsewhere=await sign_in(stub, new_subject(), "laptop", audience=OTHER_AUDIENCE),
        )
    finally:
        await channel.close()
        await server.stop(None)


CHECKERS = ["authority", "local"]


async def _verdict(checker: str, target: Target, token: str, audience: str = AUDIENCE) -> str:
    """VALID, or the name of the reason the token is refused."""
    assert target.stub is not None and target.verifier is not None
    if checker == "authority":
        return await reason(target.stub, token, audience)
    try:
        target.verifier.verify(token, audience)
    except InvalidToken as invalid:
        return invalid.reason.name
    return "VALID"


# --- building blocks of the attacks ----------------------------------------------------


def _hmac_token(target: Target, secret: bytes, alg: str = "HS256") -> str:
    """Algorithm confusion: an HMAC over a valid token, keyed with ``secret``."""
    signing_input = f"{forge.segment(target.header(alg=alg))}.{forge.segment(target.payload())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{signing_input}.{forge.b64(hmac.new(secret, signing_input.encode(), digest).digest())}"


def _public_raw(target: Target) -> bytes:
    """The public key as bare bytes: the point for Ed25519 and P-256, the modulus for RSA."""
    public = target.key.public_key
    if isinstance(public, ed25519.Ed25519PublicKey):
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert isinstance(public, rsa.RSAPublicKey)
    n = public.public_numbers().n
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _public_spki(target: Target, encoding: serialization.Encoding) -> bytes:
    return target.key.public_key.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _with_signature(token: str, signature: bytes | str) -> str:
    encoded = forge.b64(signature) if isinstance(signature, bytes) else signature
    return token.rsplit(".", 1)[0] + "." + encoded


def _signature(token: str) -> bytes:
    return forge.unb64(token.rsplit(".", 1)[1])


def _set_trailing_bits(segment: str) -> str:
    """The same bytes spelled differently: the unused low bits of the last character set."""
    assert len(segment) % 4 in (2, 3), "a segment without unused bits"
    last = BASE64URL.index(segment[-1])
    return segment[:-1] + BASE64URL[last | 1]


def _standard_alphabet_signature(target: Target) -> str:
    """A validly signed token whose signature, spelled in the standard alphabet, differs."""
    for _ in range(200):
        token = target.forged()
        signature = _segments(token)[2]
        if "-" in signature or "_" in signature:
            return _with_signature(token, signature.replace("-", "+").replace("_", "/"))
    raise AssertionError("no signature with - or _ in 200 tries")


def _payload_with_trailing_bits(target: Target) -> str:
    """A payload segment with unused bits set, signed as it stands."""
    for pad in range(8):
        segment = forge.segment(target.payload(pad="x" * pad))
        if len(segment) % 4 in (2, 3):
            return forge.sign_input(target.key, f"{forge.segment(target.header())}.{_set_trailing_bits(segment)}")
    raise AssertionError("unreachable: lengths cycle through every remainder")


def _standard_alphabet_payload(target: Target) -> str:
    """A payload in the standard base64 alphabet (``+`` and ``/``), signed as it stands."""
    # "???" and ">>>" encode to "Pz8/" and "Pj4+" at any 3-byte-aligned offset; try all three.
    for shift in range(3):
        raw = json.dumps(target.payload(x="." * shift + "???>>>???>>>")).encode()
        segment = forge.b64(raw).replace("-", "+").replace("_", "/")
        if "+" in segment and "/" in segment:
            return forge.sign_input(target.key, f"{forge.segment(target.header())}.{segment}")
    raise AssertionError("no standard-alphabet spelling found")


def _high_s(target: Target) -> str:
    """The issued token with its ECDSA signature malleated to (r, n - s)."""
    return forge.high_s(target.issued.access_token)


def _ecdsa_signature(target: Target, r: int, s: int) -> str:
    return _with_signature(target.issued.access_token, r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _der_signature(target: Target) -> str:
    """The issued token's valid ECDSA signature re-encoded as DER (JWS wants r || s)."""
    raw = _signature(target.issued.access_token)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return _with_signature(target.issued.access_token, der)


def _zero_signature(target: Target) -> str:
    return _with_signature(target.issued.access_token, bytes(len(_signature(target.issued.access_token))))


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def _under_the_cap(token: str) -> str:
    assert len(token) <= LIMIT, "a bomb over the size cap would not reach the nesting check"
    return token


def _header_bomb(target: Target) -> str:
    header = json.dumps(target.header())[:-1] + f', "x": {_nested(2400)}}}'
    signature = _segments(target.issued.access_token)[2]
    return _under_the_cap(f"{_segment_of(header)}.{forge.segment(target.payload())}.{signature}")


def _unclosed_header_bomb(target: Target) -> str:
    signature = _segments(target.issued.access_token)[2]
    return _under_the_cap(f"{_segment_of('[' * 5000)}.{forge.segment(target.payload())}.{signature}")


def _payload_bomb(target: Target) -> str:
    payload = json.dumps(target.payload())[:-1] + f', "x": {_nested(2400)}}}'
    return _under_the_cap(target.signed_json(payload))


def _one_level_too_deep(target: Target) -> str:
    # The payload object is level 1: 32 more levels reach the limit of 33, 33 more pass it.
    payload = json.dumps(target.payload())[:-1] + f', "x": {_nested(33)}}}'
    return target.signed_json(payload)


def _over_the_cap(target: Target) -> str:
    """A validly signed token one byte over 8 KiB."""
    def signed(pad: int) -> str:
        return forge.sign(target.key, target.payload(pad="x" * pad))

    pad = (LIMIT - len(signed(0))) * 3 // 4
    while len(signed(pad)) <= LIMIT:
        pad += 1
    while len(signed(pad - 1)) > LIMIT:
        pad -= 1
    token = signed(pad)
    assert len(token) > LIMIT >= len(signed(pad - 1))
    return token


def _duplicate(target: Target, name: str, first: Any, second: Any) -> str:
    claims = {key: value for key, value in target.payload().items() if key != name}
    text = json.dumps(claims)[:-1] + f", {json.dumps(name)}: {json.dumps(first)}, {json.dumps(name)}: {json.dumps(second)}}}"
    return target.signed_json(text)


def _duplicate_header(target: Target, name: str, second: Any) -> str:
    header = json.dumps(target.header())[:-1] + f", {json.dumps(name)}: {json.dumps(second)}}}"
    return target.signed_json(json.dumps(target.payload()), header)


def _claim_json(target: Target, name: str, json_value: str) -> str:
    """A payload whose ``name`` claim is this JSON text, exactly (NaN, 1e999, a long integer)."""
    claims = {key: value for key, value in target.payload().items() if key != name}
    return target.signed_json(json.dumps(claims)[:-1] + f', {json.dumps(name)}: {json_value}}}')


# --- the catalogue -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attack:
    """A malicious token, the reason it must be refused with, and the audience asked for."""

    name: str
    build: Callable[[Target], str]
    expected: str
    only: Algorithm | None = None  # attacks that make sense for one algorithm only
    audience: str = AUDIENCE


def _attacks() -> list[Attack]:
    attacks: list[Attack] = []

    def add(name: str, expected: str, build: Callable[[Target], str], only: Algorithm | None = None) -> None:
        attacks.append(Attack(name, build, expected, only))

    def issued(change: Callable[[str], str]) -> Callable[[Target], str]:
        return lambda t: change(t.issued.access_token)

    # alg none, in every letter case, unsigned (empty third segment) and with a signature.
    for alg in ("none", "None", "NONE", "nOnE", "NoNe"):
        def none(t: Target, alg: str = alg) -> str:
            return f"{forge.segment(t.header(alg=alg))}.{forge.segment(t.payload())}."
        add(f"alg-{alg}-unsigned", "MALFORMED", none)
        add(f"alg-{alg}-signed", "BAD_SIGNATURE", lambda t, none=none: none(t) + forge.b64(b"signature"))
        add(f"alg-{alg}-with-the-real-signature", "BAD_SIGNATURE",
            lambda t, none=none: none(t) + _segments(t.forged())[2])
    add("alg-missing", "MALFORMED",
        lambda t: forge.sign_input(t.key, f"{forge.segment({'kid': t.key.kid, 'typ': 'at+jwt'})}.{forge.segment(t.payload())}"))
    add("alg-ours-in-other-letter-case", "BAD_SIGNATURE",
        lambda t: f"{forge.segment(t.header(alg=t.algorithm.value.swapcase()))}.{forge.segment(t.payload())}"
                  f".{_segments(t.forged())[2]}")
    for other in Algorithm:
        add(f"signed-by-an-{other.value}-key-under-our-kid", "BAD_SIGNATURE",
            lambda t, other=other: forge.sign(t.stranger(other), t.payload(), kid=t.key.kid))
    add("our-signature-under-a-related-alg", "BAD_SIGNATURE", lambda t: _with_alg(t, _RELATED[t.algorithm]))

    # Algorithm confusion: HMAC keyed with our public key, in every form a library might take.
    add("hs256-keyed-with-public-pem", "BAD_SIGNATURE", lambda t: _hmac_token(t, _public_spki(t, serialization.Encoding.PEM)))
    add("hs256-keyed-with-public-der", "BAD_SIGNATURE", lambda t: _hmac_token(t, _public_spki(t, serialization.Encoding.DER)))
    add("hs256-keyed-with-public-jwk-json", "BAD_SIGNATURE", lambda t: _hmac_token(t, json.dumps(t.key.public_jwk()).encode()))
    add("hs256-keyed-with-public-raw-bytes", "BAD_SIGNATURE", lambda t: _hmac_token(t, _public_raw(t)))
    add("hs512-keyed-with-public-pem", "BAD_SIGNATURE",
        lambda t: _hmac_token(t, _public_spki(t, serialization.Encoding.PEM), "HS512"))
    add("hmac-under-our-own-alg", "BAD_SIGNATURE",
        lambda t: _with_signature(t.forged(), _signature(_hmac_token(t, _public_spki(t, serialization.Encoding.PEM)))))

    # Keys that are not ours.
    add("foreign-key-signature-under-our-kid", "BAD_SIGNATURE", lambda t: forge.sign(t.foreign, t.payload(), kid=t.key.kid))
    add("foreign-key-under-its-own-kid", "UNKNOWN_KEY", lambda t: forge.sign(t.foreign, t.payload()))
    add("kid-path-traversal", "UNKNOWN_KEY", lambda t: forge.sign(t.key, t.payload(), kid="../../../etc/passwd"))
    add("kid-sql", "UNKNOWN_KEY", lambda t: forge.sign(t.key, t.payload(), kid="' OR '1'='1"))
    add("kid-missing", "MALFORMED",
        lambda t: forge.sign_input(t.key, f"{forge.segment({'alg': t.algorithm.value, 'typ': 'at+jwt'})}.{forge.segment(t.payload())}"))
    add("kid-a-number", "MALFORMED",
        lambda t: forge.sign_input(t.key, f"{forge.segment(t.header(kid=1))}.{forge.segment(t.payload())}"))

    # Headers that name a key or add rules: refused even when everything else is right.
    add("embedded-jwk-of-a-foreign-key", "MALFORMED",
        lambda t: forge.sign(t.foreign, t.payload(), kid=t.key.kid, jwk=t.foreign.public_jwk()))
    add("embedded-jwk-of-our-own-key", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), jwk=t.key.public_jwk()))
    add("jku", "MALFORMED", lambda t: forge.sign(t.foreign, t.payload(), kid=t.key.kid, jku="https://evil.example/jwks.json"))
    add("x5u", "MALFORMED", lambda t: forge.sign(t.foreign, t.payload(), kid=t.key.kid, x5u="https://evil.example/cert.pem"))
    add("x5c", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), x5c=["MIIBszCCAVmgAwIBAgIU"]))
    add("x5t#S256", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), **{"x5t#S256": "c2hhMjU2"}))
    add("crit", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), crit=["exp"]))
    add("typ-JWT", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), typ="JWT"))
    add("typ-missing", "MALFORMED", lambda t: forge.sign(t.key, t.payload(), typ=None))

    # Signatures: zero, truncated, and (ES256) the malleated and mis-encoded forms.
    add("all-zero-signature", "BAD_SIGNATURE", _zero_signature)
    add("signature-one-byte-short", "BAD_SIGNATURE",
        lambda t: _with_signature(t.issued.access_token, _signature(t.issued.access_token)[:-1]))
    add("signature-of-another-token", "BAD_SIGNATURE",
        lambda t: _with_signature(t.forged(), _segments(t.issued.access_token)[2]))
    add("payload-changed-under-the-signature", "BAD_SIGNATURE",
        lambda t: f"{_segments(t.issued.access_token)[0]}.{forge.segment(t.payload(sub='mallory'))}"
                  f".{_segments(t.issued.access_token)[2]}")
    add("ecdsa-malleated-high-s", "BAD_SIGNATURE", _high_s, only=Algorithm.ES256)
    add("ecdsa-r-and-s-zero", "BAD_SIGNATURE", lambda t: _ecdsa_signature(t, 0, 0), only=Algorithm.ES256)
    add("ecdsa-s-equal-to-the-order", "BAD_SIGNATURE",
        lambda t: _ecdsa_signature(t, int.from_bytes(_signature(t.issued.access_token)[:32], "big"), forge.P256_ORDER),
        only=Algorithm.ES256)
    add("ecdsa-r-equal-to-the-order", "BAD_SIGNATURE",
        lambda t: _ecdsa_signature(t, forge.P256_ORDER, int.from_bytes(_signature(t.issued.access_token)[32:], "big")),
        only=Algorithm.ES256)
    add("ecdsa-der-encoded", "BAD_SIGNATURE", _der_signature, only=Algorithm.ES256)

    # One token, one spelling: the same bytes written another way are refused.
    for index, part in enumerate(("header", "payload", "signature")):
        add(f"padding-on-the-{part}", "MALFORMED",
            issued(lambda tok, i=index: ".".join(s + "=" * (1 if j == i else 0) for j, s in enumerate(tok.split(".")))))
    add("full-padding-on-the-signature", "MALFORMED", issued(lambda tok: tok + "=="))
    add("signature-with-unused-bits-set", "MALFORMED",
        issued(lambda tok: _with_signature(tok, _set_trailing_bits(tok.rsplit(".", 1)[1]))))
    add("payload-with-unused-bits-set-and-signed", "MALFORMED", _payload_with_trailing_bits)
    add("signature-in-the-standard-alphabet", "MALFORMED", _standard_alphabet_signature)
    add("payload-in-the-standard-alphabet-and-signed", "MALFORMED", _standard_alphabet_payload)
    add("newline-inside", "MALFORMED", issued(lambda tok: tok[:20] + "\n" + tok[20:]))
    add("trailing-newline", "MALFORMED", issued(lambda tok: tok + "\n"))
    add("leading-space", "MALFORMED", issued(lambda tok: " " + tok))
    add("bearer-prefix", "MALFORMED", issued(lambda tok: "Bearer " + tok))
    add("stray-character", "MALFORMED", issued(lambda tok: tok[:30] + "!" + tok[30:]))
    add("nul-character", "MALFORMED", issued(lambda tok: tok + "\x00"))
    add("fullwidth-dots", "MALFORMED", issued(lambda tok: tok.replace(".", "\uff0e")))
    add("non-ascii-letter", "MALFORMED", issued(lambda tok: tok[:10] + "\u00e9" + tok[11:]))

    # Missing and extra segments.
    add("one-segment", "MALFORMED", issued(lambda tok: tok.split(".")[0]))
    add("two-segments", "MALFORMED", issued(lambda tok: tok.rsplit(".", 1)[0]))
    add("two-segments-and-a-dot", "MALFORMED", issued(lambda tok: tok.rsplit(".", 1)[0] + "."))
    add("four-segments", "MALFORMED", issued(lambda tok: tok + "." + tok.split(".")[2]))
    add("five-segments-jwe-shaped", "MALFORMED", issued(lambda tok: tok + ".." + tok.split(".")[2]))
    add("empty-payload", "MALFORMED", issued(lambda tok: f"{tok.split('.')[0]}..{tok.split('.')[2]}"))
    add("empty-header", "MALFORMED", issued(lambda tok: tok[tok.index("."):]))
    add("only-dots", "MALFORMED", lambda t: "..")
    add("one-dot", "MALFORMED", lambda t: ".")
    add("refresh-token-as-access-token", "MALFORMED", lambda t: t.issued.refresh_token)
    add("session-id-as-access-token", "MALFORMED", lambda t: t.issued.session_id)

    # Size and nesting.
    add("megabyte-of-letters", "MALFORMED", lambda t: "a" * 2**20)
    add("megabyte-payload", "MALFORMED",
        issued(lambda tok: f"{tok.split('.')[0]}.{'A' * 2**20}.{tok.split('.')[2]}"))
    add("signed-one-byte-over-8-kib", "MALFORMED", _over_the_cap)
    add("nesting-bomb-in-the-header", "MALFORMED", _header_bomb)
    add("unclosed-nesting-bomb-in-the-header", "MALFORMED", _unclosed_header_bomb)
    add("nesting-bomb-in-the-payload-signed", "MALFORMED", _payload_bomb)
    add("payload-one-level-too-deep-signed", "MALFORMED", _one_level_too_deep)
    add("header-a-json-list", "MALFORMED",
        lambda t: forge.sign_input(t.key, f"{forge.segment([t.header()])}.{forge.segment(t.payload())}"))
    add("payload-a-json-list-signed", "MALFORMED", lambda t: t.signed_json(json.dumps([t.payload()])))
    add("payload-not-json-signed", "MALFORMED", lambda t: t.signed_json("{not json"))
    add("payload-trailing-data-signed", "MALFORMED", lambda t: t.signed_json(json.dumps(t.payload()) + " {}"))
    add("payload-invalid-utf8-signed", "MALFORMED", lambda t: t.signed_json(json.dumps(t.payload()).encode()[:-1] + b', "x": "\xff"}'))
    add("payload-utf8-encoded-surrogate-signed", "MALFORMED",
        lambda t: t.signed_json(json.dumps(t.payload())[:-1].encode() + b', "x": "\xed\xa0\x80"}'))

    # Duplicate names: readers disagree on which one wins.
    add("duplicate-sub", "MALFORMED", lambda t: _duplicate(t, "sub", "alice", "admin"))
    add("duplicate-exp", "MALFORMED", lambda t: _duplicate(t, "exp", t.now() - 60, t.now() + 300))
    add("duplicate-aud", "MALFORMED", lambda t: _duplicate(t, "aud", "elsewhere", AUDIENCE))
    add("duplicate-application-claim", "MALFORMED", lambda t: _duplicate(t, "role", "user", "admin"))
    add("duplicate-in-a-nested-claim", "MALFORMED",
        lambda t: _claim_json(t, "org", '{"id": 1, "id": 2}'))
    add("duplicate-alg-in-the-header", "MALFORMED", lambda t: _duplicate_header(t, "alg", "none"))
    add("duplicate-kid-in-the-header", "MALFORMED", lambda t: _duplicate_header(t, "kid", t.foreign.kid))

    # Time claims: whole seconds as plain integers, in the range a Timestamp holds.
    # Each value is made from the target's time.
    for name, value in [
        ("exp-a-string", lambda now: "tomorrow"), ("exp-digits-in-a-string", lambda now: str(now + 300)),
        ("exp-a-float", lambda now: now + 300.0), ("exp-a-fraction", lambda now: now + 300.5),
        ("exp-true", lambda now: True), ("exp-false", lambda now: False), ("exp-10**50", lambda now: 10**50),
        ("exp-null", lambda now: None), ("exp-negative", lambda now: -1),
        ("exp-past-year-9999", lambda now: 253_402_300_800), ("exp-a-list", lambda now: [now + 300]),
        ("iat-true", lambda now: True), ("iat-a-float", lambda now: now + 0.5),
        ("nbf-a-string", lambda now: str(now)), ("nbf-10**50", lambda now: 10**50),
    ]:
        claim = name.split("-", 1)[0]
        add(name, "MALFORMED", lambda t, claim=claim, value=value: t.forged(**{claim: value(t.now())}))
    for claim in ("exp", "iat", "nbf", "jti", "sub", "sid", "device_id", "iss", "aud"):
        add(f"{claim}-missing", "MALFORMED", lambda t, claim=claim: t.forged(without=claim))
    add("exp-1e10-in-exponent-form", "MALFORMED", lambda t: _claim_json(t, "exp", "1e10"))
    add("exp-NaN", "MALFORMED", lambda t: _claim_json(t, "exp", "NaN"))
    add("exp-Infinity", "MALFORMED", lambda t: _claim_json(t, "exp", "Infinity"))
    add("exp-1e999", "MALFORMED", lambda t: _claim_json(t, "exp", "1e999"))
    add("application-claim-1e999", "MALFORMED", lambda t: _claim_json(t, "score", "1e999"))
    add("application-claim-400-digits", "MALFORMED", lambda t: _claim_json(t, "score", "9" * 400))
    add("application-claim-NaN", "MALFORMED", lambda t: _claim_json(t, "score", "NaN"))
    add("expired", "EXPIRED", lambda t: t.forged(iat=t.now() - 600, nbf=t.now() - 600, exp=t.now() - 300))
    add("not-yet-valid", "NOT_YET_VALID", lambda t: t.forged(nbf=t.now() + 300))
    add("issued-in-the-future", "NOT_YET_VALID", lambda t: t.forged(iat=t.now() + 300))

    # Issuer and audience: exact strings.
    for issuer in ("evil", "token-authorit", "token-authority-evil", "token-authority ", "TOKEN-AUTHORITY", ""):
        add(f"iss-{issuer!r}", "WRONG_ISSUER", lambda t, issuer=issuer: t.forged(iss=issuer))
    add("iss-a-list", "MALFORMED", lambda t: t.forged(iss=[ISSUER]))
    add("aud-a-list-of-ours", "WRONG_AUDIENCE", lambda t: t.forged(aud=[AUDIENCE]))
    add("aud-a-list-with-ours-and-another", "WRONG_AUDIENCE", lambda t: t.forged(aud=[AUDIENCE, OTHER_AUDIENCE]))
    add("aud-of-another-service-forged", "WRONG_AUDIENCE", lambda t: t.forged(aud=OTHER_AUDIENCE))
    add("aud-of-another-service-issued", "WRONG_AUDIENCE", lambda t: t.issued_elsewhere.access_token)
    add("aud-a-prefix-of-ours", "WRONG_AUDIENCE", lambda t: t.forged(aud=AUDIENCE[:-1]))
    add("aud-ours-with-a-suffix", "WRONG_AUDIENCE", lambda t: t.forged(aud=AUDIENCE + "-evil"))
    add("aud-null", "MALFORMED", lambda t: t.forged(aud=None))
    add("aud-an-object", "MALFORMED", lambda t: t.forged(aud={"aud": AUDIENCE}))

    # NUL and lone surrogates: identifiers the authority never issues, text with no UTF-8 form.
    add("nul-in-sub", "MALFORMED", lambda t: t.forged(sub="alice\x00admin"))
    add("nul-in-sid", "MALFORMED", lambda t: t.forged(sid="sess\x00"))
    add("nul-in-device-id", "MALFORMED", lambda t: t.forged(device_id="laptop\x00"))
    add("nul-in-aud", "MALFORMED", lambda t: t.forged(aud=AUDIENCE + "\x00"))
    add("nul-in-iss", "MALFORMED", lambda t: t.forged(iss=ISSUER + "\x00"))
    add("nul-in-a-claim-name", "MALFORMED", lambda t: t.forged(**{"ro\x00le": "admin"}))
    # A name is a name at any depth: a nested one with NUL is refused as a top-level one is.
    add("nul-in-a-nested-claim-name", "MALFORMED", lambda t: t.forged(profile={"a\x00b": 1}))
    add("nul-in-a-claim-name-in-a-list", "MALFORMED", lambda t: t.forged(groups=["a", {"ro\x00le": "admin"}]))
    add("nul-in-a-claim-name-32-levels-down", "MALFORMED", lambda t: t.forged(deep=_objects(31, {"\x00": 1})))
    add("lone-surrogate-in-sub", "MALFORMED", lambda t: t.forged(sub="alice\ud800"))
    add("lone-low-surrogate-in-jti", "MALFORMED", lambda t: t.forged(jti="\udfff"))
    add("lone-surrogate-in-an-application-claim", "MALFORMED", lambda t: t.forged(role="\ud83d"))
    add("lone-surrogate-in-a-claim-name", "MALFORMED", lambda t: t.forged(**{"\udc00": 1}))
    add("lone-surrogate-deep-in-a-claim", "MALFORMED", lambda t: t.forged(org={"tags": ["a", ["\ud800"]]}))
    add("lone-surrogate-in-the-kid", "UNKNOWN_KEY", lambda t: forge.sign(t.key, t.payload(), kid=t.key.kid + "\ud800"))

    # Device-bound tokens (RFC 9449 cnf): never accepted as a plain bearer token (no
    # downgrade); a confirmation other than one thumbprint is one nothing could check.
    add("cnf-device-bound-without-a-proof", "PROOF_REQUIRED", lambda t: t.forged(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}))
    add("cnf-empty", "MALFORMED", lambda t: t.forged(cnf={}))
    add("cnf-null", "MALFORMED", lambda t: t.forged(cnf=None))
    add("cnf-a-string", "MALFORMED", lambda t: t.forged(cnf="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"))
    add("cnf-jkt-not-a-string", "MALFORMED", lambda t: t.forged(cnf={"jkt": 1}))
    add("cnf-jkt-too-short", "MALFORMED", lambda t: t.forged(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4"}))
    add("cnf-jkt-padded", "MALFORMED", lambda t: t.forged(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I="}))
    add("cnf-jkt-trailing-bits-set", "MALFORMED", lambda t: t.forged(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4J"}))
    add("cnf-jkt-and-another-member", "MALFORMED",
        lambda t: t.forged(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", "x5t#S256": "AAAA"}))
    add("cnf-jwk-instead-of-jkt", "MALFORMED", lambda t: t.forged(cnf={"jwk": {"kty": "OKP", "crv": "Ed25519"}}))
    return attacks


@functools.cache
def _stranger(algorithm: Algorithm) -> SigningKey:
    """A key of ``algorithm`` that no authority holds (generated once: RSA is slow)."""
    return generate_key(algorithm, time.time())


# An algorithm a library would run with the same key: another curve size or padding.
_RELATED = {Algorithm.EDDSA: "Ed25519", Algorithm.ES256: "ES384", Algorithm.RS256: "PS256"}


def _with_alg(target: Target, alg: str) -> str:
    """A real signature of ours under a header naming another algorithm of the same key type."""
    return f"{forge.segment(target.header(alg=alg))}.{forge.segment(target.payload())}.{_segments(target.forged())[2]}"


ATTACKS = _attacks()
ANY_ALGORITHM = [attack for attack in ATTACKS if attack.only is None]
ES256_ONLY = [attack for attack in ATTACKS if attack.only is Algorithm.ES256]


def test_attack_names_are_unique() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))
    assert len(ANY_ALGORITHM) + len(ES256_ONLY) == len(ATTACKS)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize("attack", ANY_ALGORITHM, ids=lambda attack: attack.name)
async def test_malicious_token_is_refused_with_its_reason(target: Target, attack: Attack, checker: str) -> None:
    token = attack.build(target)
    assert await _verdict(checker, target, token, attack.audience) == attack.expected


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize("attack", ES256_ONLY, ids=lambda attack: attack.name)
@pytest.mark.parametrize("target", [Algorithm.ES256], ids=lambda a: a.value, indirect=True)
async def test_malicious_ecdsa_signature_is_refused(target: Target, attack: Attack, checker: str) -> None:
    token = attack.build(target)
    assert await _verdict(checker, target, token, attack.audience) == attack.expected


# --- controls: without its defect, each forgery passes -----------------------------------


def controls(target: Target) -> dict[str, tuple[str, str]]:
    """Forgeries without a defect, each valid for its audience: ``name -> (token, audience)``."""
    tokens = {
        "issued": target.issued.access_token,
        "forged": target.forged(),
        "signed-json": target.signed_json(json.dumps(target.payload())),
        "signed-json-with-our-header": target.signed_json(json.dumps(target.payload()), json.dumps(target.header())),
        "33-levels-of-lists": target.signed_json(json.dumps(target.payload())[:-1] + f', "x": {_nested(32)}}}'),
        "33-levels-of-objects": target.forged(x=_objects(32)),
        "many-brackets-shallow": target.forged(items=[{"n": n} for n in range(200)]),
        "brackets-inside-strings": target.forged(text="[" * 2000 + "{" * 2000),
        "escaped-quotes-and-backslashes": target.forged(text='\\"[\\' * 300),
        "surrogate-pair-and-nul-in-an-application-claim": target.forged(role="\U0001f600 \x00"),
        "nul-in-nested-claim-values": target.forged(profile={"note": "a\x00b", "tags": ["\x00"]}),
        "escaped-backslash-u0000-in-a-nested-claim-name": target.forged(profile={"a\\u0000b": 1}),
        "application-claim-300-digits": target.signed_json(json.dumps(target.payload())[:-1] + ', "n": ' + "9" * 300 + "}"),
        "exp-at-the-end-of-year-9999": target.forged(exp=253_402_300_799),
        "another-service-for-its-audience": target.issued_elsewhere.access_token,
    }
    audiences = {"another-service-for-its-audience": OTHER_AUDIENCE}
    return {name: (token, audiences.get(name, AUDIENCE)) for name, token in tokens.items()}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("checker", CHECKERS)
async def test_forgeries_without_a_defect_are_valid(target: Target, checker: str) -> None:
    valid = controls(target)
    verdicts = {name: await _verdict(checker, target, token, audience) for name, (token, audience) in valid.items()}
    assert verdicts == dict.fromkeys(valid, "VALID")


def _objects(depth: int, bottom: Any = "bottom") -> Any:
    value: Any = bottom
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("checker", CHECKERS)
async def test_deepest_claims_a_sign_in_may_carry_validate(target: Target, checker: str) -> None:
    # Guards MAX_JSON_DEPTH against refusing what the authority issues: 32 levels under a
    # claim, with the payload object 33.
    assert target.stub is not None
    claims = Struct()
    claims.update({"deep": _objects(32)})
    issued = await sign_in(target.stub, new_subject(), "laptop", audience=AUDIENCE, claims=claims)
    assert await _verdict(checker, target, issued.access_token) == "VALID"


@pytest.mark.asyncio(loop_scope="module")
async def test_sign_in_with_claims_deeper_than_a_token_may_be_is_invalid_argument(target: Target) -> None:
    assert target.stub is not None
    subject, deep = new_subject(), Struct()
    deep.update({"deep": _nested_lists(33)})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await sign_in(target.stub, subject, "laptop", audience=AUDIENCE, claims=deep)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "claims" in (caught.value.details() or "")
    sessions = await target.stub.ListSessions(pb.ListSessionsRequest(subject=subject))
    assert not sessions.sessions  # refused before commit: no session was opened

    # Refused as the bad request it is before any policy is applied: not as a sign-in the
    # REJECT policy refuses (FAILED_PRECONDITION), and no preview allows it.
    laptop = await sign_in(target.stub, subject, "laptop", audience=AUDIENCE)
    phone = pb.IssueTokenRequest(subject=subject, device_id="phone", audience=AUDIENCE, claims=deep,
                                 policy=pb.SESSION_POLICY_REJECT)
    for call in (target.stub.IssueToken, target.stub.PreviewSignIn):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(phone)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert "claims: must not nest" in (caught.value.details() or "")
    sessions = await target.stub.ListSessions(pb.ListSessionsRequest(subject=subject))
    assert [s.session_id for s in sessions.sessions] == [laptop.session_id]


def _nested_lists(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


# --- replay of revoked tokens: the authority alone knows, on every store ----------------


async def test_replay_after_logout_is_revoked(stub: Stub) -> None:
    signed_in = await sign_in(stub, new_subject(), "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token))
    assert await reason(stub, signed_in.access_token) == "REVOKED"


async def test_replay_after_a_sign_in_on_a_second_device_is_revoked(stub: Stub) -> None:
    subject = new_subject()
    first = await sign_in(stub, subject, "laptop")
    second = await sign_in(stub, subject, "phone")
    assert await reason(stub, first.access_token) == "REVOKED"
    assert await reason(stub, second.access_token) == "VALID"


async def test_replay_after_a_subject_wide_revoke_is_revoked(stub: Stub) -> None:
    subject = new_subject()
    signed_in = await sign_in(stub, subject, "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(subject=subject))
    assert await reason(stub, signed_in.access_token) == "REVOKED"


async def test_replay_of_a_revoked_token_with_another_spelling_is_malformed(stub: Stub) -> None:
    # A second spelling must not be a way around the revocation either.
    signed_in = await sign_in(stub, new_subject(), "laptop")
    await stub.RevokeToken(pb.RevokeTokenRequest(token=signed_in.access_token))
    assert await reason(stub, signed_in.access_token + "=") == "MALFORMED"
    assert await reason(stub, signed_in.access_token) == "REVOKED"


# --- proofs of possession: device-bound tokens with bad proofs (issue 13 section 6) --------


@functools.cache
def _devices() -> dict[str, dpop.PrivateKey]:
    """Device keys of no authority (generated once: RSA is slow)."""
    return {
        "EdDSA": ed25519.Ed25519PrivateKey.generate(), "ES256": ec.generate_private_key(ec.SECP256R1()),
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "thief": ed25519.Ed25519PrivateKey.generate(),
    }


def proof_target(target: Target, devices: dict[str, dpop.PrivateKey]) -> ProofTarget:
    """The proof cases' view of ``target``: tokens of its key at its time, one instant
    for the token, its proofs and the verifier's clock (a second that ticked between
    them would make the token not yet valid on that clock)."""
    now = target.now()
    return ProofTarget(sign=dataclasses.replace(target, fixed_now=now).forged, now=now, new_id=target.new_id,
                       devices=devices)


def proof_outcome(
    verifier: TokenVerifier, token: str, audience: str, presentation: Presentation
) -> tuple[str, str | None]:
    """What ``verifier`` answers to one presentation: the outcome and the failed check."""
    proof = None if presentation.proof is None else Proof(
        presentation.proof, presentation.http_method, presentation.http_uri)
    try:
        verifier.verify(token, audience, proof)
    except InvalidProof as invalid:
        return invalid.reason.name, invalid.check
    except InvalidToken as invalid:
        return invalid.reason.name, None
    return "VALID", None


def _checker(attack: ProofAttack, clock: Callable[[], float]) -> ProofChecker:
    if attack.replay_cache_size is None:
        return ProofChecker(clock=clock)
    return ProofChecker(clock=clock, replay_cache_size=attack.replay_cache_size)


def test_proof_attack_names_are_unique_and_apart_from_the_token_attacks() -> None:
    names = [attack.name for attack in PROOF_ATTACKS]
    assert len(names) == len(set(names))
    assert not set(names) & {attack.name for attack in ATTACKS}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("attack", PROOF_ATTACKS, ids=lambda attack: attack.name)
async def test_malicious_proof_is_refused_by_the_local_verifier(target: Target, attack: ProofAttack) -> None:
    assert target.verifier is not None
    cases = proof_target(target, _devices())
    token, presentations = attack.build(cases)
    # One fresh verifier per case, on the case's clock: its replay cache starts empty.
    verifier = TokenVerifier(target.verifier.keys, issuer=ISSUER, leeway=0, clock=lambda: cases.now,
                             proofs=_checker(attack, lambda: cases.now))
    outcomes = [proof_outcome(verifier, token, attack.audience, presentation) for presentation in presentations]
    assert outcomes == [(presentation.expected, presentation.check) for presentation in presentations]


def _authority_takes_proofs() -> bool:
    """Whether the authority passes ValidateToken's proof on to its verifier (issue 13)."""
    from authority.validation import Validator

    return "proof" in inspect.signature(Validator.validate).parameters


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "attack", [attack for attack in PROOF_ATTACKS if not attack.exact_time and attack.replay_cache_size is None],
    ids=lambda attack: attack.name,
)
async def test_malicious_proof_is_refused_by_the_authority(target: Target, attack: ProofAttack) -> None:
    if not _authority_takes_proofs():
        pytest.skip("the authority does not check ValidateToken's proof yet")
    assert target.stub is not None
    # Fresh identifiers: the server's replay cache is shared by every case of the module.
    token, presentations = attack.build(proof_target(target, _devices()))
    outcomes = []
    for shown in presentations:
        proof = None if shown.proof is None else pb.ProofOfPossession(
            proof=shown.proof, http_method=shown.http_method, http_uri=shown.http_uri)
        request = pb.ValidateTokenRequest(token=token, audience=attack.audience, proof=proof)
        answer = await target.stub.ValidateToken(request)
        name = pb.InvalidReason.Name(answer.reason).removeprefix("INVALID_REASON_")
        outcomes.append("VALID" if answer.valid else name)
    assert outcomes == [shown.expected for shown in presentations]
