"""The cache of proof keys (authority_client.jwk.read_proof_key): bounded whatever keys
are sent, keyed so that no key passes for another and no other spelling of a key is
served from it, and safe across threads. Real keys and signatures throughout."""

from __future__ import annotations

import functools
import threading

import pytest
from authority_client import jwk as proof_keys
from authority_client import jws
from authority_client.jwk import KEY_CACHE_SIZE, BadKey, jwk_thumbprint, read_proof_key
from authority_client.proof import InvalidProof, Proof, ProofChecker
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.support import dpop

NOW = 1_800_000_000.0
METHOD = "POST"
URI = "https://api.example.com/orders"
TOKEN = "header.payload.signature"
# The last character of a 32-byte member carries two unused bits; canonical spellings
# leave them zero (jws._CANONICAL_LAST), and the next character of the alphabet sets one.
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@functools.cache
def _public_jwks(count: int) -> list[dict[str, str]]:
    """``count`` distinct Ed25519 public keys (generated once per run)."""
    return [dpop.public_jwk(ed25519.Ed25519PrivateKey.generate()) for _ in range(count)]


def _checker() -> ProofChecker:
    return ProofChecker(clock=lambda: NOW)


def _proof(text: str) -> Proof:
    return Proof(text, METHOD, URI)


def _refusal(checker: ProofChecker, proof: Proof, **options: str) -> str:
    with pytest.raises(InvalidProof) as refused:
        checker.check(proof, access_token=TOKEN, **options)
    return refused.value.check


def _respelt(member: str) -> str:
    """The same bytes as the canonical 32-byte ``member``, with an unused bit set."""
    last = _B64URL.index(member[-1])
    assert last % 4 == 0  # canonical: both unused bits clear
    return member[:-1] + _B64URL[last + 1]


def test_distinct_keys_beyond_the_bound_do_not_grow_the_cache() -> None:
    # Guards against a cache an attacker could grow by sending a new key with each proof.
    proof_keys._read_key.cache_clear()
    keys = _public_jwks(KEY_CACHE_SIZE + 100)
    for jwk in keys:
        read_proof_key("EdDSA", jwk)
    info = proof_keys._read_key.cache_info()
    assert info.currsize == info.maxsize == KEY_CACHE_SIZE
    # The least recently used went first: the first key is read anew, the last is a hit.
    read_proof_key("EdDSA", keys[-1])
    assert proof_keys._read_key.cache_info().hits == info.hits + 1
    read_proof_key("EdDSA", keys[0])
    assert proof_keys._read_key.cache_info().misses == info.misses + 1


def test_a_cached_key_vouches_for_no_proof_by_another_key() -> None:
    device, thief = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    checker = _checker()
    assert checker.check(_proof(dpop.craft(device, dpop.claims(NOW, token=TOKEN))), access_token=TOKEN) == (
        dpop.thumbprint(device)
    )
    # The device's jwk, now cached, on a proof the thief signed.
    forged = dpop.craft(device, dpop.claims(NOW, token=TOKEN, jti="forged"), signer=thief)
    assert _refusal(checker, _proof(forged)) == "signature"
    # The thief's own jwk: its own thumbprint, never the cached device's.
    own = _proof(dpop.craft(thief, dpop.claims(NOW, token=TOKEN, jti="own")))
    assert _refusal(checker, own, key_thumbprint=dpop.thumbprint(device)) == "key"
    assert checker.check(own, access_token=TOKEN) == dpop.thumbprint(thief) != dpop.thumbprint(device)


def test_another_spelling_of_a_cached_key_is_refused_not_served_from_the_cache() -> None:
    device = ec.generate_private_key(ec.SECP256R1())
    jwk = dpop.public_jwk(device)
    checker = _checker()
    checker.check(_proof(dpop.craft(device, dpop.claims(NOW, token=TOKEN))), access_token=TOKEN)
    before = proof_keys._read_key.cache_info()
    for member in ("x", "y"):
        respelt = {**jwk, member: _respelt(jwk[member])}
        proof = dpop.craft(device, dpop.claims(NOW, token=TOKEN, jti=f"respelt-{member}"), jwk=respelt)
        assert _refusal(checker, _proof(proof)) == "jwk"
    after = proof_keys._read_key.cache_info()
    assert (after.hits, after.currsize) == (before.hits, before.currsize)  # missed, and not remembered


def test_a_str_subclass_is_not_taken_for_the_string_it_spells() -> None:
    class Member(str):
        pass

    jwk = dpop.public_jwk(ed25519.Ed25519PrivateKey.generate())
    read_proof_key("EdDSA", jwk)
    with pytest.raises(BadKey):
        read_proof_key("EdDSA", {**jwk, "x": Member(jwk["x"])})


def test_members_outside_the_thumbprint_share_the_keys_entry() -> None:
    # kid or use change neither the key nor its thumbprint (RFC 7638 section 3.2).
    jwk = dpop.public_jwk(ed25519.Ed25519PrivateKey.generate())
    read = read_proof_key("EdDSA", jwk)
    assert read_proof_key("EdDSA", {**jwk, "kid": "k", "use": "sig"}) is read
    assert read.thumbprint == jwk_thumbprint(jwk)


def test_threads_reading_keys_beyond_the_bound_each_get_their_own() -> None:
    keys = _public_jwks(KEY_CACHE_SIZE + 100)
    wrong: list[str] = []
    start = threading.Barrier(4)

    def read(offset: int) -> None:
        start.wait(timeout=30)
        for jwk in keys[offset::4] + keys[: 400]:
            read = read_proof_key("EdDSA", jwk)
            key = read.key
            if (
                not isinstance(key, ed25519.Ed25519PublicKey)
                or key.public_bytes_raw() != jws.b64url_decode(jwk["x"])
                or read.thumbprint != jwk_thumbprint(jwk)
            ):
                wrong.append(jwk["x"])

    threads = [threading.Thread(target=read, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []
    assert proof_keys._read_key.cache_info().currsize <= KEY_CACHE_SIZE
