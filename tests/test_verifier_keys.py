"""The local verifier's key set (JWK Sets in, keys out), key rotation on a running
verifier, the logout path, and the low-S form of the authority's ES256 signatures."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import pytest
from authority_client.verify import AccessClaims, InvalidReason, InvalidToken, KeySet, TokenVerifier
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authority.config import Algorithm
from authority.keys import KeyRing, SigningKey, generate_key
from authority.tokens import TokenCodec
from tests.support import forge

ISSUER = "token-authority"
AUDIENCE = "api"


def _key(algorithm: Algorithm) -> SigningKey:
    return generate_key(algorithm, time.time())


_KEYS = {algorithm: _key(algorithm) for algorithm in Algorithm}


def _jwks(*jwks: dict[str, Any]) -> str:
    return json.dumps({"keys": list(jwks)})


def _claims(**changes: Any) -> AccessClaims:
    now = int(time.time())
    claims = AccessClaims(
        subject="alice", device_id="laptop", session_id="sess-1", token_id="tok-1", issuer=ISSUER,
        audience=AUDIENCE, issued_at=now, expires_at=now + 300, extra={},
    )
    return dataclasses.replace(claims, **changes)


def _codec(*keys: SigningKey) -> TokenCodec:
    return TokenCodec(KeyRing(keys, keys[-1].algorithm), ISSUER, leeway=0)


# --- KeySet.from_jwks --------------------------------------------------------------------


def test_published_keys_of_every_algorithm_are_read() -> None:
    keys = KeySet.from_jwks(_jwks(*(key.public_jwk() for key in _KEYS.values())))
    assert keys.kids == {key.kid for key in _KEYS.values()}
    for key in _KEYS.values():
        found = keys.get(key.kid)
        assert found is not None and found.algorithm == key.algorithm.value


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "hmac"},
        {"kty": "EC", "crv": "P-384", "alg": "ES384", "kid": "p384", "x": "AA", "y": "AA"},
        {"kty": "OKP", "crv": "X25519", "alg": "ECDH-ES", "kid": "x25519", "x": "AA"},
        {"kty": "RSA", "alg": "PS256", "kid": "pss", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "no-alg", "n": "AQAB", "e": "AQAB"},
        {**_KEYS[Algorithm.EDDSA].public_jwk(), "use": "enc", "kid": "for-encryption"},
        {"kty": ["OKP"], "alg": "EdDSA", "kid": "odd-types"},
    ],
    ids=["hmac", "p384", "x25519", "ps256", "no-alg", "use-enc", "odd-types"],
)
def test_keys_of_other_types_or_uses_are_skipped(jwk: dict[str, Any]) -> None:
    ours = _KEYS[Algorithm.EDDSA].public_jwk()
    assert KeySet.from_jwks(_jwks(jwk, ours)).kids == {ours["kid"]}


def _with(algorithm: Algorithm, **changes: Any) -> dict[str, Any]:
    return {**_KEYS[algorithm].public_jwk(), **changes}


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        '{"keys": {}}',
        '{"keys": [1]}',
        '{"keys": [], "keys": []}',
        '{"keys": [{"kty": "OKP", "x": NaN}]}',
        _jwks(_with(Algorithm.EDDSA, d="c2VjcmV0")),  # a private key where public ones belong
        _jwks(_with(Algorithm.RS256, p="c2VjcmV0")),
        _jwks(_with(Algorithm.EDDSA, x="not a key")),
        _jwks(_with(Algorithm.ES256, y="AAAA")),
        _jwks(_with(Algorithm.EDDSA, kid=7)),
        _jwks(_with(Algorithm.EDDSA, kid="")),
        _jwks(_with(Algorithm.EDDSA), _with(Algorithm.EDDSA)),  # one kid twice
    ],
    ids=["not-json", "a-list", "keys-an-object", "key-a-number", "duplicate-names", "nan", "private-okp",
         "private-rsa", "bad-x", "bad-y", "kid-a-number", "kid-empty", "kid-twice"],
)
def test_malformed_jwk_set_is_a_value_error(document: str) -> None:
    with pytest.raises(ValueError):
        KeySet.from_jwks(document)


# --- KeySet.of ---------------------------------------------------------------------------


def test_key_of_the_wrong_algorithm_is_a_value_error() -> None:
    ed = _KEYS[Algorithm.EDDSA]
    with pytest.raises(ValueError):
        KeySet.of([(ed.kid, "ES256", ed.public_key)])


@pytest.mark.parametrize(
    ("algorithm", "public_key"),
    [
        ("ES256", ec.generate_private_key(ec.SECP384R1()).public_key()),
        ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
    ],
    ids=["p384-as-es256", "rsa-1024"],
)
def test_weak_or_mismatched_key_is_a_value_error(algorithm: str, public_key: Any) -> None:
    with pytest.raises(ValueError):
        KeySet.of([("k", algorithm, public_key)])


# --- the verifier ------------------------------------------------------------------------


def test_assigning_new_keys_rotates_a_running_verifier() -> None:
    old, new = _key(Algorithm.EDDSA), _key(Algorithm.EDDSA)
    verifier = TokenVerifier(KeySet.of([(old.kid, "EdDSA", old.public_key)]), issuer=ISSUER, leeway=0)
    token = _codec(new).sign(_claims())
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token, AUDIENCE)
    assert caught.value.reason is InvalidReason.UNKNOWN_KEY

    verifier.keys = KeySet.of([(old.kid, "EdDSA", old.public_key), (new.kid, "EdDSA", new.public_key)])

    assert verifier.verify(token, AUDIENCE).subject == "alice"


def test_assigning_a_new_key_ring_rotates_the_codec() -> None:
    old, new = _key(Algorithm.EDDSA), _key(Algorithm.EDDSA)
    codec = _codec(old)
    token = _codec(new).sign(_claims())
    with pytest.raises(InvalidToken):
        codec.verify(token, AUDIENCE)

    codec.keyring = KeyRing([old, new], Algorithm.EDDSA)

    assert codec.verify(token, AUDIENCE).subject == "alice"


def test_verifier_uses_its_clock_and_leeway() -> None:
    key = _KEYS[Algorithm.EDDSA]
    now = int(time.time())
    token = _codec(key).sign(_claims(issued_at=now, expires_at=now + 60))
    keys = KeySet.of([(key.kid, "EdDSA", key.public_key)])

    def reason_at(moment: float, leeway: float) -> str:
        try:
            TokenVerifier(keys, issuer=ISSUER, leeway=leeway, clock=lambda: moment).verify(token, AUDIENCE)
        except InvalidToken as invalid:
            return invalid.reason.name
        return "VALID"

    assert reason_at(now + 59, 0) == "VALID"
    assert reason_at(now + 60, 0) == "EXPIRED"
    assert reason_at(now + 80, 30) == "VALID"
    assert reason_at(now - 1, 0) == "NOT_YET_VALID"
    assert reason_at(now - 20, 30) == "VALID"


def test_identify_accepts_expired_tokens_for_any_audience_but_checks_the_rest() -> None:
    key = _KEYS[Algorithm.EDDSA]
    codec = _codec(key)
    verifier = TokenVerifier(KeySet.of([(key.kid, "EdDSA", key.public_key)]), issuer=ISSUER, leeway=0)
    now = int(time.time())

    assert verifier.identify(codec.sign(_claims(issued_at=now - 900, expires_at=now - 600))).token_id == "tok-1"
    assert verifier.identify(codec.sign(_claims(audience="elsewhere"))).audience == "elsewhere"
    for token, expected in [
        (codec.sign(_claims(issuer="evil")), InvalidReason.WRONG_ISSUER),
        (forge.sign(key, {**_payload(), "aud": [AUDIENCE]}), InvalidReason.MALFORMED),
        (forge.sign(_key(Algorithm.EDDSA), _payload(), kid=key.kid), InvalidReason.BAD_SIGNATURE),
    ]:
        with pytest.raises(InvalidToken) as caught:
            verifier.identify(token)
        assert caught.value.reason is expected


def _payload() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
            "jti": "tok-1", "sid": "sess-1", "device_id": "laptop"}


def test_invalid_token_names_only_its_reason() -> None:
    key = _KEYS[Algorithm.EDDSA]
    token = _codec(key).sign(_claims(expires_at=int(time.time()) - 1))
    with pytest.raises(InvalidToken) as caught:
        _codec(key).verify(token, AUDIENCE)
    assert str(caught.value) == "EXPIRED"
    assert token not in repr(caught.value)


# --- ES256: one spelling per signature ------------------------------------------------------


def test_the_authority_signs_es256_tokens_low_s() -> None:
    codec = _codec(_KEYS[Algorithm.ES256])
    for n in range(64):  # each high-S with probability 1/2: 64 misses would be 2**-64
        token = codec.sign(_claims(token_id=f"tok-{n}"))
        signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
        assert int.from_bytes(signature[32:], "big") <= forge.P256_ORDER // 2
        assert codec.verify(token, AUDIENCE).token_id == f"tok-{n}"
        with pytest.raises(InvalidToken) as caught:
            codec.verify(forge.high_s(token), AUDIENCE)
        assert caught.value.reason is InvalidReason.BAD_SIGNATURE
