"""The public keys of DPoP proofs (RFC 9449 section 4.2): read strictly from the proof's
``jwk`` header, and named by their RFC 7638 thumbprint (``jkt``).

A proof's key is accepted in one spelling only (canonical base64url members of the exact
size, no leading zero octets in RSA numbers), so one key has one thumbprint: a re-spelt
key cannot pass for another key, nor a replayed proof for a new one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Union

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authority_client import jws

ProofKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]
MIN_RSA_BITS = 2048
# Bounds on the work one proof can ask for: a modulus past MAX_RSA_BITS, or a public
# exponent past MAX_RSA_EXPONENT_BITS, makes a single signature check slow.
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 32

# The members RFC 7638 section 3.2 hashes, by key type.
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# The key type and curve each proof algorithm needs.
_KEY_TYPE = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256"), "RS256": ("RSA", None)}


class BadKey(ValueError):
    """A ``jwk`` that is not a public key of the type the proof's algorithm needs."""


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint of a public JWK: SHA-256 over its required members, as
    base64url without padding. ValueError for a key type other than EC, OKP or RSA, or
    a required member that is missing or not a string."""
    kty = jwk.get("kty")
    members = _REQUIRED_MEMBERS.get(kty) if type(kty) is str else None
    if members is None:
        raise ValueError("a thumbprint needs a JWK of type EC, OKP or RSA")
    required = {name: jwk.get(name) for name in members}
    if not all(type(value) is str for value in required.values()):
        raise ValueError("a JWK's required members are strings")
    # Sorted names, no whitespace (RFC 7638 section 3.3); the members are ASCII here.
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def proof_key(algorithm: str, jwk: object) -> ProofKey:
    """The public key of ``jwk`` for ``algorithm`` (EdDSA, ES256 or RS256), or
    :class:`BadKey`: not an object, private members, another key type or curve, members
    not in their canonical spelling, a point off the curve, an RSA modulus outside 2048 to
    8192 bits or an exponent over 32 bits."""
    if type(jwk) is not dict:
        raise BadKey("jwk is not an object")
    if not jws.PRIVATE_JWK_MEMBERS.isdisjoint(jwk):
        raise BadKey("jwk holds private members")
    kty, crv = _KEY_TYPE[algorithm]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise BadKey("jwk is not of the algorithm's key type")
    try:
        if algorithm == "EdDSA":
            return ed25519.Ed25519PublicKey.from_public_bytes(_fixed(jwk.get("x"), 32))
        if algorithm == "ES256":
            x = int.from_bytes(_fixed(jwk.get("x"), 32), "big")
            y = int.from_bytes(_fixed(jwk.get("y"), 32), "big")
            return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()  # ValueError off the curve
        n = _unsigned(jwk.get("n"))
        e = _unsigned(jwk.get("e"))
        if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS or e.bit_length() > MAX_RSA_EXPONENT_BITS:
            raise BadKey("an RSA proof key has 2048 to 8192 bits and an exponent of at most 32 bits")
        return rsa.RSAPublicNumbers(e, n).public_key()  # ValueError for an impossible e
    except (ValueError, TypeError) as error:  # BadKey and MalformedJWS are ValueErrors
        raise BadKey("jwk is not a valid public key") from error


def _fixed(member: object, size: int) -> bytes:
    if not jws.is_canonical_b64url(member, size):
        raise BadKey(f"a member of {size} bytes in canonical base64url was expected")
    return jws.b64url_decode(member)  # type: ignore[arg-type]


def _unsigned(member: object) -> int:
    """An RSA number: canonical base64url, big-endian, no leading zero octet (RFC 7518 6.3.1)."""
    if type(member) is not str:
        raise BadKey("an RSA member is a string")
    data = jws.b64url_decode(member)
    if not data or data[0] == 0:
        raise BadKey("an RSA member has no leading zero octets")
    return int.from_bytes(data, "big")
