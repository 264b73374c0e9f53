"""Device keys, and the bad ways of presenting a device-bound token (issue 13, section 6)
as every edge receives them: the gRPC interceptors, the HTTP middlewares and Envoy's
external authorization each send these and expect the same reason.

A case builds, for a request (method and URI) and a device's token, the scheme and the
``dpop`` values to send; the proof checker's own unit tests cover each check's details,
these prove every edge wires the request in and answers each refusal alike.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from authority_client.proof import DeviceKey, normalize_uri
from cryptography.hazmat.primitives.asymmetric import ed25519

# Where the login service received the device's sign-in (any absolute URI: the
# authority checks the proof against the one the login service names).
SIGN_IN_URI = "https://login.example.com/sign-in"


@dataclasses.dataclass(frozen=True)
class Device:
    """A device's key, with the private half at hand for forging odd proofs."""

    private_key: ed25519.Ed25519PrivateKey
    key: DeviceKey

    @classmethod
    def generate(cls) -> Device:
        private_key = ed25519.Ed25519PrivateKey.generate()
        return cls(private_key, DeviceKey(private_key))

    def sign_in_proof(self) -> Any:
        """The proof of a sign-in request (no ``ath``)."""
        return self.key.proof_for("POST", SIGN_IN_URI)

    def proof(self, method: str, uri: str, token: str) -> str:
        """A fresh, good proof for the request."""
        return self.key.proof(method, uri, access_token=token)

    def forge(self, claims: dict[str, Any], headers: dict[str, Any] | None = None, algorithm: str = "EdDSA",
              key: Any = None) -> str:
        """A proof with these claims and headers (typ and jwk unless overridden)."""
        fields = {"typ": "dpop+jwt", "jwk": self.key.public_jwk, **(headers or {})}
        return jwt.encode(claims, self.private_key if key is None else key, algorithm=algorithm, headers=fields)


def _claims(method: str, uri: str, token: str, **changes: Any) -> dict[str, Any]:
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    claims = {"jti": secrets.token_urlsafe(12), "htm": method, "htu": normalize_uri(uri), "iat": int(time.time()),
              "ath": ath}
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _alg_none(device: Device, method: str, uri: str, token: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = {"typ": "dpop+jwt", "alg": "none", "jwk": device.key.public_jwk}
    return f"{part(header)}.{part(_claims(method, uri, token))}."


@dataclasses.dataclass(frozen=True)
class Case:
    """One way of presenting a bound token, and the reason it is refused with."""

    name: str
    scheme: str
    # (device, attacker, method, uri, token) -> the dpop values sent
    proofs: Callable[[Device, Device, str, str, str], list[str]]
    reason: str


def _other_uri(uri: str) -> str:
    return uri.rstrip("/") + "/other"


BAD_CASES = [
    Case("bound token sent as Bearer", "Bearer", lambda d, a, m, u, t: [], "PROOF_REQUIRED"),
    Case("bound token sent as Bearer with a proof", "Bearer", lambda d, a, m, u, t: [d.proof(m, u, t)],
         "PROOF_REQUIRED"),
    Case("no proof", "DPoP", lambda d, a, m, u, t: [], "PROOF_REQUIRED"),
    Case("two proofs", "DPoP", lambda d, a, m, u, t: [d.proof(m, u, t), d.proof(m, u, t)], "BAD_PROOF"),
    Case("malformed proof", "DPoP", lambda d, a, m, u, t: ["not-a-proof"], "BAD_PROOF"),
    Case("proof by another key", "DPoP", lambda d, a, m, u, t: [a.proof(m, u, t)], "BAD_PROOF"),
    Case("ath of another token", "DPoP", lambda d, a, m, u, t: [d.proof(m, u, t + "x")], "BAD_PROOF"),
    Case("no ath", "DPoP", lambda d, a, m, u, t: [d.key.proof(m, u)], "BAD_PROOF"),
    Case("wrong htm", "DPoP", lambda d, a, m, u, t: [d.proof("PUT", u, t)], "BAD_PROOF"),
    Case("wrong htu", "DPoP", lambda d, a, m, u, t: [d.proof(m, _other_uri(u), t)], "BAD_PROOF"),
    Case("stale iat", "DPoP", lambda d, a, m, u, t: [d.forge(_claims(m, u, t, iat=int(time.time()) - 3600))],
         "BAD_PROOF"),
    Case("future iat", "DPoP", lambda d, a, m, u, t: [d.forge(_claims(m, u, t, iat=int(time.time()) + 3600))],
         "BAD_PROOF"),
    Case("wrong typ", "DPoP", lambda d, a, m, u, t: [d.forge(_claims(m, u, t), {"typ": "JWT"})], "BAD_PROOF"),
    Case("alg none", "DPoP", lambda d, a, m, u, t: [_alg_none(d, m, u, t)], "BAD_PROOF"),
    Case("alg HS256", "DPoP", lambda d, a, m, u, t: [d.forge(_claims(m, u, t), algorithm="HS256",
                                                             key=b"k" * 32)], "BAD_PROOF"),
    Case("jwk with private members", "DPoP",
         lambda d, a, m, u, t: [d.forge(_claims(m, u, t), {"jwk": {**d.key.public_jwk, "d": "AAAA"}})], "BAD_PROOF"),
    Case("proof over 8 KiB", "DPoP", lambda d, a, m, u, t: [d.forge(_claims(m, u, t, pad="x" * 9000))],
         "BAD_PROOF"),
]

