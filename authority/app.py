"""One authority process, wired together: store, keys, revocation mirror, sessions, purge.

:meth:`Authority.open` prepares everything a server needs before it takes its first
call: the schema is checked (an empty database is migrated), a signing key exists, and
the mirror holds every live revocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from authority.config import Settings
from authority.errors import StoreUnavailable
from authority.keys import KeyRing, load_keyring
from authority.revocations import RevocationMirror
from authority.sessions import Sessions
from authority.store import Store
from authority.store.migrate import prepare_schema
from authority.tokens import TokenCodec
from authority.validation import Validator

log = logging.getLogger(__name__)


class Authority:
    """The domain objects of one process and the background work that keeps them tidy."""

    def __init__(
        self, settings: Settings, store: Store, keyring: KeyRing, mirror: RevocationMirror, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.store = store
        self.mirror = mirror
        self.codec = TokenCodec(keyring, settings.issuer, settings.leeway)
        self.sessions = Sessions(store, self.codec, mirror, settings, clock)
        self.validator = Validator(self.codec, mirror, settings.default_audience)
        self._clock = clock
        self._purge_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Authority:
        """Connects, prepares the schema and keys, and loads the live revocations."""
        store = Store.open(settings.database_url)
        try:
            migrated_from = await prepare_schema(store, upgrade=False)
            if migrated_from:
                log.info("created the database schema")
            keyring = await load_keyring(
                store, settings.signing_algorithm, clock(), settings.key_encryption_key_bytes(),
                allow_plaintext=settings.allow_plaintext_keys,
            )
            mirror = RevocationMirror()
            async for batch in store.live_revocations(clock() - settings.leeway):
                mirror.apply(batch)
        except BaseException:
            await store.close()
            raise
        log.info("loaded %d live revocations", len(mirror))
        return cls(settings, store, keyring, mirror, clock)

    def start(self) -> None:
        """Starts the background purge."""
        if self._purge_task is None:
            self._purge_task = asyncio.create_task(self._purge_forever(), name="purge")

    async def close(self) -> None:
        """Stops the background work and closes the store."""
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task
            self._purge_task = None
        await self.store.close()

    async def purge(self) -> tuple[int, int]:
        """Drops expired revocations (store and mirror) and ended sessions, in batches.

        Returns how many revocations and sessions the store dropped.
        """
        now = self._clock()
        cutoff = now - self.settings.leeway
        idle_cutoff = self.settings.idle_cutoff(now)
        batch = self.settings.purge_batch_size
        self.mirror.purge(cutoff)
        revocations = sessions = 0
        while (dropped := await self.store.purge_revocations(cutoff, batch)) > 0:
            revocations += dropped
        while (dropped := await self.store.purge_sessions(cutoff, idle_cutoff, batch)) > 0:
            sessions += dropped
        return revocations, sessions

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            try:
                revocations, sessions = await self.purge()
                if revocations or sessions:
                    log.info("purged %d expired revocations and %d ended sessions", revocations, sessions)
            except StoreUnavailable:
                log.warning("purge skipped: the database is unavailable")
            except Exception:
                log.exception("purge failed")
