"""The proof attacks of the catalogue (issue 13 section 6): device-bound tokens presented
with bad DPoP proofs, or none, each refused with its reason and the proof check that
failed; and their controls, good proofs that pass.

A case is a token and an ordered list of presentations to one fresh verifier (a replay
needs the verifier's memory of the first one). tests/test_attacks.py runs them against a
running authority's keys; tests/vectors/generate.py writes them into the shared corpus
with fixed keys and a fixed time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from authority_client.proof import MAX_PROOF_BYTES

from tests.support import dpop, forge

METHOD = "POST"
URI = "https://api.example.com/orders"
# The device keys a case may use: the device's own (one per proof algorithm) and a thief's.
DEVICES = ("EdDSA", "ES256", "RS256", "thief")


@dataclasses.dataclass(frozen=True)
class Presentation:
    """One request: a proof (or none) with its method and URI, and what a verifier answers:
    ``VALID`` or the reason's name, and for BAD_PROOF the check that failed."""

    proof: str | None
    expected: str = "VALID"
    check: str | None = None
    http_method: str = METHOD
    http_uri: str = URI


@dataclasses.dataclass
class ProofTarget:
    """What building a case needs: tokens signed by the authority's key, the time, fresh
    identifiers and the device keys."""

    sign: Callable[..., str]  # claims changes -> a token of the authority's own key
    now: int
    new_id: Callable[[], str]
    devices: dict[str, dpop.PrivateKey]

    def bound(self, device: str = "EdDSA", **changes: Any) -> str:
        """A token bound to ``device``'s key."""
        return self.sign(cnf={"jkt": dpop.thumbprint(self.devices[device])}, **changes)

    def proof(self, token: str | None, device: str = "EdDSA", *, signer: str | None = None,
              drop: tuple[str, ...] = (), header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A proof by ``device`` for ``token`` at now, its claims and header changed
        (``iat_offset``: iat that many seconds from now)."""
        offset = claims.pop("iat_offset", None)
        if offset is not None:
            claims["iat"] = self.now + offset
        return dpop.craft(
            self.devices[device],
            dpop.claims(self.now, METHOD, URI, token=token, **{"jti": self.new_id(), **claims}),
            signer=None if signer is None else self.devices[signer], drop=drop, **(header or {}),
        )


@dataclasses.dataclass(frozen=True)
class ProofAttack:
    """A named case: a token for ``audience`` and its presentations."""

    name: str
    build: Callable[[ProofTarget], tuple[str, list[Presentation]]]
    audience: str = "api"
    # Proofs at the very edge of the window: only a verifier on the case's own clock can
    # tell, not a server on the wall clock.
    exact_time: bool = False
    # The verifier's replay cache size for this case; None for the default.
    replay_cache_size: int | None = None


def _bad(proof: str | None, check: str, **request: Any) -> Presentation:
    return Presentation(proof, "BAD_PROOF", check, **request)


def _one(check: str, **proof: Any) -> Callable[[ProofTarget], tuple[str, list[Presentation]]]:
    """A bound token and one proof by its device, changed as ``proof`` says."""
    def build(t: ProofTarget) -> tuple[str, list[Presentation]]:
        token = t.bound()
        return token, [_bad(t.proof(token, **proof), check)]
    return build


def _valid(device: str) -> Callable[[ProofTarget], tuple[str, list[Presentation]]]:
    def build(t: ProofTarget) -> tuple[str, list[Presentation]]:
        token = t.bound(device)
        return token, [Presentation(t.proof(token, device))]
    return build


def _high_s(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound("ES256")
    low = t.proof(token, "ES256")
    # WebCrypto does not normalise S: both forms are good, and they are one proof.
    return token, [Presentation(forge.high_s(low)), _bad(forge.low_s(low), "replayed")]


def _uri_spelling(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound()
    proof = t.proof(token, htu="HTTPS://API.Example.com:443/v1/../orders")
    return token, [Presentation(proof, http_uri="https://api.example.com/orders?page=2#top")]


def _window_edges(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound()
    return token, [Presentation(t.proof(token, iat=t.now - 60)), Presentation(t.proof(token, iat=t.now + 60))]


def _malformed(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound()
    good = t.proof(token).split(".")
    header_not_json = dpop.sign_raw(t.devices["EdDSA"], f"{forge.b64(b'{typ')}.{good[1]}")
    forms = ["", "not a proof", ".".join(good[:2]), good[0] + "=." + ".".join(good[1:]),
             ".".join(good) + ".x", header_not_json, ".".join([good[0], forge.b64(b"[1]"), good[2]])]
    return token, [_bad(text, "form") for text in forms]


def _hs256(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # Algorithm confusion: an HMAC keyed with the public key's bytes.
    token = t.bound()
    jwk = dpop.public_jwk(t.devices["EdDSA"])
    signing_input = (f"{dpop.segment({'typ': 'dpop+jwt', 'alg': 'HS256', 'jwk': jwk})}."
                     f"{dpop.segment(dpop.claims(t.now, METHOD, URI, token=token, jti=t.new_id()))}")
    mac = hmac.new(forge.unb64(jwk["x"]), signing_input.encode(), hashlib.sha256).digest()
    return token, [_bad(f"{signing_input}.{forge.b64(mac)}", "alg")]


def _private_d(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound("ES256")
    key = t.devices["ES256"]
    d = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    proof = t.proof(token, "ES256", header={"jwk": {**dpop.public_jwk(key), "d": forge.b64(d)}})
    return token, [_bad(proof, "jwk")]


def _rsa_bounds(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # Checked before the signature: made-up numbers of the wrong size, never a real key.
    token = t.bound("RS256")
    jwk = dpop.public_jwk(t.devices["RS256"])
    odd = {bits: forge.b64(((1 << (bits - 1)) | 1).to_bytes((bits + 7) // 8, "big")) for bits in (1024, 8200, 40)}
    shapes = [{"n": odd[1024]}, {"n": odd[8200]}, {"e": odd[40]}, {"e": forge.b64(b"\x00\x01\x00\x01")}]
    return token, [_bad(t.proof(token, "RS256", header={"jwk": {**jwk, **shape}}), "jwk") for shape in shapes]


def _replayed(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound()
    proof = t.proof(token)
    return token, [Presentation(proof), _bad(proof, "replayed")]


def _refused_then_good(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # A proof refused at any check is not remembered: the same jti is still free.
    token = t.bound()
    jti = t.new_id()
    claims = dpop.claims(t.now, METHOD, URI, token=token, jti=jti)
    wrong = dpop.craft(t.devices["EdDSA"], {**claims, "htm": "GET"})
    return token, [_bad(wrong, "htm"), Presentation(dpop.craft(t.devices["EdDSA"], claims))]


def _by_another_key(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # The stolen token: the thief's proofs are good, but by the wrong key.
    token = t.bound()
    return token, [_bad(t.proof(token, "thief"), "key"), Presentation(t.proof(token))]


def _over_8_kib(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.bound()
    pad = 0
    while len(proof := t.proof(token, pad="x" * pad)) <= MAX_PROOF_BYTES:
        pad += 100
    return token, [_bad(proof, "size")]


def _cache_full(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # A cache of one: a second good proof is refused rather than the first forgotten.
    token = t.bound()
    first = t.proof(token)
    return token, [Presentation(first), _bad(t.proof(token), "replay-cache-full"), _bad(first, "replayed")]


def _without_a_proof(t: ProofTarget) -> tuple[str, list[Presentation]]:
    return t.bound(), [Presentation(None, "PROOF_REQUIRED")]


def _bearer_with_a_proof(t: ProofTarget) -> tuple[str, list[Presentation]]:
    token = t.sign()
    return token, [_bad(t.proof(token), "unbound"), Presentation(None)]


def _token_first(t: ProofTarget) -> tuple[str, list[Presentation]]:
    # The token's own checks come first: an expired bound token is EXPIRED, whatever the proof.
    token = t.bound(exp=t.now - 1)
    return token, [Presentation("not a proof", "EXPIRED"), Presentation(None, "EXPIRED")]


PROOF_ATTACKS = [
    ProofAttack("valid-eddsa-proof", _valid("EdDSA")),
    ProofAttack("valid-es256-proof", _valid("ES256")),
    ProofAttack("valid-rs256-proof", _valid("RS256")),
    ProofAttack("valid-es256-proof-high-s-then-replayed-low-s", _high_s),
    ProofAttack("valid-htu-spelt-otherwise-query-and-fragment-ignored", _uri_spelling),
    ProofAttack("valid-iat-at-both-edges-of-the-window", _window_edges, exact_time=True),
    ProofAttack("bound-token-without-a-proof", _without_a_proof),
    ProofAttack("bearer-token-with-a-proof", _bearer_with_a_proof),
    ProofAttack("proof-malformed", _malformed),
    ProofAttack("proof-crit-header", _one("form", header={"crit": ["exp"]})),
    ProofAttack("proof-typ-jwt", _one("typ", header={"typ": "JWT"})),
    ProofAttack("proof-typ-missing", _one("typ", drop=("typ",))),
    ProofAttack("proof-alg-none", _one("alg", header={"alg": "none"})),
    ProofAttack("proof-alg-hs256", _hs256),
    ProofAttack("proof-jwk-missing", _one("jwk", drop=("jwk",))),
    ProofAttack("proof-jwk-with-private-d", _private_d),
    ProofAttack("proof-jwk-rsa-too-small-too-large-or-non-canonical", _rsa_bounds),
    ProofAttack("proof-jwk-of-another-key-type", _one("jwk", header={"alg": "ES256"})),
    ProofAttack("proof-signature-by-another-key-than-its-jwk", _one("signature", signer="thief")),
    ProofAttack("proof-jti-missing", _one("jti", jti=...)),
    ProofAttack("proof-wrong-htm", _one("htm", htm="GET")),
    ProofAttack("proof-wrong-htu", _one("htu", htu="https://api.example.com/payments")),
    ProofAttack("proof-iat-stale", _one("iat", iat_offset=-61)),
    # Well past the window: against the authority's real clock a case made at the start of
    # a second and checked a second later must still be in the future by more than 60 s.
    ProofAttack("proof-iat-future", _one("iat", iat_offset=90)),
    ProofAttack("proof-replayed-jti", _replayed),
    ProofAttack("proof-refused-does-not-use-up-its-jti", _refused_then_good),
    ProofAttack("proof-replay-cache-full-refuses-rather-than-forgets", _cache_full, replay_cache_size=1),
    ProofAttack("proof-ath-mismatch", _one("ath", ath=dpop.ath("another token"))),
    ProofAttack("proof-ath-missing", _one("ath", ath=...)),
    ProofAttack("proof-by-another-key", _by_another_key),
    ProofAttack("proof-over-8-kib", _over_8_kib),
    ProofAttack("token-checks-come-before-the-proof", _token_first),
]
