"""The DPoP proof checker (authority_client.proof): every check in its order, the window
both ways, the replay cache (replays, expiry, per-key quotas, a full cache, threads), URI
normalisation, RFC 7638 thumbprints, the device key, and the binding of tokens in
TokenVerifier. Real keys and signatures throughout."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import Any

import pytest
from authority_client.proof import (
    DEFAULT_REPLAY_CACHE_SIZE,
    MAX_PROOF_BYTES,
    DeviceKey,
    InvalidProof,
    Proof,
    ProofChecker,
    grpc_proof_uri,
    jwk_thumbprint,
    normalize_uri,
)
from authority_client.verify import InvalidReason, InvalidToken, KeySet, TokenVerifier
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authority.config import Algorithm
from authority.keys import generate_key
from tests.support import dpop, forge

NOW = 1_800_000_000.0
METHOD = "POST"
URI = "https://api.example.com/orders"
TOKEN = "header.payload.signature"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@functools.cache
def _key(algorithm: str) -> dpop.PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _checker(clock: Clock | None = None, **settings: Any) -> ProofChecker:
    return ProofChecker(clock=clock or Clock(), **settings)


def _proof(text: str, method: str = METHOD, uri: str = URI) -> Proof:
    return Proof(text, method, uri)


def _good(key: dpop.PrivateKey | None = None, **changes: Any) -> str:
    key = key or _key("EdDSA")
    return dpop.craft(key, dpop.claims(NOW, token=TOKEN, **changes))


def _refused(proof: Proof, checker: ProofChecker | None = None, **options: Any) -> str:
    checker = checker or _checker()
    with pytest.raises(InvalidProof) as refused:
        checker.check(proof, **options)
    assert refused.value.reason is InvalidReason.BAD_PROOF
    assert proof.proof not in str(refused.value) or not proof.proof
    return refused.value.check


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256"])
def test_a_good_proof_gives_its_key_thumbprint(algorithm: str) -> None:
    key = _key(algorithm)
    proof = _proof(_good(key))
    assert _checker().check(proof, access_token=TOKEN, key_thumbprint=dpop.thumbprint(key)) == dpop.thumbprint(key)


def test_a_sign_in_proof_needs_no_ath_and_no_thumbprint() -> None:
    key = _key("EdDSA")
    proof = _proof(dpop.craft(key, dpop.claims(NOW)))
    assert _checker().check(proof) == dpop.thumbprint(key)


def test_ath_is_not_checked_without_an_access_token() -> None:
    assert _checker().check(_proof(_good(ath="anything")))


def test_extra_public_jwk_members_are_allowed() -> None:
    # WebCrypto exports ext and key_ops; they are not part of the thumbprint.
    key = _key("ES256")
    jwk = {**dpop.public_jwk(key), "ext": True, "key_ops": ["verify"]}
    proof = _proof(dpop.craft(key, dpop.claims(NOW, token=TOKEN), jwk=jwk))
    assert _checker().check(proof, access_token=TOKEN) == dpop.thumbprint(key)


def test_an_es256_proof_is_accepted_in_its_high_s_form_too() -> None:
    key = _key("ES256")
    low = forge.low_s(_good(key))
    high = forge.high_s(low)
    assert high != low
    assert _checker().check(_proof(high), access_token=TOKEN) == dpop.thumbprint(key)
    # ... but it is the same proof: one of the two spellings is a replay of the other.
    checker = _checker()
    checker.check(_proof(low), access_token=TOKEN)
    assert _refused(_proof(high), checker, access_token=TOKEN) == "replayed"


def test_the_checked_uri_ignores_query_and_fragment_and_spelling() -> None:
    proof = _proof(_good(htu="HTTPS://API.example.com:443/a/../orders?x=1"), uri="https://api.example.com/orders#f")
    assert _checker().check(proof, access_token=TOKEN)


# --- each check, in order ------------------------------------------------------------------

_ED = "EdDSA"


def _with_header(**header: Any) -> str:
    return dpop.craft(_key(_ED), dpop.claims(NOW, token=TOKEN), **header)


def _claims_of(**changes: Any) -> str:
    return dpop.craft(_key(_ED), dpop.claims(NOW, token=TOKEN, **changes))


def _rsa_1024() -> dpop.PrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


_SEGMENTS_OF_GOOD = functools.cache(lambda: _good().split("."))

CASES: dict[str, tuple[str, Any]] = {
    # name: (check, proof text or a function making it)
    "too-large": ("size", lambda: _claims_of(pad="x" * MAX_PROOF_BYTES)),
    "empty": ("form", lambda: ""),
    "not-a-jws": ("form", lambda: "not a proof"),
    "two-segments": ("form", lambda: ".".join(_SEGMENTS_OF_GOOD()[:2])),
    "padded-segment": ("form", lambda: _SEGMENTS_OF_GOOD()[0] + "=." + ".".join(_SEGMENTS_OF_GOOD()[1:])),
    "non-ascii": ("form", lambda: _good() + "é"),
    "header-not-json": ("form", lambda: dpop.sign_raw(_key(_ED), f"{forge.b64(b'{typ')}.{dpop.segment({})}")),
    "header-duplicate-names": ("form", lambda: dpop.sign_raw(
        _key(_ED), forge.b64(b'{"typ":"dpop+jwt","typ":"dpop+jwt"}') + "." + dpop.segment(dpop.claims(NOW)))),
    "payload-an-array": ("form", lambda: dpop.sign_raw(
        _key(_ED), _SEGMENTS_OF_GOOD()[0] + "." + dpop.segment([1]))),
    "crit-header": ("form", lambda: _with_header(crit=["exp"])),
    "typ-missing": ("typ", lambda: _with_header(typ=...)),
    "typ-jwt": ("typ", lambda: _with_header(typ="JWT")),
    "typ-access-token": ("typ", lambda: _with_header(typ="at+jwt")),
    "alg-none": ("alg", lambda: _with_header(alg="none")),
    "alg-hs256": ("alg", lambda: _with_header(alg="HS256")),
    "alg-rs512": ("alg", lambda: _with_header(alg="RS512")),
    "alg-missing": ("alg", lambda: _with_header(alg=...)),
    "alg-not-a-string": ("alg", lambda: _with_header(alg=["EdDSA"])),
    "jwk-missing": ("jwk", lambda: _with_header(jwk=...)),
    "jwk-not-an-object": ("jwk", lambda: _with_header(jwk="key")),
    "jwk-private-d": ("jwk", lambda: _with_header(jwk={**dpop.public_jwk(_key(_ED)), "d": forge.b64(bytes(32))})),
    "jwk-symmetric-k": ("jwk", lambda: _with_header(jwk={**dpop.public_jwk(_key(_ED)), "k": "AAAA"})),
    "jwk-of-another-type": ("jwk", lambda: _with_header(jwk=dpop.public_jwk(_key("ES256")))),
    "jwk-wrong-curve": ("jwk", lambda: _with_header(jwk={**dpop.public_jwk(_key(_ED)), "crv": "X25519"})),
    "jwk-x-non-canonical": ("jwk", lambda: _with_header(jwk={**dpop.public_jwk(_key(_ED)),
                                                             "x": dpop.public_jwk(_key(_ED))["x"] + "="})),
    "jwk-x-short": ("jwk", lambda: _with_header(jwk={**dpop.public_jwk(_key(_ED)), "x": forge.b64(bytes(31))})),
    "jwk-point-off-the-curve": ("jwk", lambda: dpop.craft(_key("ES256"), dpop.claims(NOW, token=TOKEN), jwk={
        **dpop.public_jwk(_key("ES256")), "y": forge.b64((1).to_bytes(32, "big"))})),
    "jwk-rsa-1024": ("jwk", lambda: dpop.craft(_rsa_1024(), dpop.claims(NOW, token=TOKEN))),
    "jwk-rsa-exponent-over-32-bits": ("jwk", lambda: dpop.craft(_key("RS256"), dpop.claims(NOW, token=TOKEN), jwk={
        **dpop.public_jwk(_key("RS256")), "e": forge.b64((2**40 + 1).to_bytes(6, "big"))})),
    "jwk-rsa-leading-zero": ("jwk", lambda: dpop.craft(_key("RS256"), dpop.claims(NOW, token=TOKEN), jwk={
        **dpop.public_jwk(_key("RS256")), "e": forge.b64(b"\x00\x01\x00\x01")})),
    "signature-by-another-key": ("signature", lambda: dpop.craft(
        _key(_ED), dpop.claims(NOW, token=TOKEN), signer=ed25519.Ed25519PrivateKey.generate())),
    "signature-over-other-claims": ("signature", lambda: ".".join(
        [_SEGMENTS_OF_GOOD()[0], dpop.segment(dpop.claims(NOW, token=TOKEN, jti="other")), _SEGMENTS_OF_GOOD()[2]])),
    "jti-missing": ("jti", lambda: _claims_of(jti=...)),
    "jti-empty": ("jti", lambda: _claims_of(jti="")),
    "jti-too-long": ("jti", lambda: _claims_of(jti="j" * 257)),
    "jti-a-number": ("jti", lambda: _claims_of(jti=7)),
    "htm-wrong": ("htm", lambda: _claims_of(htm="GET")),
    "htm-lower-case": ("htm", lambda: _claims_of(htm="post")),
    "htm-missing": ("htm", lambda: _claims_of(htm=...)),
    "htu-other-path": ("htu", lambda: _claims_of(htu="https://api.example.com/payments")),
    "htu-other-host": ("htu", lambda: _claims_of(htu="https://evil.example.com/orders")),
    "htu-http-for-https": ("htu", lambda: _claims_of(htu="http://api.example.com/orders")),
    "htu-not-a-uri": ("htu", lambda: _claims_of(htu="orders")),
    "htu-missing": ("htu", lambda: _claims_of(htu=...)),
    "iat-stale": ("iat", lambda: _claims_of(iat=NOW - 61)),
    "iat-future": ("iat", lambda: _claims_of(iat=NOW + 61)),
    "iat-a-boolean": ("iat", lambda: _claims_of(iat=True)),
    "iat-a-string": ("iat", lambda: _claims_of(iat=str(int(NOW)))),
    "iat-missing": ("iat", lambda: _claims_of(iat=...)),
    "ath-mismatch": ("ath", lambda: _claims_of(ath=dpop.ath("another token"))),
    "ath-missing": ("ath", lambda: _claims_of(ath=...)),
    "ath-a-number": ("ath", lambda: _claims_of(ath=1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bad_proof_is_refused_by_its_check(name: str) -> None:
    check, build = CASES[name]
    checker = _checker()
    assert _refused(_proof(build()), checker, access_token=TOKEN) == check
    assert checker.replay_cache_entries == 0


def test_a_proof_by_another_key_than_the_bound_one_is_refused() -> None:
    # The stolen-token case: the thief signs good proofs, with its own key.
    thief = _key("ES256")
    assert _refused(_proof(_good(thief)), access_token=TOKEN, key_thumbprint=dpop.thumbprint(_key(_ED))) == "key"


def test_the_first_failed_check_wins() -> None:
    assert _refused(_proof(_with_header(typ="JWT", alg="none", jwk=...))) == "typ"
    assert _refused(_proof(_claims_of(jti="", htm="GET", iat=0))) == "jti"
    assert _refused(_proof(_claims_of(htm="GET", htu="https://x/"))) == "htm"
    assert _refused(_proof(_claims_of(iat=0, ath="x")), access_token=TOKEN) == "iat"
    assert _refused(_proof(_claims_of(ath="x")), access_token=TOKEN, key_thumbprint="other") == "ath"


def test_the_request_method_and_uri_are_those_compared() -> None:
    assert _refused(_proof(_good(), method="GET"), access_token=TOKEN) == "htm"
    assert _refused(_proof(_good(), uri="https://api.example.com/payments"), access_token=TOKEN) == "htu"
    assert _refused(_proof(_good(), uri="not a uri"), access_token=TOKEN) == "htu"


def test_a_proof_of_exactly_the_size_limit_is_accepted() -> None:
    padding = 0
    while len(proof := _claims_of(pad="x" * padding)) < MAX_PROOF_BYTES:
        padding += 1
    assert len(proof) == MAX_PROOF_BYTES  # base64url grows by 4 characters per 3 bytes
    assert _checker().check(_proof(proof), access_token=TOKEN)
    assert _refused(_proof(proof + "A"), access_token=TOKEN) == "size"


def test_a_jti_of_256_characters_is_accepted() -> None:
    assert _checker().check(_proof(_claims_of(jti="j" * 256)), access_token=TOKEN)


# --- the window, both ways ------------------------------------------------------------------


@pytest.mark.parametrize("offset", [-60, -59.5, 0, 59.5, 60])
def test_iat_within_the_window_either_way_is_accepted(offset: float) -> None:
    assert _checker().check(_proof(_claims_of(iat=NOW + offset)), access_token=TOKEN)


@pytest.mark.parametrize("offset", [-60.5, -3600, 60.5, 3600])
def test_iat_outside_the_window_either_way_is_refused(offset: float) -> None:
    assert _refused(_proof(_claims_of(iat=NOW + offset)), access_token=TOKEN) == "iat"


def test_the_window_is_the_checkers_max_age() -> None:
    checker = _checker(max_age=5)
    assert _refused(_proof(_claims_of(iat=NOW - 6)), checker, access_token=TOKEN) == "iat"
    assert checker.check(_proof(_claims_of(iat=NOW - 5)), access_token=TOKEN)


# --- replays -------------------------------------------------------------------------------


def test_a_replayed_proof_is_refused_within_the_window() -> None:
    checker = _checker()
    proof = _proof(_good())
    checker.check(proof, access_token=TOKEN)
    assert _refused(proof, checker, access_token=TOKEN) == "replayed"
    assert checker.replay_cache_entries == 1


def test_the_same_jti_by_another_key_is_another_proof() -> None:
    checker = _checker()
    checker.check(_proof(_good(_key("EdDSA"))), access_token=TOKEN)
    checker.check(_proof(_good(_key("ES256"))), access_token=TOKEN)
    assert checker.replay_cache_entries == 2


def test_a_refused_proof_is_not_remembered() -> None:
    # A proof refused for its key (or anything) leaves the jti free for the real device.
    checker = _checker()
    proof = _proof(_good())
    _refused(proof, checker, access_token=TOKEN, key_thumbprint=dpop.thumbprint(_key("ES256")))
    assert checker.replay_cache_entries == 0
    assert checker.check(proof, access_token=TOKEN, key_thumbprint=dpop.thumbprint(_key(_ED)))


def test_after_the_window_the_entry_expires() -> None:
    clock = Clock()
    checker = _checker(clock)
    checker.check(_proof(_good()), access_token=TOKEN)
    clock.now = NOW + 60  # the proof is still good now: its entry stays
    assert _refused(_proof(_good()), checker, access_token=TOKEN) == "replayed"
    clock.now = NOW + 61
    # Any later check lets expired entries go; the old proof is now refused for its age.
    checker.check(_proof(dpop.craft(_key(_ED), dpop.claims(clock.now, token=TOKEN, jti="later"))), access_token=TOKEN)
    assert checker.replay_cache_entries == 1
    assert _refused(_proof(_good()), checker, access_token=TOKEN) == "iat"


def test_a_full_cache_refuses_new_proofs_rather_than_forget() -> None:
    clock = Clock()
    # One key, allowed the whole cache: the global bound is what refuses here.
    checker = _checker(clock, replay_cache_size=2, per_key_limit=2)
    first, second, third = (_proof(_claims_of(jti=f"j{n}")) for n in range(3))
    checker.check(first, access_token=TOKEN)
    checker.check(second, access_token=TOKEN)
    assert _refused(third, checker, access_token=TOKEN) == "replay-cache-full"
    # Nothing was forgotten to make room: the first is still a replay.
    assert _refused(first, checker, access_token=TOKEN) == "replayed"
    assert checker.replay_cache_entries == 2
    # Once the old entries leave the window, there is room again.
    clock.now = NOW + 61
    fresh = _proof(dpop.craft(_key(_ED), dpop.claims(clock.now, token=TOKEN, jti="j3")))
    assert checker.check(fresh, access_token=TOKEN)
    assert checker.replay_cache_entries == 1


def _device_proof(device: DeviceKey, now: float, jti: str) -> Proof:
    return _proof(device.proof(METHOD, URI, access_token=TOKEN, now=now, jti=jti))


def test_a_flooding_key_is_refused_at_its_quota_while_another_key_passes() -> None:
    clock = Clock()
    checker = _checker(clock, replay_cache_size=10, per_key_limit=3)
    flooder, other = DeviceKey.generate(), DeviceKey.generate("ES256")
    for n in range(3):
        assert checker.check(_device_proof(flooder, NOW, f"f{n}"), access_token=TOKEN) == flooder.thumbprint
    assert _refused(_device_proof(flooder, NOW, "f3"), checker, access_token=TOKEN) == "replay-quota"
    # The refused proof took no room, and the cache has room for everyone else.
    assert checker.replay_cache_entries == 3
    for n in range(3):
        assert checker.check(_device_proof(other, NOW, f"o{n}"), access_token=TOKEN) == other.thumbprint
    assert checker.replay_cache_entries == 6
    # A replay is still a replay, not a quota refusal.
    assert _refused(_device_proof(flooder, NOW, "f0"), checker, access_token=TOKEN) == "replayed"


def test_the_default_quota_is_a_tenth_of_the_cache() -> None:
    assert ProofChecker().per_key_limit == DEFAULT_REPLAY_CACHE_SIZE // 10
    assert ProofChecker(replay_cache_size=25).per_key_limit == 2
    assert ProofChecker(replay_cache_size=9).per_key_limit == 1
    assert ProofChecker(replay_cache_size=25, per_key_limit=25).per_key_limit == 25
    clock = Clock()
    checker = _checker(clock, replay_cache_size=20)
    flooder, other = DeviceKey.generate(), DeviceKey.generate()
    checker.check(_device_proof(flooder, NOW, "f0"), access_token=TOKEN)
    checker.check(_device_proof(flooder, NOW, "f1"), access_token=TOKEN)
    assert _refused(_device_proof(flooder, NOW, "f2"), checker, access_token=TOKEN) == "replay-quota"
    assert checker.check(_device_proof(other, NOW, "o0"), access_token=TOKEN) == other.thumbprint


def test_expired_entries_free_the_quota() -> None:
    clock = Clock()
    checker = _checker(clock, replay_cache_size=10, per_key_limit=2)
    device = DeviceKey.generate()
    checker.check(_device_proof(device, NOW, "a"), access_token=TOKEN)
    clock.now = NOW + 30
    checker.check(_device_proof(device, clock.now, "b"), access_token=TOKEN)
    assert _refused(_device_proof(device, clock.now, "c"), checker, access_token=TOKEN) == "replay-quota"
    # The first entry leaves the window (iat NOW + 60): one place in the quota, not two.
    clock.now = NOW + 61
    checker.check(_device_proof(device, clock.now, "c"), access_token=TOKEN)
    assert _refused(_device_proof(device, clock.now, "d"), checker, access_token=TOKEN) == "replay-quota"
    assert checker.replay_cache_entries == 2
    # Both left: the whole quota is back.
    clock.now = NOW + 200
    checker.check(_device_proof(device, clock.now, "e"), access_token=TOKEN)
    checker.check(_device_proof(device, clock.now, "f"), access_token=TOKEN)
    assert checker.replay_cache_entries == 2


def test_keys_within_their_quotas_can_still_fill_the_cache() -> None:
    clock = Clock()
    checker = _checker(clock, replay_cache_size=4, per_key_limit=2)
    first, second, third = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    for device in (first, second):
        for n in range(2):
            checker.check(_device_proof(device, NOW, f"j{n}"), access_token=TOKEN)
    # The third key is within its quota, but the cache is full of unexpired entries.
    assert _refused(_device_proof(third, NOW, "j0"), checker, access_token=TOKEN) == "replay-cache-full"
    assert _refused(_device_proof(first, NOW, "j0"), checker, access_token=TOKEN) == "replayed"
    assert checker.replay_cache_entries == 4
    clock.now = NOW + 61
    assert checker.check(_device_proof(third, clock.now, "j0"), access_token=TOKEN) == third.thumbprint
    assert checker.replay_cache_entries == 1


def test_concurrent_checks_of_one_proof_accept_it_once() -> None:
    checker = _checker()
    proofs = [_proof(_claims_of(jti=f"j{n}")) for n in range(20)]
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def present() -> None:
        start.wait(timeout=30)
        for proof in proofs:
            try:
                checker.check(proof, access_token=TOKEN)
            except InvalidProof as error:
                with lock:
                    refused.append(error.check)
            else:
                with lock:
                    accepted.append(proof.proof)

    threads = [threading.Thread(target=present) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(accepted) == sorted(proof.proof for proof in proofs)
    assert refused == ["replayed"] * (7 * len(proofs))
    assert checker.replay_cache_entries == len(proofs)


def test_settings_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ProofChecker(max_age=0)
    with pytest.raises(ValueError):
        ProofChecker(replay_cache_size=0)
    with pytest.raises(ValueError):
        ProofChecker(per_key_limit=0)


# --- URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "normalized"),
    [
        ("https://api.example.com/orders", "https://api.example.com/orders"),
        # 6.2.2.1 case: scheme and host, and percent-encodings' hex digits.
        ("HTTPS://API.Example.COM/Orders", "https://api.example.com/Orders"),
        ("https://api.example.com/a%2fb%c3%a9", "https://api.example.com/a%2Fb%C3%A9"),
        # 6.2.2.2 percent-encoded unreserved characters are decoded.
        ("https://api.example.com/%7Euser/%41%2D%5F%2E", "https://api.example.com/~user/A-_."),
        # 6.2.2.3 dot segments.
        ("https://api.example.com/a/./b/../c", "https://api.example.com/a/c"),
        ("https://api.example.com/../../a", "https://api.example.com/a"),
        ("https://api.example.com/a/%2E%2E/b", "https://api.example.com/b"),
        ("https://api.example.com/a/b/..", "https://api.example.com/a/"),
        # 6.2.3 scheme-based: default ports, empty port, empty path.
        ("https://api.example.com:443/orders", "https://api.example.com/orders"),
        ("http://api.example.com:80/orders", "http://api.example.com/orders"),
        ("https://api.example.com:/orders", "https://api.example.com/orders"),
        ("https://api.example.com:8443/orders", "https://api.example.com:8443/orders"),
        ("http://api.example.com:443/", "http://api.example.com:443/"),
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com:0443", "https://api.example.com/"),
        # RFC 9449: query and fragment are not compared.
        ("https://api.example.com/orders?id=1#top", "https://api.example.com/orders"),
        ("https://api.example.com?x", "https://api.example.com/"),
        # IPv6 hosts keep their brackets; their hex is case-insensitive.
        ("https://[2001:DB8::1]:443/x", "https://[2001:db8::1]/x"),
        ("http://[::1]:8080", "http://[::1]:8080/"),
        # Characters a URI cannot hold are percent-encoded, so both sides compare alike.
        ("https://api.example.com/caf\u00e9", "https://api.example.com/caf%C3%A9"),
    ],
)
def test_uris_are_normalized_as_rfc_3986_says(uri: str, normalized: str) -> None:
    assert normalize_uri(uri) == normalized


@pytest.mark.parametrize(
    "uri",
    [
        "", "/orders", "orders", "api.example.com/orders", "ftp://api.example.com/", "https:/api.example.com/",
        "https:///orders", "https://user:pw@api.example.com/", "https://api.example.com:99999/",
        "https://api.example.com:x/", "https://api.example.com /", "https://api.\texample.com/",
        "https://api.example.com/\n", "https://[::1/", "https://exa\u00efmple.com/", "1https://x/",
    ],
)
def test_what_is_not_an_absolute_http_uri_is_a_value_error(uri: str) -> None:
    with pytest.raises(ValueError):
        normalize_uri(uri)


def test_the_grpc_uri_names_the_authority_and_the_method() -> None:
    uri = grpc_proof_uri("orders.example.com", "/shop.v1.Orders/Place")
    assert uri == "https://orders.example.com/shop.v1.Orders/Place"
    assert normalize_uri(uri) == uri
    with pytest.raises(ValueError):
        grpc_proof_uri("orders.example.com", "shop.v1.Orders/Place")


# --- thumbprints ------------------------------------------------------------------------------

# RFC 7638 section 3.1.
RFC_7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4"
         "n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0z"
         "gdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
         "Cur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}


def test_the_thumbprint_of_rfc_7638s_example() -> None:
    assert jwk_thumbprint(RFC_7638_KEY) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_thumbprint_hashes_only_the_required_members() -> None:
    jwk = dpop.public_jwk(_key("ES256"))
    assert jwk_thumbprint({**jwk, "kid": "k", "use": "sig"}) == jwk_thumbprint(jwk)
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "oct", "k": "AAAA"})
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": ["RSA"], "n": "AQAB", "e": "AQAB"})


def test_a_thumbprint_to_match_may_be_any_text() -> None:
    # Compared in constant time as bytes: text a caller passes never raises.
    assert _refused(_proof(_good()), access_token=TOKEN, key_thumbprint="\u00e9\ud800") == "key"


def test_the_checker_returns_the_rfc_7638_thumbprint_of_the_proofs_key() -> None:
    key = _key("RS256")
    expected = jwk_thumbprint(dpop.public_jwk(key))
    assert _checker().check(_proof(_good(key)), access_token=TOKEN) == expected


# --- the device key ----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
@pytest.mark.parametrize("password", [None, b"correct horse"])
def test_a_device_key_round_trips_through_pem_and_signs_good_proofs(algorithm: str, password: bytes | None) -> None:
    device = DeviceKey.generate(algorithm)
    assert device.algorithm == algorithm
    pem = device.to_pem(password)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----" if password else b"-----BEGIN PRIVATE KEY-----")
    loaded = DeviceKey.from_pem(pem, password)
    assert loaded.thumbprint == device.thumbprint == jwk_thumbprint(device.public_jwk)
    assert loaded.public_jwk == device.public_jwk
    # Signed by the loaded key, checked against the original's thumbprint.
    proof = loaded.proof_for("GET", "https://api.example.com/orders?page=2", access_token=TOKEN)
    assert ProofChecker().check(proof, access_token=TOKEN, key_thumbprint=device.thumbprint) == device.thumbprint


def test_a_device_key_with_the_wrong_password_is_a_value_error() -> None:
    pem = DeviceKey.generate().to_pem(b"right")
    for password in (b"wrong", None):
        with pytest.raises(ValueError):
            DeviceKey.from_pem(pem, password)
    with pytest.raises(ValueError):
        DeviceKey.from_pem(DeviceKey.generate().to_pem(), b"not encrypted")


def test_a_device_key_is_ed25519_or_p256() -> None:
    rsa_pem = _key("RS256").private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError):
        DeviceKey.from_pem(rsa_pem)
    with pytest.raises(ValueError):
        DeviceKey.generate("RS256")
    with pytest.raises(ValueError):
        DeviceKey(ec.generate_private_key(ec.SECP384R1()))


def test_a_device_proof_carries_what_the_request_needs() -> None:
    device = DeviceKey.generate("ES256")
    text = device.proof("POST", "https://API.example.com/orders?x#y", access_token=TOKEN, now=NOW, jti="fixed")
    header, claims = (forge.unb64(part) for part in text.split(".")[:2])
    assert json.loads(header) == {"typ": "dpop+jwt", "alg": "ES256", "jwk": device.public_jwk}
    assert json.loads(claims) == {
        "jti": "fixed", "htm": "POST", "htu": "https://api.example.com/orders", "iat": int(NOW), "ath": dpop.ath(TOKEN),
    }
    assert "d" not in device.public_jwk
    # Fresh jtis: two proofs for one request are two proofs.
    checker = ProofChecker()
    for _ in range(2):
        checker.check(device.proof_for("POST", URI), key_thumbprint=device.thumbprint)
    assert device.thumbprint not in repr(Proof(text, "POST", URI)) and text not in repr(Proof(text, "POST", URI))


# --- the binding in TokenVerifier ---------------------------------------------------------------

ISSUER = "token-authority"
AUDIENCE = "api"


@functools.cache
def _signing_key() -> Any:
    return generate_key(Algorithm.EDDSA, NOW)


def _verifier(clock: Clock | None = None, proofs: ProofChecker | None = None) -> TokenVerifier:
    key = _signing_key()
    return TokenVerifier(KeySet.of([(key.kid, "EdDSA", key.public_key)]), issuer=ISSUER, leeway=0,
                         clock=clock or Clock(), proofs=proofs)


def _token(**claims: Any) -> str:
    payload = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 300,
               "jti": "tok-1", "sid": "sess-1", "device_id": "laptop", **claims}
    return forge.sign(_signing_key(), payload)


def test_a_bound_token_with_a_good_proof_is_valid_and_names_its_key() -> None:
    device = DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint})
    proof = Proof(device.proof("GET", URI, access_token=token, now=NOW), "GET", URI)
    claims = _verifier().verify(token, AUDIENCE, proof)
    assert claims.key_thumbprint == device.thumbprint
    assert "cnf" not in claims.extra


def test_a_bound_token_without_a_proof_needs_one() -> None:
    token = _token(cnf={"jkt": DeviceKey.generate().thumbprint})
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(token, AUDIENCE)
    assert refused.value.reason is InvalidReason.PROOF_REQUIRED and not isinstance(refused.value, InvalidProof)


def test_a_bound_token_with_another_devices_proof_is_refused() -> None:
    device, thief = DeviceKey.generate(), DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint})
    proof = Proof(thief.proof("GET", URI, access_token=token, now=NOW), "GET", URI)
    with pytest.raises(InvalidProof) as refused:
        _verifier().verify(token, AUDIENCE, proof)
    assert refused.value.check == "key"


def test_a_proof_for_another_token_is_refused() -> None:
    device = DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint})
    proof = Proof(device.proof("GET", URI, access_token=_token(jti="other"), now=NOW), "GET", URI)
    with pytest.raises(InvalidProof) as refused:
        _verifier().verify(token, AUDIENCE, proof)
    assert refused.value.check == "ath"


def test_a_bearer_token_with_a_proof_is_refused() -> None:
    device = DeviceKey.generate()
    token = _token()
    with pytest.raises(InvalidProof) as refused:
        _verifier().verify(token, AUDIENCE, Proof(device.proof("GET", URI, access_token=token, now=NOW), "GET", URI))
    assert refused.value.check == "unbound"
    assert _verifier().verify(token, AUDIENCE).key_thumbprint == ""


def test_token_checks_come_before_the_proof() -> None:
    device = DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint})
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(token, "another-api", Proof("not a proof", "GET", URI))
    assert refused.value.reason is InvalidReason.WRONG_AUDIENCE


def test_the_verifier_shares_the_checker_it_is_given() -> None:
    device = DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint})
    checker = ProofChecker(clock=Clock())
    proof = Proof(device.proof("GET", URI, access_token=token, now=NOW), "GET", URI)
    _verifier(proofs=checker).verify(token, AUDIENCE, proof)
    with pytest.raises(InvalidProof) as refused:
        _verifier(proofs=checker).verify(token, AUDIENCE, proof)
    assert refused.value.check == "replayed"
    assert checker.replay_cache_entries == 1


def test_the_verifiers_own_checker_uses_its_clock() -> None:
    clock = Clock(NOW + 120)
    device = DeviceKey.generate()
    token = _token(cnf={"jkt": device.thumbprint}, exp=int(NOW) + 900)
    stale = Proof(device.proof("GET", URI, access_token=token, now=NOW), "GET", URI)
    with pytest.raises(InvalidProof) as refused:
        _verifier(clock).verify(token, AUDIENCE, stale)
    assert refused.value.check == "iat"


@pytest.mark.parametrize(
    "cnf",
    [
        {}, None, "jkt", [], {"jkt": None}, {"jkt": 1}, {"jkt": ""}, {"jkt": "A" * 42}, {"jkt": "A" * 44},
        {"jkt": "A" * 42 + "B"},  # non-zero trailing bits: a second spelling
        {"jkt": "A" * 42 + "="}, {"jkt": "A" * 43, "x5t#S256": "A" * 43}, {"jwk": {"kty": "OKP"}},
    ],
)
def test_any_other_confirmation_is_malformed(cnf: Any) -> None:
    with pytest.raises(InvalidToken) as refused:
        _verifier().verify(_token(cnf=cnf), AUDIENCE)
    assert refused.value.reason is InvalidReason.MALFORMED


def test_identify_reads_a_bound_token_without_a_proof() -> None:
    device = DeviceKey.generate()
    claims = _verifier().identify(_token(cnf={"jkt": device.thumbprint}, exp=int(NOW) - 3600))
    assert claims.key_thumbprint == device.thumbprint


def test_the_time_module_clock_is_the_default() -> None:
    device = DeviceKey.generate()
    assert ProofChecker().check(device.proof_for("GET", URI)) == device.thumbprint
    assert abs(ProofChecker().clock() - time.time()) < 60
