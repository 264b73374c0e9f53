"""Signing keys: generate them, keep them in the store, publish them as a JWK Set.

A key's ``kid`` is its RFC 7638 thumbprint, so the same key has the same id on every
replica and a consumer can check that a published key is the one it names. A key
carries its algorithm: verification takes the algorithm from the key, never from a
token's header.

Rotation publishes ahead: a new key is stored with an activation time in the future,
so every replica and consumer learns it (it is in the JWK Set at once) before the
first token it signs exists. The key it replaces keeps verifying until every token it
signed has expired; then the purge deletes it.

Private keys are stored sealed when a key-encryption key (KEK) is configured: AES-256-GCM
under the KEK with a random nonce and the kid as associated data, behind a version
prefix, in the same column that holds plain PEM otherwise. Keys stored in plaintext
before a KEK was configured keep loading.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authority.config import Algorithm
from authority.errors import ConfigError, InvalidArgument
from authority.store import KeyRecord, Store

log = logging.getLogger(__name__)

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]

# Members of each key type that RFC 7638 hashes into the thumbprint.
_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """One key pair; ``private_key`` is kept only in the process, never published."""

    kid: str
    algorithm: Algorithm
    private_key: PrivateKey
    created_at: float
    # When it starts signing; until then it is only published.
    activates_at: float
    # The half that verifies, safe to publish; derived once, as verification is the hot path.
    public_key: PublicKey = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", self.private_key.public_key())

    def public_jwk(self) -> dict[str, Any]:
        """The public key as an RFC 7517 JWK with ``kid``, ``alg`` and ``use``."""
        jwk = _public_jwk(self.public_key)
        return {**jwk, "kid": self.kid, "alg": self.algorithm.value, "use": "sig"}

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM, for the store only."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm.value})"


@dataclasses.dataclass(frozen=True)
class RetainedKey:
    """The public half of a purged signing key: it verifies logout requests only (see
    :mod:`authority.retained_keys`), never a token's validity, and is never published."""

    kid: str
    algorithm: Algorithm
    public_key: PublicKey
    # When its successor began signing: every token it signed is older.
    replaced_at: float


def _public_jwk(public_key: PublicKey) -> dict[str, Any]:
    jwk: dict[str, Any]
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return {name: value for name, value in jwk.items() if name not in ("key_ops", "alg", "kid")}


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def activation_time(now: float, publish_ahead: float) -> float:
    """When a key stored at ``now`` starts signing: a whole second, as token times are, and
    at least ``publish_ahead`` later (at once when it is 0)."""
    return float(math.ceil(now + publish_ahead) if publish_ahead > 0 else math.floor(now))


def generate_key(algorithm: Algorithm, now: float, activates_at: float | None = None) -> SigningKey:
    """A fresh key pair for ``algorithm`` that signs from ``activates_at`` (default: now)."""
    private_key: PrivateKey
    if algorithm is Algorithm.EDDSA:
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm is Algorithm.ES256:
        private_key = ec.generate_private_key(ec.SECP256R1())
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = thumbprint(_public_jwk(private_key.public_key()))
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=private_key,
        created_at=now,
        activates_at=activation_time(now, 0) if activates_at is None else activates_at,
    )


def load_key(record: KeyRecord, kek: bytes | None = None) -> SigningKey:
    """A key as the store keeps it (opened with ``kek`` when it is stored sealed)."""
    pem = open_private_key(record.private_key, record.kid, kek)
    private_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private_key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"key {record.kid} is not an Ed25519, EC or RSA key")
    return SigningKey(
        kid=record.kid,
        algorithm=Algorithm(record.algorithm),
        private_key=private_key,
        created_at=record.created_at,
        activates_at=record.activates_at,
    )


def _record(key: SigningKey, kek: bytes | None) -> KeyRecord:
    return KeyRecord(key.kid, key.algorithm.value, stored_private_key(key, kek), key.created_at, key.activates_at)


def _age_order(key: SigningKey | KeyRecord) -> tuple[float, float, str]:
    # Activation first; a key made later in the same second is the newer one.
    return (key.activates_at, key.created_at, key.kid)


class KeyRing:
    """The keys this process verifies with (every stored key, published or retiring), and
    the one it signs with at a given time: the newest active key of the configured algorithm."""

    def __init__(
        self, keys: Iterable[SigningKey], signing_algorithm: Algorithm, retained: Iterable[RetainedKey] = (),
        *, version: int = 0,
    ) -> None:
        ordered = sorted(keys, key=_age_order)
        self._signing = [key for key in ordered if key.algorithm is signing_algorithm]
        if not self._signing:
            raise ValueError(f"a key ring needs a {signing_algorithm.value} key to sign with")
        self.signing_algorithm = signing_algorithm
        self._by_kid = {key.kid: key for key in ordered}
        self.kids = frozenset(self._by_kid)
        self.jwks_json = json.dumps({"keys": [key.public_jwk() for key in ordered]}, separators=(",", ":"))
        # The stored set's version these keys were read at (migration 0011), published with
        # jwks_json so that consumers can tell a newer set from an older one; 0: unknown.
        self.version = version
        # Kept for logout only: not in kids, jwks_json or get(), so nothing verifies with them
        # but TokenCodec.identify. A kid both stored and retained (a race with the purge) is
        # a stored key.
        self.retained = tuple(key for key in retained if key.kid not in self._by_kid)
        self.retained_kids = frozenset(key.kid for key in self.retained)

    def signing_key_at(self, now: float) -> SigningKey:
        """The key that signs at ``now``: the newest already active (the oldest if none is)."""
        for key in reversed(self._signing):
            if key.activates_at <= now:
                return key
        return self._signing[0]

    def get(self, kid: str) -> SigningKey | None:
        """The key named ``kid``, or None when this authority has no such key."""
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self._by_kid.values())


