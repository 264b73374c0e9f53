"""DPoP proofs of possession (RFC 9449): the one checker every verifier of this project
uses, and the device side's signer.

:class:`ProofChecker` checks a proof in this order; the first failure is an
:class:`InvalidProof` (reason ``BAD_PROOF``) whose ``check`` names the step:

1. ``size``: at most :data:`MAX_PROOF_BYTES`.
2. ``form``: a compact JWS in canonical unpadded base64url; header and payload strict
   JSON objects (:mod:`authority_client.jws`, the same decoding as access tokens); no
   ``crit`` header (no extension is understood here, RFC 7515 section 4.1.11).
3. ``typ``: ``dpop+jwt``.
4. ``alg``: one of :data:`PROOF_ALGORITHMS` (asymmetric only: never ``none`` or HMAC).
5. ``jwk``: a public key of the type and curve ``alg`` needs, without private members,
   in its one canonical spelling (:mod:`authority_client.jwk`); RSA of 2048 to 8192
   bits with a public exponent of at most 32 bits.
6. ``signature``: by that key. ES256 accepts high-S as well as low-S signatures
   (WebCrypto does not normalise S; a re-spelt proof keeps its jti, so replay still fails).
7. ``jti``: a non-empty string of at most 256 characters.
8. ``htm``: equals the request's method exactly.
9. ``htu``: normalised (:func:`normalize_uri`), equals the request's URI normalised.
10. ``iat``: a number (not a boolean) within ``now - max_age`` and ``now + max_age``.
11. ``ath``: when an access token is given, base64url(SHA-256(token)).
12. ``key``: when a thumbprint is given, the proof's key has it.
13. ``replayed``: the (thumbprint, jti) pair was not accepted before within the window;
    ``replay-cache-full`` when the cache holds only unexpired pairs and no room;
    ``replay-quota`` when the proof's key already holds ``per_key_limit`` unexpired pairs
    (so one key cannot fill the cache and lock every other key out).

Server nonces (RFC 9449 section 8) are not supported. The replay cache is per checker,
so per process: a proof replayed within the window to another process is not detected.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import heapq
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Union

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authority_client import jws
from authority_client.jwk import BadKey, jwk_thumbprint, read_proof_key
from authority_client.proof_uri import grpc_proof_uri, normalize_uri
from authority_client.verify import InvalidReason, InvalidToken

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_REPLAY_CACHE_SIZE",
    "DPOP_HEADER",
    "DPOP_SCHEME",
    "MAX_PROOF_BYTES",
    "PROOF_ALGORITHMS",
    "PROOF_TYPE",
    "DeviceKey",
    "InvalidProof",
    "Proof",
    "ProofChecker",
    "grpc_proof_uri",
    "jwk_thumbprint",
    "normalize_uri",
]

PROOF_TYPE = "dpop+jwt"
MAX_PROOF_BYTES = 8 * 1024
PROOF_ALGORITHMS: frozenset[str] = frozenset({"EdDSA", "ES256", "RS256"})
DEFAULT_MAX_AGE = 60.0
DEFAULT_REPLAY_CACHE_SIZE = 100_000
# The default per-key quota is the replay cache's size divided by this (at least 1).
_PER_KEY_SHARE = 10
DPOP_SCHEME = "DPoP"
DPOP_HEADER = "dpop"
MAX_JTI_LENGTH = 256

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey]


@dataclasses.dataclass(frozen=True, slots=True)
class Proof:
    """A DPoP proof exactly as sent, and the request it came with (the proto's ProofOfPossession)."""

    proof: str
    http_method: str
    http_uri: str

    def __repr__(self) -> str:
        # A proof is a credential for its lifetime: never in a log line.
        return f"Proof(http_method={self.http_method!r}, http_uri={self.http_uri!r})"


class InvalidProof(InvalidToken):
    """A DPoP proof failed a check; ``reason`` is always ``BAD_PROOF`` and ``check`` names
    the step (module docstring), or ``unbound`` for a proof sent with a bearer token. The
    message never quotes the proof or the token."""

    def __init__(self, check: str) -> None:
        super().__init__(InvalidReason.BAD_PROOF)
        self.check = check
        self.args = (f"BAD_PROOF ({check})",)

    def __reduce__(self) -> tuple[type[InvalidProof], tuple[str]]:
        return InvalidProof, (self.check,)


def _ath(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class ProofChecker:
    """Checks DPoP proofs (module docstring) and remembers the ones it accepted, for the
    window, to refuse replays. Thread-safe; one per process, shared by every verifier.

    ``replay_cache_size`` bounds the pairs remembered at once; ``per_key_limit`` (default
    ``max(1, replay_cache_size // 10)``) bounds those of one key thumbprint, so
    that a key flooding the cache with fresh proofs is refused (``replay-quota``) before it
    can fill it and lock out every other key."""

    def __init__(
        self,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        replay_cache_size: int = DEFAULT_REPLAY_CACHE_SIZE,
        per_key_limit: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not max_age > 0 or replay_cache_size < 1:
            raise ValueError("max_age and replay_cache_size must be positive")
        if per_key_limit is None:
            per_key_limit = max(1, replay_cache_size // _PER_KEY_SHARE)
        if per_key_limit < 1:
            raise ValueError("per_key_limit must be positive")
        self.max_age = max_age
        self.replay_cache_size = replay_cache_size
        self.per_key_limit = per_key_limit
        self.clock = clock
        self._lock = threading.Lock()
        # (thumbprint, jti) -> the time after which the proof's iat is out of the window,
        # and a heap of the same by that time, to let expired pairs go in order.
        self._seen: dict[tuple[str, str], float] = {}
        self._expiries: list[tuple[float, tuple[str, str]]] = []
        # thumbprint -> how many of its pairs are in _seen (no entry for none), kept in
        # step with _seen so the quota costs O(1) per check.
        self._per_key: dict[str, int] = {}

    @property
    def replay_cache_entries(self) -> int:
        """How many accepted proofs are remembered now (expired ones go on the next check)."""
        with self._lock:
            return len(self._seen)

    def check(
        self,
        proof: Proof,
        *,
        access_token: str | None = None,
        key_thumbprint: str | None = None,
        before_spending: Callable[[], object] | None = None,
    ) -> str:
        """The RFC 7638 thumbprint of the proof's key, or :class:`InvalidProof`.

        ``access_token`` given: ``ath`` must be its hash (validation); None (sign-in,
        refresh): ``ath`` is not checked. ``key_thumbprint`` given: the proof's key must
        have it. The proof's (thumbprint, jti) is recorded only when every other check passed,
        and after ``before_spending``, if given, returned: what it raises goes to the
        caller and the proof stays unspent (a verifier refuses a revoked token there, so a
        signed-out device's calls do not use up its key's quota)."""
        if type(proof.proof) is not str or len(proof.proof) > MAX_PROOF_BYTES:
            raise InvalidProof("size")
        try:
            segments = jws.split_compact(proof.proof)
            header = jws.json_object(segments.header_json)
            claims = jws.json_object(segments.payload_json)
        except jws.MalformedJWS:
            raise InvalidProof("form") from None
        if "crit" in header:
            raise InvalidProof("form")
        if header.get("typ") != PROOF_TYPE:
            raise InvalidProof("typ")
        algorithm = header.get("alg")
        if type(algorithm) is not str or algorithm not in PROOF_ALGORITHMS:
            raise InvalidProof("alg")
        try:
            key = read_proof_key(algorithm, header.get("jwk"))
        except BadKey:
            raise InvalidProof("jwk") from None
        if not _signed_by(key.key, segments):
            raise InvalidProof("signature")
        now = self.clock()
        jti = _check_claims(claims, proof, now, self.max_age, access_token)
        thumbprint = key.thumbprint
        if key_thumbprint is not None and not secrets.compare_digest(
            thumbprint.encode(), key_thumbprint.encode("utf-8", "replace")
        ):
            raise InvalidProof("key")
        if before_spending is not None:
            before_spending()
        self._remember((thumbprint, jti), claims["iat"] + self.max_age, now)
        return thumbprint

    def _remember(self, pair: tuple[str, str], expires: float, now: float) -> None:
        with self._lock:
            seen, expiries, per_key = self._seen, self._expiries, self._per_key
            while expiries and expiries[0][0] < now:
                _, old = heapq.heappop(expiries)
                if seen.get(old, now) < now:
                    del seen[old]
                    left = per_key[old[0]] - 1
                    if left:
                        per_key[old[0]] = left
                    else:
                        del per_key[old[0]]
            if pair in seen:
                raise InvalidProof("replayed")
            # Full of pairs still in the window: forgetting one early would let its proof
            # be replayed, so refuse new proofs until some expire.
            if len(seen) >= self.replay_cache_size:
                raise InvalidProof("replay-cache-full")
            # A key at its quota is refused on its own account, before it can take the
            # whole cache from the other keys.
            held = per_key.get(pair[0], 0)
            if held >= self.per_key_limit:
                raise InvalidProof("replay-quota")
            seen[pair] = expires
            per_key[pair[0]] = held + 1
            heapq.heappush(expiries, (expires, pair))


def _signed_by(key: Any, segments: jws.CompactJWS) -> bool:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return jws.verify_eddsa(key, segments.signing_input, segments.signature)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return jws.verify_es256(key, segments.signing_input, segments.signature, low_s_only=False)
    return jws.verify_rs256(key, segments.signing_input, segments.signature)


def _check_claims(claims: dict[str, Any], proof: Proof, now: float, max_age: float, access_token: str | None) -> str:
    """Steps 7 to 11; the jti."""
    jti = claims.get("jti")
    if type(jti) is not str or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise InvalidProof("jti")
    if type(claims.get("htm")) is not str or claims["htm"] != proof.http_method:
        raise InvalidProof("htm")
    htu = claims.get("htu")
    try:
        if type(htu) is not str or normalize_uri(htu) != normalize_uri(proof.http_uri):
            raise InvalidProof("htu")
    except (ValueError, TypeError):
        raise InvalidProof("htu") from None
    iat = claims.get("iat")
    # isinstance lets a bool through (True is an int to Python), but not a time.
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not now - max_age <= iat <= now + max_age:
        raise InvalidProof("iat")
    if access_token is not None:
        ath = claims.get("ath")
        expected = _ath(access_token).encode()
        if type(ath) is not str or not secrets.compare_digest(ath.encode("utf-8", "replace"), expected):
            raise InvalidProof("ath")
    return jti


# --- the device side -------------------------------------------------------------------

_DEVICE_ALGORITHMS = ("EdDSA", "ES256")


class DeviceKey:
    """A device's proof key (Ed25519 or P-256) and the proofs it signs. Keep its PEM in the
    platform's keystore; the public half travels in every proof's ``jwk`` header."""

    __slots__ = ("_private_key", "algorithm", "public_jwk", "thumbprint")

    def __init__(self, private_key: PrivateKey) -> None:
        if isinstance(private_key, ed25519.Ed25519PrivateKey):
            self.algorithm = "EdDSA"
        elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
            self.algorithm = "ES256"
        else:
            raise ValueError("a device key is an Ed25519 or P-256 private key")
        self._private_key = private_key
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.public_jwk: dict[str, str] = {name: jwk[name] for name in ("kty", "crv", "x", "y") if name in jwk}
        self.thumbprint = jwk_thumbprint(self.public_jwk)

    @classmethod
    def generate(cls, algorithm: str = "EdDSA") -> DeviceKey:
        """A new key: ``EdDSA`` (Ed25519, the default) or ``ES256`` (P-256)."""
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"a device key is one of {_DEVICE_ALGORITHMS}")

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> DeviceKey:
        """The key of a PEM private key (PKCS#8 as :meth:`to_pem` writes, encrypted when a
        password is given); ValueError for another kind of key or a wrong password."""
        try:
            private_key = serialization.load_pem_private_key(pem, password=password)
        except TypeError as error:  # a password for an unencrypted key, or none for an encrypted one
            raise ValueError("the key's encryption does not match the password given") from error
        if not isinstance(private_key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError("a device key is an Ed25519 or P-256 private key")
        return cls(private_key)

    def to_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted with ``password`` when one is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption() if password is None else serialization.BestAvailableEncryption(password)
        )
        pkcs8 = serialization.PrivateFormat.PKCS8
        return self._private_key.private_bytes(serialization.Encoding.PEM, pkcs8, encryption)

    def proof(
        self,
        method: str,
        uri: str,
        *,
        access_token: str | None = None,
        now: float | None = None,
        jti: str | None = None,
    ) -> str:
        """A fresh proof for a request: ``htu`` is ``uri`` normalised (so without query and
        fragment), ``ath`` the hash of ``access_token`` when given, ``iat`` now (whole
        seconds), ``jti`` random unless given."""
        claims: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": method,
            "htu": normalize_uri(uri),
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = _ath(access_token)
        headers = {"typ": PROOF_TYPE, "jwk": self.public_jwk}
        return jwt.encode(claims, self._private_key, algorithm=self.algorithm, headers=headers)

    def proof_for(self, method: str, uri: str, *, access_token: str | None = None) -> Proof:
        """A fresh proof for a request, with the request, as a verifier takes it."""
        return Proof(self.proof(method, uri, access_token=access_token), method, uri)

    def __repr__(self) -> str:
        return f"DeviceKey({self.algorithm}, thumbprint={self.thumbprint!r})"
