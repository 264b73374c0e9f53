"""Access tokens: the codec with real keys of every algorithm, then ValidateToken and
GetSigningKeys through a real server. Hostile tokens are built here with real crypto."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from authority_client.v1 import authority_pb2 as pb
from cryptography.hazmat.primitives import serialization
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct

from authority.config import Algorithm, Settings
from authority.keys import KeyRing, SigningKey, generate_key
from authority.tokens import AccessClaims, InvalidReason, InvalidToken, TokenCodec
from tests.conftest import StartServer
from tests.support import forge
from tests.support.calls import Stub, new_subject, reason, rpc_error, sign_in, validate

ISSUER = "token-authority"
AUDIENCE = "api"
LIMIT = 8 * 1024
PRIVATE_JWK_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


# --- helpers ------------------------------------------------------------------------


@functools.cache
def _key(algorithm: Algorithm, which: str = "ours") -> SigningKey:
    """One real key per algorithm and owner, generated once (RSA is slow)."""
    return generate_key(algorithm, time.time())


@pytest.fixture(params=list(Algorithm), ids=lambda a: a.value)
def key(request: pytest.FixtureRequest) -> SigningKey:
    return _key(request.param)


@pytest.fixture
def foreign(key: SigningKey) -> SigningKey:
    """A key of the same algorithm that the ring does not hold."""
    return _key(key.algorithm, "foreign")


@pytest.fixture
def codec(key: SigningKey) -> TokenCodec:
    return TokenCodec(KeyRing([key], key.algorithm), ISSUER, leeway=0)


def _claims(**changes: Any) -> AccessClaims:
    now = int(time.time())
    claims = AccessClaims(
        subject="alice", device_id="laptop", session_id="sess-1", token_id="tok-1", issuer=ISSUER,
        audience=AUDIENCE, issued_at=now, expires_at=now + 300,
        extra={"role": "admin", "tier": 3, "tags": ["a", "b"], "org": {"id": 7}},
    )
    return dataclasses.replace(claims, **changes)


def _payload(without: str = "", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
               "jti": "tok-1", "sid": "sess-1", "device_id": "laptop", **changes}
    payload.pop(without, None)
    return payload


def _sign(key: SigningKey, payload: dict[str, Any], kid: str | None = None, **headers: Any) -> str:
    """Signed for real with ``key`` by PyJWT, under ``kid`` (ours by default); ES256 low-S."""
    return forge.sign(key, payload, kid, **headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def _reason(codec: TokenCodec, token: str, audience: str = AUDIENCE) -> InvalidReason:
    with pytest.raises(InvalidToken) as caught:
        codec.verify(token, audience)
    return caught.value.reason


# --- codec: round trip and header ----------------------------------------------------


def test_signed_token_round_trips_with_every_claim(codec: TokenCodec) -> None:
    claims = _claims()
    assert codec.verify(codec.sign(claims), AUDIENCE) == claims


def test_header_names_the_key_its_algorithm_and_access_token_type(codec: TokenCodec, key: SigningKey) -> None:
    header = jwt.get_unverified_header(codec.sign(_claims()))
    assert (header["kid"], header["alg"], header["typ"]) == (key.kid, key.algorithm.value, "at+jwt")


def test_hand_signed_token_with_all_claims_is_accepted(codec: TokenCodec, key: SigningKey) -> None:
    # The forging helpers make valid tokens; each rejection below is due to its one change.
    assert codec.verify(_sign(key, _payload()), AUDIENCE).subject == "alice"


# --- codec: time ---------------------------------------------------------------------


def test_expired_token_is_expired(codec: TokenCodec) -> None:
    now = int(time.time())
    assert _reason(codec, codec.sign(_claims(issued_at=now - 120, expires_at=now - 1))) is InvalidReason.EXPIRED


def test_token_expired_within_leeway_is_accepted(key: SigningKey) -> None:
    lenient = TokenCodec(KeyRing([key], key.algorithm), ISSUER, leeway=60)
    now = int(time.time())
    token = lenient.sign(_claims(issued_at=now - 120, expires_at=now - 30))
    assert lenient.verify(token, AUDIENCE).expires_at == now - 30


def test_token_not_valid_before_a_future_nbf(codec: TokenCodec, key: SigningKey) -> None:
    now = int(time.time())
    assert _reason(codec, _sign(key, _payload(nbf=now + 60))) is InvalidReason.NOT_YET_VALID


def test_signed_token_is_valid_from_its_issue_time(codec: TokenCodec) -> None:
    payload = jwt.decode(codec.sign(_claims()), options={"verify_signature": False})
    assert payload["nbf"] == payload["iat"] == _claims().issued_at


def test_logout_verification_accepts_expired_token_for_any_audience(codec: TokenCodec) -> None:
    now = int(time.time())
    token = codec.sign(_claims(issued_at=now - 600, expires_at=now - 300))
    assert _reason(codec, token) is InvalidReason.EXPIRED
    assert codec.identify(token).token_id == "tok-1"


# --- codec: audience and issuer ------------------------------------------------------


def test_wrong_audience_is_wrong_audience(codec: TokenCodec) -> None:
    assert _reason(codec, codec.sign(_claims()), "other") is InvalidReason.WRONG_AUDIENCE


def test_audience_list_containing_ours_is_not_accepted(codec: TokenCodec, key: SigningKey) -> None:
    token = _sign(key, _payload(aud=[AUDIENCE, "other"]))
    assert _reason(codec, token) is InvalidReason.WRONG_AUDIENCE
    with pytest.raises(InvalidToken) as caught:
        codec.identify(token)  # the logout path: aud must still be one string
    assert caught.value.reason is InvalidReason.MALFORMED


@pytest.mark.parametrize("issuer", ["evil", "token-authorit", "token-authority-evil", " token-authority", "TOKEN-AUTHORITY"])
def test_wrong_or_look_alike_issuer_is_wrong_issuer(codec: TokenCodec, issuer: str) -> None:
    assert _reason(codec, codec.sign(_claims(issuer=issuer))) is InvalidReason.WRONG_ISSUER


# --- codec: keys and signatures ------------------------------------------------------


def test_kid_the_ring_does_not_hold_is_unknown_key(codec: TokenCodec, foreign: SigningKey) -> None:
    assert _reason(codec, _sign(foreign, _payload(), kid=foreign.kid)) is InvalidReason.UNKNOWN_KEY


def test_foreign_key_signature_under_our_kid_is_bad_signature(
    codec: TokenCodec, key: SigningKey, foreign: SigningKey
) -> None:
    assert _reason(codec, _sign(foreign, _payload(), kid=key.kid)) is InvalidReason.BAD_SIGNATURE


def test_hs256_signed_with_our_public_key_pem_is_bad_signature(codec: TokenCodec, key: SigningKey) -> None:
    pem = key.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_segment({'alg': 'HS256', 'kid': key.kid, 'typ': 'at+jwt'})}.{_segment(_payload())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert _reason(codec, f"{signing_input}.{_b64(mac)}") is InvalidReason.BAD_SIGNATURE


def test_header_alg_of_another_asymmetric_algorithm_is_bad_signature(codec: TokenCodec, key: SigningKey) -> None:
    other = next(a for a in Algorithm if a is not key.algorithm)
    signed = codec.sign(_claims())
    header = _segment({"alg": other.value, "kid": key.kid, "typ": "at+jwt"})
    assert _reason(codec, header + signed[signed.index("."):]) is InvalidReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("signature", "expected"),
    [("", InvalidReason.MALFORMED), ("c2lnbmF0dXJl", InvalidReason.BAD_SIGNATURE)],
    ids=["unsigned", "with-signature"],
)
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_never_valid(
    codec: TokenCodec, key: SigningKey, alg: str, signature: str, expected: InvalidReason
) -> None:
    # Unsigned, the token has an empty third segment; signed, its alg is not the key's.
    token = f"{_segment({'alg': alg, 'kid': key.kid, 'typ': 'at+jwt'})}.{_segment(_payload())}.{signature}"
    assert _reason(codec, token) is expected


def test_tampered_payload_keeping_the_signature_is_bad_signature(codec: TokenCodec) -> None:
    header, payload, signature = codec.sign(_claims()).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = _segment({**claims, "sub": "mallory"})
    assert _reason(codec, f"{header}.{forged}.{signature}") is InvalidReason.BAD_SIGNATURE


# --- codec: malformed tokens ---------------------------------------------------------


def _with_header(header: str) -> Callable[[str], str]:
    return lambda token: header + token[token.index("."):]


_BROKEN: dict[str, Callable[[str], str]] = {
    "two-segments": lambda t: t.rsplit(".", 1)[0],
    "four-segments": lambda t: t + "." + t.rsplit(".", 1)[1],
    "empty-string": lambda t: "",
    "only-dots": lambda t: "..",
    "empty-header": _with_header(""),
    "standard-base64-chars-in-header": lambda t: "+/" + t[2:],
    "whitespace-in-header": lambda t: t[:4] + " " + t[4:],
    "padding-in-header": lambda t: t.split(".")[0] + "==" + t[t.index("."):],
    "padding-on-signature": lambda t: t + "==",
    "padding-in-payload": lambda t: t.replace(".", "=.", 2).replace("=.", ".", 1),
    "standard-base64-chars-in-signature": lambda t: t[:-2] + "+/",
    "header-not-json": _with_header(_b64(b"{not json")),
    "header-not-utf8": _with_header(_b64(b"\xff\xfe\xfd")),
    "header-json-list": _with_header(_segment(["alg", "EdDSA"])),
    "header-json-string": _with_header(_segment("at+jwt")),
}


@pytest.mark.parametrize("break_token", _BROKEN.values(), ids=_BROKEN.keys())
def test_structurally_broken_token_is_malformed(codec: TokenCodec, break_token: Callable[[str], str]) -> None:
    assert _reason(codec, break_token(codec.sign(_claims()))) is InvalidReason.MALFORMED


@pytest.mark.parametrize("payload", [b"", b"[]", b'"alice"', b"{not json"], ids=["empty", "list", "string", "not-json"])
def test_properly_signed_payload_that_is_not_a_json_object_is_malformed(
    codec: TokenCodec, key: SigningKey, payload: bytes
) -> None:
    assert _reason(codec, forge.sign_bytes(key, payload)) is InvalidReason.MALFORMED


def test_properly_signed_token_over_8_kib_is_malformed(codec: TokenCodec) -> None:
    def signed(pad: int) -> str:
        return codec.sign(_claims(extra={"pad": "x" * pad}))

    pad = (LIMIT - len(signed(0))) * 3 // 4
    while len(signed(pad + 1)) <= LIMIT:
        pad += 1
    while len(signed(pad)) > LIMIT:
        pad -= 1
    assert codec.verify(signed(pad), AUDIENCE).extra == {"pad": "x" * pad}  # the largest that fits is fine
    assert _reason(codec, signed(pad + 1)) is InvalidReason.MALFORMED


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt "], ids=["missing", "JWT", "trailing-space"])
def test_typ_other_than_at_jwt_is_malformed(codec: TokenCodec, key: SigningKey, typ: str | None) -> None:
    assert _reason(codec, _sign(key, _payload(), typ=typ)) is InvalidReason.MALFORMED


def test_missing_kid_is_malformed(codec: TokenCodec, key: SigningKey) -> None:
    token = jwt.encode(_payload(), key.private_key, algorithm=key.algorithm.value, headers={"typ": "at+jwt"})
    assert _reason(codec, token) is InvalidReason.MALFORMED


_KEY_CHOOSING_HEADERS: dict[str, Any] = {
    "jwk": None,  # filled with our own public JWK: even the right key may not be named in the token
    "jku": "https://evil.example/jwks.json",
    "x5u": "https://evil.example/cert.pem",
    "x5c": ["MIIBszCCAVmgAwIBAgIU"],
    "x5t": "c2hhMS10aHVtYnByaW50",
    "crit": ["exp"],
}


@pytest.mark.parametrize("name", _KEY_CHOOSING_HEADERS)
def test_key_choosing_or_critical_header_is_malformed_even_when_signed(
    codec: TokenCodec, key: SigningKey, name: str
) -> None:
    value: Any = _KEY_CHOOSING_HEADERS[name] or key.public_jwk()
    assert _reason(codec, _sign(key, _payload(), **{name: value})) is InvalidReason.MALFORMED


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "iss", "aud", "sid", "device_id"])
def test_missing_required_claim_is_malformed(codec: TokenCodec, key: SigningKey, claim: str) -> None:
    assert _reason(codec, _sign(key, _payload(without=claim))) is InvalidReason.MALFORMED


@pytest.mark.parametrize("exp", ["tomorrow", str(int(time.time()) + 3600)], ids=["text", "digits"])
def test_exp_as_a_string_is_malformed(codec: TokenCodec, key: SigningKey, exp: str) -> None:
    assert _reason(codec, _sign(key, _payload(exp=exp))) is InvalidReason.MALFORMED


# --- through a real server -----------------------------------------------------------


async def test_validate_returns_the_claims_of_an_issued_token(stub: Stub) -> None:
    subject, extra = new_subject(), Struct()
    extra.update({"role": "admin", "tier": 3, "scopes": ["read", "write"]})
    issued = await sign_in(stub, subject, "laptop", claims=extra)

    answer = await validate(stub, issued.access_token)

    assert answer.valid
    claims = answer.claims
    assert (claims.subject, claims.device_id, claims.session_id) == (subject, "laptop", issued.session_id)
    assert (claims.issuer, claims.audience) == ("token-authority", "token-authority")
    assert claims.token_id
    assert claims.expires_at.seconds == issued.expires_at.seconds > time.time()
    assert claims.issued_at.seconds <= time.time() + 1
    assert json_format.MessageToDict(claims.extra) == {"role": "admin", "tier": 3, "scopes": ["read", "write"]}


async def test_validate_with_an_empty_token_is_invalid_argument(stub: Stub) -> None:
    error = await rpc_error(validate(stub, ""))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "x" * 10_240], ids=["abc", "a.b.c", "10KB"])
async def test_validate_answers_garbage_with_malformed_not_an_rpc_error(stub: Stub, garbage: str) -> None:
    answer = await validate(stub, garbage)
    assert (answer.valid, answer.reason) == (False, pb.INVALID_REASON_MALFORMED)


async def test_token_from_another_authority_is_unknown_key(
    stub: Stub, start_server: StartServer, tmp_path: Any
) -> None:
    other = await start_server(database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    theirs = await sign_in(other.stub, new_subject(), "laptop")

    assert await reason(other.stub, theirs.access_token) == "VALID"
    assert await reason(stub, theirs.access_token) == "UNKNOWN_KEY"


async def test_validate_for_another_audience_is_wrong_audience(stub: Stub) -> None:
    issued = await sign_in(stub, new_subject(), "laptop")
    assert await reason(stub, issued.access_token, audience="other") == "WRONG_AUDIENCE"
    assert await reason(stub, issued.access_token, audience="token-authority") == "VALID"


async def test_requested_ttl_over_the_maximum_is_capped(stub: Stub, settings: Settings) -> None:
    issued = await sign_in(stub, new_subject(), "laptop", ttl=Duration(seconds=10 * settings.max_access_token_ttl))
    lifetime = issued.expires_at.seconds - time.time()
    assert settings.max_access_token_ttl - 30 < lifetime <= settings.max_access_token_ttl
    assert (await validate(stub, issued.access_token)).claims.expires_at.seconds == issued.expires_at.seconds


async def test_token_issued_for_one_second_expires(stub: Stub) -> None:
    if time.time() % 1 > 0.3:  # exp is in whole seconds: issue early in a second so it is alive when first checked
        await asyncio.sleep(1.05 - time.time() % 1)
    issued = await sign_in(stub, new_subject(), "laptop", ttl=Duration(seconds=1))
    assert issued.expires_at.seconds - time.time() <= 1
    assert await reason(stub, issued.access_token) == "VALID"

    await asyncio.sleep(max(0.0, issued.expires_at.seconds - time.time()) + 0.2)

    assert await reason(stub, issued.access_token) == "EXPIRED"


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
async def test_configured_algorithm_signs_tokens_that_validate(start_server: StartServer, algorithm: Algorithm) -> None:
    running = await start_server(signing_algorithm=algorithm)
    issued = await sign_in(running.stub, new_subject(), "laptop")

    header = jwt.get_unverified_header(issued.access_token)
    assert (header["alg"], header["typ"]) == (algorithm.value, "at+jwt")
    assert await reason(running.stub, issued.access_token) == "VALID"


# --- GetSigningKeys ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.value)
async def test_published_jwks_verifies_an_issued_token_with_pyjwt_alone(
    start_server: StartServer, algorithm: Algorithm
) -> None:
    running = await start_server(signing_algorithm=algorithm)
    subject = new_subject()
    issued = await sign_in(running.stub, subject, "laptop")

    jwks_json = (await running.stub.GetSigningKeys(pb.GetSigningKeysRequest())).jwks_json
    published = jwt.PyJWKSet.from_json(jwks_json)[jwt.get_unverified_header(issued.access_token)["kid"]]
    payload = jwt.decode(
        issued.access_token, published.key, algorithms=[published.algorithm_name],
        audience="token-authority", issuer="token-authority",
    )

    assert published.algorithm_name == algorithm.value
    assert (payload["sub"], payload["sid"]) == (subject, issued.session_id)
    for jwk in json.loads(jwks_json)["keys"]:
        assert not PRIVATE_JWK_MEMBERS & jwk.keys(), f"private members published in {sorted(jwk)}"