# A sealed key starts with this; PEM starts with "-----", so the two never mix up.
_SEALED_V1 = b"authority-kek-v1:"
_NONCE_BYTES = 12


def is_sealed(stored: bytes) -> bool:
    """Whether a stored private key is encrypted under a KEK."""
    return stored.startswith(_SEALED_V1)


def seal_private_key(pem: bytes, kid: str, kek: bytes) -> bytes:
    """The stored form of a private key under ``kek``: prefix, nonce, AES-256-GCM ciphertext.

    The kid is the associated data, so a sealed key copied into another key's row does
    not open. A random 96-bit nonce is safe here: a KEK seals a handful of keys, far
    from the 2**32 messages after which random nonces risk repeating.
    """
    nonce = os.urandom(_NONCE_BYTES)
    return _SEALED_V1 + nonce + AESGCM(kek).encrypt(nonce, pem, kid.encode())


def open_private_key(stored: bytes, kid: str, kek: bytes | None) -> bytes:
    """The PEM of a stored private key: opened with ``kek`` when sealed, as is when not.

    Raises ConfigError when the key is sealed and ``kek`` is missing or not the one that
    sealed it, so a server with the wrong KEK stops at start with a clear line.
    """
    if not is_sealed(stored):
        return stored
    if kek is None:
        raise ConfigError("key_encryption_key", f"signing key {kid} is stored encrypted: configure the "
                          "key-encryption key (AUTHORITY_KEY_ENCRYPTION_KEY or AUTHORITY_KEY_ENCRYPTION_KEY_FILE)")
    body = stored[len(_SEALED_V1):]
    try:
        return AESGCM(kek).decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:], kid.encode())
    except (InvalidTag, ValueError):
        raise ConfigError("key_encryption_key", f"does not open signing key {kid}: it is not the "
                          "key-encryption key the signing keys were stored with") from None


def stored_private_key(key: SigningKey, kek: bytes | None) -> bytes:
    """What the store keeps for ``key``: sealed under ``kek``, or PEM when there is none."""
    pem = key.private_pem()
    return pem if kek is None else seal_private_key(pem, key.kid, kek)


def check_key_protection(store: Store, kek: bytes | None, allow_plaintext: bool) -> None:
    """Refuses plaintext keys on PostgreSQL unless allowed; warns whenever they are used.

    A PostgreSQL database is shared, backed up and replicated, so its rows travel
    further than the server; the embedded SQLite file of a newcomer does not.
    """
    if kek is not None:
        return
    if store.is_postgres and not allow_plaintext:
        raise ConfigError("key_encryption_key", "on PostgreSQL, private signing keys are stored encrypted: "
                          "configure AUTHORITY_KEY_ENCRYPTION_KEY or AUTHORITY_KEY_ENCRYPTION_KEY_FILE, or set "
                          "allow_plaintext_keys (--allow-plaintext-keys) to store them in plaintext")
    log.warning("private signing keys are stored unencrypted: configure AUTHORITY_KEY_ENCRYPTION_KEY")


async def load_keyring(
    store: Store, algorithm: Algorithm, now: float, kek: bytes | None = None, *, allow_plaintext: bool = False
) -> KeyRing:
    """The stored keys, with a new one of the configured algorithm if there is none yet.

    With ``kek`` a new key is stored sealed and sealed keys are opened; without it, on
    PostgreSQL, ``allow_plaintext`` must say that keys may be stored in plaintext.
    :meth:`Authority.open <authority.app.Authority.open>` checks that before it touches
    the database; the check is repeated here (silently) for any other caller.
    """
    if kek is None and store.is_postgres and not allow_plaintext:
        check_key_protection(store, kek, allow_plaintext)
    version, records = await store.versioned_keys()
    if not any(r.algorithm == algorithm.value for r in records):
        async with store.transaction() as tx:
            await tx.lock_keys()  # replicas starting together create one key, not several
            version, records = await tx.versioned_keys()
            if not any(r.algorithm == algorithm.value for r in records):
                key = generate_key(algorithm, now)
                await tx.insert_key(_record(key, kek))
                log.info("generated signing key %s (%s)", key.kid, key.algorithm.value)
                version, records = await tx.versioned_keys()
    if kek is not None:
        for record in records:
            if not is_sealed(record.private_key):
                log.warning("signing key %s is stored unencrypted (it predates the key-encryption key): "
                            "rotate it out, see SECURITY.md", record.kid)
    return KeyRing([load_key(r, kek) for r in records], algorithm, version=version)


