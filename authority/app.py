"""One authority process, wired together: store, keys, revocation mirror and its follower,
sessions, and the maintenance that keeps the store small.

:meth:`Authority.open` prepares everything a server needs before it takes its first
call: the schema is checked (an empty database is migrated), a signing key exists, and
the mirror holds every live revocation. :meth:`Authority.start` starts the background
work: the follower that keeps the mirror and the keys current with what other replicas
commit, and the maintenance (purge, key retirement, scheduled rotation) that one
replica at a time runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator

from authority.binding import Binding, proof_checker
from authority.config import Settings
from authority.errors import StoreUnavailable
from authority.keys import KeyRing, check_key_protection, load_key, load_keyring, rotate_if_due, rotate_key
from authority.retained_keys import load_retained, purge_keys
from authority.revocations import LogFollower, RevocationMirror
from authority.session_events import SessionEventFeed
from authority.sessions import Sessions
from authority.explanations import Explanations
from authority.store import Store
from authority.store.events import purge_events
from authority.store.log_notifier import LogNotifier
from authority.store.migrate import prepare_schema
from authority.store.store import MAINTENANCE_LOCK
from authority.tokens import TokenCodec
from authority.validation import Validator

log = logging.getLogger(__name__)

# How long a stop waits for the background work to reach a safe point before cancelling it.
STOP_BACKGROUND_SECONDS = 5.0


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the block runs, then as it was.

    For the start-up load: its batches of rows (and the strings the mirror keeps of them)
    are objects the collector tracks, none in a reference cycle, and each batch made it run
    full collections over the whole heap again and again. With 1,000,000 live revocations
    that was 0.6 to 0.9 s of a 5.0 to 5.7 s start-up on this project's machine, measured;
    paused, nothing is collected that could have been, and the process's own garbage of
    those seconds waits for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()



class Authority:
    """The domain objects of one process and the background work that keeps them tidy."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keyring: KeyRing,
        mirror: RevocationMirror,
        clock: Callable[[], float],
        kek: bytes | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.mirror = mirror
        # One proof checker, so one replay cache, for validation, sign-in and refresh: a
        # proof's jti is used once in this process, whichever of them saw it first.
        self.proofs = proof_checker(settings, clock)
        self.codec = TokenCodec(keyring, settings.issuer, settings.leeway, proofs=self.proofs)
        self.sessions = Sessions(store, self.codec, mirror, settings, clock, Binding(self.proofs, settings))
        self.validator = Validator(self.codec, mirror, settings.default_audience, settings.max_staleness)
        # The follower reads on connections of its own: however many consumers read
        # snapshots, and however busy sign-ins are, this process's view stays current.
        self._follower_store = store.dedicated()
        self.session_events = SessionEventFeed(store, self._follower_store, lambda: mirror.epoch)
        self.follower = LogFollower(
            self._follower_store, mirror, settings.revocation_poll_interval, self.refresh_keys,
            also=self.session_events.catch_up, min_read_interval=settings.revocation_min_read_interval,
        )
        self.explanations = Explanations(store, settings.explanation_wait)
        # Sign-ins notify the other replicas through it, after they commit (PostgreSQL).
        self.notifier = LogNotifier(store, settings.revocation_min_read_interval) if store.is_postgres else None
        # A feed heartbeats only while the follower's last reads succeeded.
        self.heartbeat_freshness = min(settings.max_staleness, 2 * settings.revocation_poll_interval)
        self.clock = clock
        # The key-encryption key, read once: new and rotated keys are stored sealed with it.
        self._kek = kek
        # Stored keys this process could not open, so that each is reported once.
        self._unopenable: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @classmethod
    async def open(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Authority:
        """Connects, prepares the schema and keys, and loads the live revocations."""
        store = Store.open(
            settings.database_url,
            listen_url=settings.listen_database_url,
            transaction_pooling=settings.database_transaction_pooling,
        )
        try:
            kek = settings.key_encryption_key_bytes()
            # Before the schema: an authority that refuses to start leaves the database untouched.
            check_key_protection(store, kek, settings.allow_plaintext_keys)
            migrated_from = await prepare_schema(store, upgrade=False)
            if migrated_from:
                log.info("created the database schema")
            keyring = await load_keyring(
                store, settings.signing_algorithm, clock(), kek, allow_plaintext=settings.allow_plaintext_keys
            )
            keyring = KeyRing(
                keyring, settings.signing_algorithm, load_retained(await store.retained_keys()), version=keyring.version
            )
            mirror = RevocationMirror()
            # The epoch first: should it change during the load, the follower sees it.
            mirror.epoch = (await store.log_state()).epoch
            started = time.monotonic()
            with collector_paused():
                async for rows in store.live_revocation_rows(clock() - settings.leeway):
                    mirror.load(rows)
            mirror.confirm(started)
        except BaseException:
            await store.close()
            raise
        log.info("live revocations loaded: %d", len(mirror))
        return cls(settings, store, keyring, mirror, clock, kek)

    def is_current(self) -> bool:
        """Whether this process's view of the revocation log can vouch for a token."""
        return self.mirror.age() <= self.settings.max_staleness

    def is_serving(self) -> bool:
        """Whether the store answers and the revocation view is current: what health reports."""
        return self.follower.reading and self.is_current()

    async def refresh_keys(self) -> None:
        """Reloads the signing keys when the stored set changed (a rotation, a retirement).

        A stored key this process cannot open (sealed under another key-encryption key:
        a misconfigured rotation) is left out with an error, and the others still load:
        one bad row must not stop every replica. Tokens it signed are refused here.
        """
        store = self._follower_store
        current = self.codec.keyring
        (version, stored), retained = await store.versioned_key_ids(), await store.retained_key_ids()
        if (version, stored, retained) == (current.version, current.kids | self._unopenable, current.retained_kids):
            return
        keys, unopenable = [], set()
        version, records = await store.versioned_keys()
        for record in records:
            try:
                keys.append(load_key(record, self._kek))
            except Exception:  # a wrong key-encryption key, or a row no version of us can read
                unopenable.add(record.kid)
        for kid in sorted(unopenable - self._unopenable):
            log.error(
                "signing key %s cannot be opened with this process's key-encryption key and is left out: "
                "every replica and `authority keys rotate` must use the same AUTHORITY_KEY_ENCRYPTION_KEY",
                kid,
            )
        self._unopenable = unopenable
        try:
            keyring = KeyRing(
                keys, self.settings.signing_algorithm, load_retained(await store.retained_keys()), version=version
            )
        except ValueError:
            log.error("no stored %s key can be opened: still signing with the keys loaded before",
                      self.settings.signing_algorithm.value)
            return
        if keyring.kids == current.kids:
            # Only the retained keys or the version changed (a key's row rewritten, a change
            # undone): the published set is the same, nothing to announce.
            self.codec.keyring = keyring
            return
        self.codec.keyring = keyring
        self.mirror.announce_keys()
        log.info(
            "signing keys changed: %d keys, signing with %s", len(keyring.kids), keyring.signing_key_at(self.clock()).kid
        )

    async def rotate_key(self, publish_ahead: float) -> str:
        """Stores a new signing key (sealed like the others), published now and signing
        after ``publish_ahead``; this process uses it at once. Returns its kid."""
        key = await rotate_key(
            self.store, self.settings.signing_algorithm, self.clock(), publish_ahead, self._kek
        )
        await self.refresh_keys()
        return key.kid

    async def forget(self, subject: str) -> tuple[int, int]:
        """``authority sessions forget``: see :meth:`Sessions.forget`."""
        erased = await self.sessions.forget(subject)
        self.explanations.forget()
        return erased

    def start(self) -> None:
        """Starts the log follower, the periodic maintenance and, on PostgreSQL, the
        notifications of this process's sign-ins."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.follower.run(self._stopping), name="log-follower"),
                asyncio.create_task(self._maintain_forever(), name="maintenance"),
            ]
            if self.notifier is not None:
                self._tasks.append(asyncio.create_task(self.notifier.run(self._stopping), name="log-notifier"))

    async def close(self) -> None:
        """Stops the background work (letting a database round trip in progress finish,
        so no connection is left mid-transaction) and closes the store."""
        self._stopping.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STOP_BACKGROUND_SECONDS)
            for task in late:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        await self._follower_store.close()
        await self.store.close()

    async def purge(self) -> tuple[int, int]:
        """Drops expired revocations (store and mirror) and ended sessions, in short batches.

        Returns how many revocations and sessions the store dropped. The store part runs
        on one replica at a time (an advisory lock on PostgreSQL): others skip it.
        """
        now = self.clock()
        cutoff = now - self.settings.leeway
        revocations = sessions = 0
        try:
            async with self.store.exclusive(MAINTENANCE_LOCK) as mine:
                if mine:
                    revocations, sessions = await self._maintain_store(now, cutoff)
        finally:
            # After the store's purge, so that the follower cannot read an entry back in.
            self.mirror.purge(cutoff)
        return revocations, sessions

    async def _maintain_store(self, now: float, cutoff: float) -> tuple[int, int]:
        """The maintenance only one replica runs at a time."""
        idle_cutoff = self.settings.idle_cutoff(now)
        batch = self.settings.purge_batch_size
        revocations = sessions = 0
        # One short transaction per batch: sign-ins never wait behind the purge for long,
        # and a stop waits for one batch at most.
        while not self._stopping.is_set() and (dropped := await self.store.purge_revocations(cutoff, batch)) > 0:
            revocations += dropped
        while not self._stopping.is_set() and (
            dropped := await self.store.purge_sessions(cutoff, idle_cutoff, batch)
        ) > 0:
            sessions += dropped
        events_cutoff = now - self.settings.session_events_retention
        while not self._stopping.is_set() and await purge_events(self.store, events_cutoff, batch) > 0:
            pass
        await purge_keys(
            self.store,
            now,
            verify_for=self.settings.max_access_token_ttl + self.settings.leeway,
            retain_for=self.settings.refresh_token_ttl + self.settings.leeway,
            kek=self._kek,
        )
        if self.settings.key_rotation_interval:
            await rotate_if_due(
                self.store,
                self.settings.signing_algorithm,
                now,
                self.settings.key_rotation_interval,
                self.settings.key_publish_ahead,
                self._kek,
            )
        return revocations, sessions

    async def _maintain_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.purge_interval)
            if self._stopping.is_set():
                return
            try:
                revocations, sessions = await self.purge()
                if revocations or sessions:
                    log.info("purged %d expired revocations and %d ended sessions", revocations, sessions)
            except StoreUnavailable:
                log.warning("maintenance skipped: the database is unavailable")
            except Exception:
                log.exception("maintenance failed")
