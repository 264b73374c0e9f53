"""The public keys of DPoP proofs (RFC 9449 section 4.2): read strictly from the proof's
``jwk`` header, and named by their RFC 7638 thumbprint (``jkt``).

A proof's key is accepted in one spelling only (canonical base64url members of the exact
size, no leading zero octets in RSA numbers), so one key has one thumbprint: a re-spelt
key cannot pass for another key, nor a replayed proof for a new one.

Every proof of a device carries the same ``jwk``, so :func:`read_proof_key` remembers the
key object and thumbprint of the last :data:`KEY_CACHE_SIZE` keys it read, keyed by the
algorithm and the exact strings of the members RFC 7638 hashes (all that either is made
of). Another spelling of a key is another entry, read and refused as before; a key that
fails is never remembered.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
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
# The proof keys read_proof_key remembers: a few thousand devices calling one process.
# By RSS, an entry takes about 0.9 KB for an Ed25519 key and 3.4 KB for an 8192-bit RSA
# one (the largest a proof may hold), so the cache stays under 15 MB whatever is sent.
KEY_CACHE_SIZE = 4096

# The members RFC 7638 section 3.2 hashes, by key type.
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
# The key type and curve each proof algorithm needs.
_KEY_TYPE = {"EdDSA": ("OKP", "Ed25519"), "ES256": ("EC", "P-256"), "RS256": ("RSA", None)}


class BadKey(ValueError):
    """A ``jwk`` that is not a public key of the type the proof's algorithm needs."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReadKey:
    """A proof's public key and its RFC 7638 thumbprint."""

    key: ProofKey
    thumbprint: str


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


def read_proof_key(algorithm: str, jwk: object) -> ReadKey:
    """:func:`proof_key` and :func:`jwk_thumbprint` of ``jwk`` for ``algorithm``, or
    :class:`BadKey` as :func:`proof_key` says; a key read before is served from a cache
    of :data:`KEY_CACHE_SIZE` keys (module docstring; thread-safe)."""
    if type(jwk) is not dict:
        raise BadKey("jwk is not an object")
    if not jws.PRIVATE_JWK_MEMBERS.isdisjoint(jwk):
        raise BadKey("jwk holds private members")
    kty = _KEY_TYPE[algorithm][0]
    members = tuple(jwk.get(name) for name in _REQUIRED_MEMBERS[kty])
    # Exactly str, so that the cache compares the very strings sent: a subclass of str
    # could hash and compare as another spelling does.
    if not all(type(value) is str for value in members):
        raise BadKey("a jwk's members are strings")
    return _read_key(algorithm, members)


# Bounded (least recently used first out), thread-safe, and it remembers only what
# returns: a BadKey is raised again, in full, each time.
@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _read_key(algorithm: str, members: tuple[str, ...]) -> ReadKey:
    # A pure function of its arguments: the required members are all proof_key reads
    # besides the private ones (refused above, on the whole jwk) and all the thumbprint
    # hashes, and kty and crv are among them.
    jwk = dict(zip(_REQUIRED_MEMBERS[_KEY_TYPE[algorithm][0]], members))
    return ReadKey(proof_key(algorithm, jwk), jwk_thumbprint(jwk))


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