async def rotate_key(
    store: Store, algorithm: Algorithm, now: float, publish_ahead: float, kek: bytes | None = None
) -> SigningKey:
    """Stores a new key that is published at once and signs from ``now + publish_ahead``."""
    key = generate_key(algorithm, now, activates_at=activation_time(now, publish_ahead))
    async with store.transaction() as tx:
        await tx.lock_keys()
        for record in await tx.keys():
            # The key given must open the keys there (ConfigError if not): a key sealed
            # under another, or stored in plaintext beside sealed ones, would stop the
            # next start and be left out by the running servers.
            open_private_key(record.private_key, record.kid, kek)
        await tx.insert_key(_record(key, kek))
    log.info("rotated: new signing key %s (%s) signs in %.0f s", key.kid, algorithm.value, publish_ahead)
    return key


async def rotate_if_due(
    store: Store, algorithm: Algorithm, now: float, interval: float, publish_ahead: float, kek: bytes | None = None
) -> SigningKey | None:
    """Rotates when the newest key of ``algorithm`` will have signed for ``interval`` by the
    time a key stored now activates; returns the new key, if any."""
    async with store.transaction() as tx:
        await tx.lock_keys()
        newest = max((r.activates_at for r in await tx.keys() if r.algorithm == algorithm.value), default=None)
        if newest is not None and newest + interval > now + publish_ahead:
            return None
        key = generate_key(algorithm, now, activates_at=activation_time(now, publish_ahead))
        await tx.insert_key(_record(key, kek))
    log.info("scheduled rotation: new signing key %s signs in %.0f s", key.kid, publish_ahead)
    return key


async def retire_key(store: Store, kid: str, now: float) -> None:
    """Deletes a key at once, so that every token it signed stops validating everywhere
    (for a compromised key). Refused for a key that is the only active one of its
    algorithm: rotate first, with no publish-ahead if need be."""
    async with store.transaction() as tx:
        await tx.lock_keys()
        records = await tx.keys()
        target = next((r for r in records if r.kid == kid), None)
        if target is None:
            raise InvalidArgument("kid", "names no stored signing key")
        others = [r for r in records if r.algorithm == target.algorithm and r.kid != kid and r.activates_at <= now]
        if not others:
            raise InvalidArgument("kid", "is the only active key of its algorithm: rotate first (--publish-ahead 0s)")
        await tx.delete_keys([kid])
    log.warning("retired signing key %s at once: tokens it signed no longer validate", kid)


@dataclasses.dataclass(frozen=True)
class KeyStatus:
    """Where one stored key is in its life, for ``authority keys list``."""

    kid: str
    algorithm: str
    # published (not signing yet), signing, verifying (replaced; its tokens still live),
    # or idle (of an algorithm the authority does not sign with now).
    state: str
    created_at: float
    activates_at: float
    # When the purge may delete it: its last token has expired; None while it signs.
    deletable_after: float | None


def key_statuses(
    records: Iterable[KeyRecord], signing_algorithm: Algorithm, now: float, verify_for: float
) -> list[KeyStatus]:
    """The life stage of every stored key, oldest activation first."""
    ordered = sorted(records, key=_age_order)
    statuses = []
    for index, record in enumerate(ordered):
        successors = [r for r in ordered[index + 1 :] if r.algorithm == record.algorithm]
        active_successors = [r for r in successors if r.activates_at <= now]
        deletable_after = successors[0].activates_at + verify_for if successors else None
        if record.activates_at > now:
            state = "published"
        elif active_successors:
            state = "verifying"
        elif record.algorithm == signing_algorithm.value:
            state = "signing"
        else:
            state = "idle"
        statuses.append(
            KeyStatus(record.kid, record.algorithm, state, record.created_at, record.activates_at, deletable_after)
        )
    return statuses


def replaced_keys(keys: Iterable[KeyRecord], now: float, verify_for: float) -> list[tuple[KeyRecord, float]]:
    """Keys no token can still need, each with the activation of the key that replaced it:
    replaced by a newer active key of their algorithm longer than ``verify_for`` (the
    longest access-token lifetime plus leeway) ago."""
    by_algorithm: dict[str, list[KeyRecord]] = {}
    for key in sorted(keys, key=_age_order):
        by_algorithm.setdefault(key.algorithm, []).append(key)
    replaced = []
    for ordered in by_algorithm.values():
        for key, successor in zip(ordered, ordered[1:]):
            if successor.activates_at + verify_for < now:
                replaced.append((key, successor.activates_at))
    return replaced


def retired_keys(keys: Iterable[KeyRecord], now: float, verify_for: float) -> list[KeyRecord]:
    """The keys of :func:`replaced_keys`: the purge deletes them."""
    return [key for key, _ in replaced_keys(keys, now, verify_for)]
