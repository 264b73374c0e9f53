"""Device keys and DPoP proofs for tests: good ones from :class:`DeviceKey`, and every kind
of bad one (issue 13, section 6), signed for real where a signature is part of the attack."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from authority_client.proof import DeviceKey, Proof
from authority_client.v1 import authority_pb2 as pb
from cryptography.hazmat.primitives.asymmetric import ed25519

# The requests the proofs come with: the device's sign-in and refresh at the login
# service (which passes the proof on), and a call to a service that validates the token.
SIGN_IN = ("POST", "https://login.example.com/sign-in")
REFRESH = ("POST", "https://login.example.com/refresh")
API = ("POST", "https://orders.example.com/orders.v1.Orders/List")


def message(proof: Proof) -> pb.ProofOfPossession:
    """The contract's ProofOfPossession for ``proof``."""
    return pb.ProofOfPossession(proof=proof.proof, http_method=proof.http_method, http_uri=proof.http_uri)


def ath(token: str) -> str:
    """base64url(SHA-256(token)), as a proof for ``token`` carries it."""
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


class RawDevice:
    """An Ed25519 device key whose private half the test holds, to sign any proof at all."""

    def __init__(self) -> None:
        self.private_key = ed25519.Ed25519PrivateKey.generate()
        self.key = DeviceKey(self.private_key)

    def claims(self, request: tuple[str, str], access_token: str | None, now: float | None) -> dict[str, Any]:
        """The claims of a good proof for ``request``."""
        method, uri = request
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16), "htm": method, "htu": uri, "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = ath(access_token)
        return claims

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        """``claims`` signed with this key; ``typ`` dpop+jwt and the public ``jwk`` unless given."""
        all_headers = {"typ": "dpop+jwt", "jwk": self.key.public_jwk, **headers}
        return jwt.encode(claims, self.private_key, algorithm="EdDSA", headers=all_headers)


def _pop(text: str, request: tuple[str, str]) -> pb.ProofOfPossession:
    return pb.ProofOfPossession(proof=text, http_method=request[0], http_uri=request[1])


BadProof = Callable[[RawDevice, DeviceKey, tuple[str, str], "str | None", float], pb.ProofOfPossession]


def _claims(device: RawDevice, request: tuple[str, str], token: str | None, now: float, **changes: Any) -> dict[str, Any]:
    claims = device.claims(request, token, now)
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _none_alg(device: RawDevice, request: tuple[str, str], token: str | None, now: float, signature: str = "") -> str:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": device.key.public_jwk}
    segments = (json.dumps(header), json.dumps(device.claims(request, token, now)))
    return ".".join(base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode() for s in segments) + "." + signature


def _hs256(device: RawDevice, request: tuple[str, str], token: str | None, now: float) -> str:
    header = {"typ": "dpop+jwt", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}
    return jwt.encode(device.claims(request, token, now), "a shared secret of 32 bytes or more", algorithm="HS256",
                      headers=header)


def _private_jwk(device: RawDevice, request: tuple[str, str], token: str | None, now: float) -> str:
    private = jwt.get_algorithm_by_name("EdDSA").to_jwk(device.private_key, as_dict=True)
    return device.sign(device.claims(request, token, now), jwk={**device.key.public_jwk, "d": private["d"]})


# Each bad proof the authority must refuse wherever one comes: name -> how to make it,
# from the device (whose key the session is bound to), the request, the access token
# (None at sign-in and refresh) and the time. Refusals the check of ``ath`` or of the
# bound key make are in ONLY_WITH_A_TOKEN and ONLY_WITH_A_BOUND_KEY.
BAD_PROOFS: dict[str, BadProof] = {
    "empty": lambda d, other, r, t, now: _pop("", r),
    "malformed": lambda d, other, r, t, now: _pop("not.a.proof", r),
    "not-base64url": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now)).replace("-", "+", 1) + "=", r),
    "payload-not-json": lambda d, other, r, t, now: _pop(
        d.sign(d.claims(r, t, now)).split(".")[0] + ".bm90IGpzb24." + "A" * 86, r
    ),
    "wrong-typ": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now), typ="JWT"), r),
    "at+jwt-typ": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now), typ="at+jwt"), r),
    "alg-none": lambda d, other, r, t, now: _pop(_none_alg(d, r, t, now, signature="c2ln"), r),
    "alg-none-unsigned": lambda d, other, r, t, now: _pop(_none_alg(d, r, t, now), r),
    "alg-HS256": lambda d, other, r, t, now: _pop(_hs256(d, r, t, now), r),
    "jwk-with-private-d": lambda d, other, r, t, now: _pop(_private_jwk(d, r, t, now), r),
    "no-jwk": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now), jwk=None), r),
    "bad-signature": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now))[:-4] + "AAAA", r),
    "signed-by-another-key-than-its-jwk": lambda d, other, r, t, now: _pop(
        d.sign(d.claims(r, t, now), jwk=other.public_jwk), r
    ),
    "no-jti": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, jti=None)), r),
    "jti-not-a-string": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, jti=7)), r),
    "wrong-htm": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, htm="GET")), r),
    "wrong-htu": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, htu="https://elsewhere.example.com/x")), r),
    "request-method-not-the-proof's": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now)), ("PUT", r[1])),
    "stale-iat": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, iat=int(now) - 600)), r),
    "future-iat": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, iat=int(now) + 600)), r),
    "iat-a-string": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, iat=str(int(now)))), r),
    "iat-a-boolean": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, iat=True)), r),
    "over-8-KiB": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, pad="x" * 8192)), r),
    "http-uri-over-8-KiB": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now)), (r[0], r[1] + "x" * 8192)),
    "http-method-empty": lambda d, other, r, t, now: _pop(d.sign(d.claims(r, t, now)), ("", r[1])),
}
ONLY_WITH_A_TOKEN: dict[str, BadProof] = {
    "ath-mismatch": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, ath=ath("another token"))), r),
    "no-ath": lambda d, other, r, t, now: _pop(d.sign(_claims(d, r, t, now, ath=None)), r),
}
ONLY_WITH_A_BOUND_KEY: dict[str, BadProof] = {
    # The stolen-token case: a good proof, by the thief's own key.
    "by-another-key": lambda d, other, r, t, now: message(Proof(other.proof(r[0], r[1], access_token=t, now=now), *r)),
}

# The check of the proof checker each bad proof fails ("field" for the input rule of
# the RPC, before any check).
FAILS: dict[str, str] = {
    "empty": "field", "malformed": "form", "not-base64url": "form", "payload-not-json": "form",
    "wrong-typ": "typ", "at+jwt-typ": "typ", "alg-none": "alg", "alg-none-unsigned": "form", "alg-HS256": "alg",
    "jwk-with-private-d": "jwk", "no-jwk": "jwk", "bad-signature": "signature",
    "signed-by-another-key-than-its-jwk": "signature", "no-jti": "jti", "jti-not-a-string": "jti",
    "wrong-htm": "htm", "wrong-htu": "htu", "request-method-not-the-proof's": "htm",
    "stale-iat": "iat", "future-iat": "iat", "iat-a-string": "iat", "iat-a-boolean": "iat",
    "over-8-KiB": "field", "http-uri-over-8-KiB": "field", "http-method-empty": "field",
    "ath-mismatch": "ath", "no-ath": "ath", "by-another-key": "key",
}
