"""The queries over signing keys, and the public halves kept of purged ones, inside a unit of work.

Every change tells the other replicas (at commit, on :data:`authority.store.coordination.KEYS_CHANNEL`),
so that each reloads its keys. Which key signs, and when one is purged, :mod:`authority.keys` decides.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from authority.store.coordination import KEYS_CHANNEL
from authority.store.records import KeyRecord, RetainedKeyRecord
from authority.store.schema import key_set_version, retained_public_keys, signing_keys
from authority.store.unit_of_work import UnitOfWork

_VERSION = sa.select(key_set_version.c.version).where(key_set_version.c.id == 1).scalar_subquery()


class KeyQueries(UnitOfWork):
    """A unit of work's queries over signing keys and retained public keys (part of :class:`authority.store.Tx`)."""

    async def keys(self) -> list[KeyRecord]:
        """Every stored signing key."""
        return (await self.versioned_keys())[1]

    async def versioned_keys(self) -> tuple[int, list[KeyRecord]]:
        """The set's version (0 when no key is stored) and every stored signing key, from
        one statement, so from one snapshot even outside a transaction's own (migration 0011)."""
        query = sa.select(signing_keys, _VERSION.label("set_version"))
        rows = (await self.conn.execute(query)).all()
        keys = [KeyRecord(r.kid, r.algorithm, r.private_key, r.created_at, r.activates_at) for r in rows]
        return (int(rows[0].set_version) if rows else 0), keys

    async def versioned_key_ids(self) -> tuple[int, frozenset[str]]:
        """The set's version and the kids of the stored keys: a cheap way to notice a change."""
        rows = (await self.conn.execute(sa.select(signing_keys.c.kid, _VERSION.label("set_version")))).all()
        return (int(rows[0].set_version) if rows else 0), frozenset(r.kid for r in rows)

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
