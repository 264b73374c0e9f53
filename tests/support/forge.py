"""Hand-made tokens for tests that attack the verifier: segments, signatures and the
ES256 signature forms (low-S, which the authority makes, and high-S, its malleated twin)."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authority.keys import SigningKey

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64(data: bytes) -> str:
    """Unpadded base64url, as in a token."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def segment(value: Any) -> str:
    """A JSON value as a token segment."""
    return b64(json.dumps(value).encode())


def _with_s(token: str, high: bool) -> str:
    signing_input, _, encoded = token.rpartition(".")
    signature = unb64(encoded)
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    if (s > P256_ORDER // 2) != high:
        s = P256_ORDER - s
    return f"{signing_input}.{b64(r + s.to_bytes(32, 'big'))}"


def low_s(token: str) -> str:
    """An ES256 token with the low-S form of its signature (the form the authority issues)."""
    return _with_s(token, high=False)


def high_s(token: str) -> str:
    """An ES256 token with the high-S form ``(r, n - s)`` of its signature: it verifies
    under plain ECDSA, and is a second spelling of the same signed token."""
    return _with_s(token, high=True)


def sign(key: SigningKey, payload: Any, kid: str | None = None, **headers: Any) -> str:
    """``payload`` signed for real with ``key`` (encoded by PyJWT), under ``kid`` (the key's
    own by default), with ``typ`` at+jwt unless given; ES256 signatures are made low-S."""
    all_headers = {"kid": kid or key.kid, "typ": "at+jwt", **headers}
    token = jwt.encode(payload, key.private_key, algorithm=key.algorithm.value, headers=all_headers)
    return sign_input(key, token.rpartition(".")[0]) if key.algorithm.value == "ES256" else token


def sign_bytes(key: SigningKey, payload: bytes, **headers: Any) -> str:
    """Raw ``payload`` bytes (JSON or not) signed for real with ``key``."""
    all_headers = {"kid": key.kid, "typ": "at+jwt", **headers}
    token = jwt.PyJWS().encode(payload, key.private_key, algorithm=key.algorithm.value, headers=all_headers)
    return sign_input(key, token.rpartition(".")[0]) if key.algorithm.value == "ES256" else token


# RFC 6979: the same input always gets the same ES256 signature, as Ed25519 and RS256 do,
# so the shared token corpus (tests/vectors) regenerates byte for byte.
_DETERMINISTIC_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def sign_input(key: SigningKey, signing_input: str) -> str:
    """A token whose first two segments are ``signing_input`` exactly (canonical or not),
    with a real signature of ``key`` over them; ES256 deterministic and low-S."""
    if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.private_key.sign(signing_input.encode(), _DETERMINISTIC_ECDSA))
        return low_s(f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
    algorithm = jwt.get_algorithm_by_name(key.algorithm.value)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key.private_key))}"
