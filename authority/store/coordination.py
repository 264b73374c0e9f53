"""How replicas coordinate through the database: advisory locks and NOTIFY channels.

The lock ids and channel names here are shared by every replica (and by the sign-in
functions of migrations 0007 to 0010, which notify :data:`REVOCATIONS_CHANNEL` themselves
when asked); a
:class:`Listening` is what :meth:`authority.store.Store.notifications` yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from authority.store.unavailable import RAW_UNAVAILABLE

# A ping of SELECT 1 that fails in any of these ways means the connection is lost; an
# asyncpg InternalClientError there can only be its protocol stuck (see authority/store/unavailable.py).
_PING_FAILED: tuple[type[BaseException], ...] = (*RAW_UNAVAILABLE, TimeoutError, asyncpg.InternalClientError)
_PING_SECONDS = 5.0
KEYS_LOCK = 0x61757468_6B657973  # advisory lock ids: "auth" "keys"
MIGRATIONS_LOCK = 0x61757468_6D696772  # "auth" "migr"
MAINTENANCE_LOCK = 0x61757468_6D61696E  # "auth" "main"
# PostgreSQL NOTIFY channels: an entry committed to a log (revocations or session events:
# followers read both), the signing keys changed.
REVOCATIONS_CHANNEL = "authority_revocations"
KEYS_CHANNEL = "authority_keys"


def subject_lock_id(subject: str) -> int:
    """The PostgreSQL advisory lock that serialises writers to ``subject``."""
    digest = hashlib.blake2b(subject.encode(), digest_size=8, person=b"subject").digest()
    return int.from_bytes(digest, "big", signed=True)


class Listening:
    """A connection that listens for notifications (none on SQLite)."""

    def __init__(self, driver: Any, lost: asyncio.Event) -> None:
        self._driver = driver
        self._lost = lost

    async def alive(self, within: float) -> bool:
        """Waits up to ``within`` seconds; False once the connection is known lost. A
        connection cut without a reset says nothing, so it is asked to answer a ping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), within)
        if self._lost.is_set():
            return False
        if self._driver is None:
            return True
        try:
            await asyncio.wait_for(self._driver.fetchval("SELECT 1"), _PING_SECONDS)
        except _PING_FAILED:
            return False
        return True

