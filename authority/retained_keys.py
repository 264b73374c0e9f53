"""What becomes of a signing key after its last token expired: the purge deletes it, and
keeps its public half, for logout only, as long as a session that used it can live.

A key is purged once no access token it signed can still validate (its successor began
signing more than ``max_access_token_ttl`` + leeway ago). But a session lives up to
``refresh_token_ttl``, and a device idle all that while holds an expired access token
signed by that key, which may be all it has to log out with. Logout checks only the
signature, never needs the private key: so the public half stays, in
``retained_public_keys``, until every session that can hold such a token has ended (the
successor's activation + ``refresh_token_ttl`` + leeway).

Retained keys verify logout requests only: :class:`~authority.keys.KeyRing` keeps them
apart, never in its JWK Set, and :class:`~authority.tokens.TokenCodec` gives them to
``identify`` alone, never to ``verify``. A key deleted at once because it was compromised
(``authority keys retire``) is not retained: its signatures prove nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authority.config import Algorithm
from authority.keys import RetainedKey, load_key, replaced_keys
from authority.store import RetainedKeyRecord, Store

log = logging.getLogger(__name__)


def load_retained(records: Iterable[RetainedKeyRecord]) -> list[RetainedKey]:
    """The retained keys as stored; a row that is not a public key of its algorithm is left out."""
    keys = []
    for record in records:
        public_key = serialization.load_pem_public_key(record.public_key)
        if not isinstance(public_key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            log.error("retained key %s is not an Ed25519, EC or RSA public key and is left out", record.kid)
            continue
        keys.append(RetainedKey(record.kid, Algorithm(record.algorithm), public_key, record.replaced_at))
    return keys


async def purge_keys(
    store: Store, now: float, verify_for: float, retain_for: float, kek: bytes | None = None
) -> list[str]:
    """Deletes keys no token can still need, keeping their public halves for logout, and
    forgets retained halves no session can still need (replaced more than
    ``retain_for`` ago). Returns the kids deleted from the signing keys."""
    async with store.transaction() as tx:
        await tx.lock_keys()
        replaced = replaced_keys(await tx.keys(), now, verify_for)
        retained = []
        for record, replaced_at in replaced:
            if replaced_at + retain_for < now:
                continue  # no session that used it is still alive: nothing to keep
            try:
                public_key = load_key(record, kek).public_key
            except Exception:  # sealed under another key-encryption key: logout by it is lost
                log.warning("signing key %s cannot be opened to keep its public half for logout", record.kid)
                continue
            pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            retained.append(RetainedKeyRecord(record.kid, record.algorithm, pem, replaced_at))
        kids = [record.kid for record, _ in replaced]
        if kids:
            await tx.retain_keys(retained)
            await tx.delete_keys(kids)
        forgotten = [key.kid for key in await tx.retained_keys() if key.replaced_at + retain_for < now]
        if forgotten:
            await tx.forget_retained_keys(forgotten)
    for kid in kids:
        log.info("deleted retired signing key %s (its public half is kept for logout)", kid)
    for kid in forgotten:
        log.info("forgot the public half of signing key %s: no session that used it is alive", kid)
    return kids
