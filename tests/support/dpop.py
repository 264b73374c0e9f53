"""Hand-made DPoP proofs for tests that attack the proof checker: any header and claims,
signed for real by a device key (or by another key than the one the header names)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Union

import jwt
from authority_client.jwk import jwk_thumbprint
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support import forge

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
# RFC 6979, so a corpus built from these regenerates byte for byte.
_DETERMINISTIC_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def algorithm_of(key: PrivateKey) -> str:
    """The proof algorithm of a private key."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "RS256"


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public JWK of ``key``, with only the members RFC 7638 hashes."""
    jwk = jwt.get_algorithm_by_name(algorithm_of(key)).to_jwk(key.public_key(), as_dict=True)
    return {name: jwk[name] for name in ("kty", "crv", "x", "y", "n", "e") if name in jwk}


def thumbprint(key: PrivateKey) -> str:
    """The RFC 7638 thumbprint of ``key``'s public half."""
    return jwk_thumbprint(public_jwk(key))


def ath(token: str) -> str:
    """The ``ath`` claim for ``token``."""
    return forge.b64(hashlib.sha256(token.encode()).digest())


def sign_raw(key: PrivateKey, signing_input: str) -> str:
    """``signing_input`` with ``key``'s signature appended (ES256 raw ``r || s``)."""
    data = signing_input.encode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, _DETERMINISTIC_ECDSA))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{forge.b64(signature)}"


def craft(
    key: PrivateKey,
    claims: dict[str, Any],
    *,
    signer: PrivateKey | None = None,
    drop: tuple[str, ...] = (),
    **header: Any,
) -> str:
    """A proof with ``claims``, the header ``typ``/``alg``/``jwk`` of ``key`` changed by
    ``header`` (a value of ``...`` removes a member, as do names in ``drop``), signed by
    ``signer`` (default ``key``)."""
    fields: dict[str, Any] = {"typ": "dpop+jwt", "alg": algorithm_of(key), "jwk": public_jwk(key), **header}
    fields = {name: value for name, value in fields.items() if value is not ... and name not in drop}
    signing_input = f"{segment(fields)}.{segment(claims)}"
    return sign_raw(signer or key, signing_input)


def segment(value: Any) -> str:
    """A JSON value as a compact segment, without whitespace."""
    return forge.b64(json.dumps(value, separators=(",", ":")).encode())


def claims(now: float, method: str = "POST", uri: str = "https://api.example.com/orders", *,
           token: str | None = None, jti: str = "proof-1", **changes: Any) -> dict[str, Any]:
    """The claims of a good proof at ``now``, changed by ``changes`` (``...`` removes one)."""
    out: dict[str, Any] = {"jti": jti, "htm": method, "htu": uri, "iat": int(now)}
    if token is not None:
        out["ath"] = ath(token)
    out.update(changes)
    return {name: value for name, value in out.items() if value is not ...}

