"""The queries over signing keys, and the public halves kept of purged ones, inside a unit of work.

Every change tells the other replicas (at commit, on :data:`authority.store.coordination.KEYS_CHANNEL`),
so that each reloads its keys. Which key signs, and when one is purged, :mod:`authority.keys` decides.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from authority.store.coordination import KEYS_CHANNEL
from authority.store.records import KeyRecord, RetainedKeyRecord
from authority.store.schema import retained_public_keys, signing_keys
from authority.store.unit_of_work import UnitOfWork


class KeyQueries(UnitOfWork):
    """A unit of work's queries over signing keys and retained public keys (part of :class:`authority.store.Tx`)."""

    async def keys(self) -> list[KeyRecord]:
        """Every stored signing key."""
        rows = await self.conn.execute(sa.select(signing_keys))
        return [KeyRecord(r.kid, r.algorithm, r.private_key, r.created_at, r.activates_at) for r in rows]

    async def insert_key(self, key: KeyRecord) -> None:
        """Stores a new signing key and tells every replica (at commit)."""
        await self.conn.execute(
            sa.insert(signing_keys).values(
                kid=key.kid,
                algorithm=key.algorithm,
                private_key=key.private_key,
                created_at=key.created_at,
                activates_at=key.activates_at,
            )
        )
        await self._notify(KEYS_CHANNEL)

    async def delete_keys(self, kids: Sequence[str]) -> None:
        """Deletes signing keys and tells every replica (at commit)."""
        await self.conn.execute(sa.delete(signing_keys).where(signing_keys.c.kid.in_(kids)))
        await self._notify(KEYS_CHANNEL)

    # --- public halves of purged keys, for logout (authority/keys.py) ------------------

    async def retained_keys(self) -> list[RetainedKeyRecord]:
        """Every retained public key."""
        rows = await self.conn.execute(sa.select(retained_public_keys))
        return [RetainedKeyRecord(r.kid, r.algorithm, r.public_key, r.replaced_at) for r in rows]

    async def retain_keys(self, keys: Sequence[RetainedKeyRecord]) -> None:
        """Keeps the public halves of keys about to be deleted (tells replicas at commit)."""
        for key in keys:
            await self.conn.execute(
                sa.insert(retained_public_keys).values(
                    kid=key.kid, algorithm=key.algorithm, public_key=key.public_key, replaced_at=key.replaced_at
                )
            )
        await self._notify(KEYS_CHANNEL)

    async def forget_retained_keys(self, kids: Sequence[str]) -> None:
        """Deletes retained public keys no session can need (tells replicas at commit)."""
        await self.conn.execute(sa.delete(retained_public_keys).where(retained_public_keys.c.kid.in_(kids)))
        await self._notify(KEYS_CHANNEL)
