"""Why a refused token's session was revoked, when, and by which device: the rare path.

The mirror holds only each revoked session's expiry and cause, so that a million live
revocations stay small; the rest (``revoked_at``, the replacing device's id and name) is
read from the store when a REVOKED answer is explained. Validation itself never waits on
it: an explanation not read within a short wait (the ``explanation_wait`` setting) is
left out of that answer (its read goes on, and the next answer has it), and the reads in
flight are capped, so a flood of revoked tokens cannot queue work on the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from authority.errors import StoreUnavailable
from authority.store import RevocationDetail, Store

log = logging.getLogger(__name__)

# Explanations remembered, so that a revoked token presented again and again costs one read;
# each for a minute at most, so that a subject's erased device names leave every replica.
KEPT = 10_000
KEPT_SECONDS = 60.0
# How many reads may be in flight (the wait for one is the explanation_wait setting).
MAX_READING = 64


class Explanations:
    """Revocation details read from the store, remembered a while."""

    def __init__(self, store: Store, wait: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._wait = wait
        self._monotonic = monotonic
        # session id -> (the details, when they were read)
        self._known: dict[str, tuple[RevocationDetail | None, float]] = {}
        self._reading: dict[str, asyncio.Task[RevocationDetail | None]] = {}

    async def explain(self, session_id: str) -> RevocationDetail | None:
        """The details of ``session_id``'s revocation; None when the store cannot say now."""
        known = self._known.get(session_id)
        if known is not None and self._monotonic() - known[1] < KEPT_SECONDS:
            return known[0]
        task = self._reading.get(session_id)
        if task is None:
            if len(self._reading) >= MAX_READING:
                return None
            task = asyncio.ensure_future(self._read(session_id))
            self._reading[session_id] = task
        try:
            # Shielded: a read cut off midway could leave its connection unusable.
            return await asyncio.wait_for(asyncio.shield(task), self._wait)
        except TimeoutError:
            return None

    async def _read(self, session_id: str) -> RevocationDetail | None:
        try:
            detail = await self._store.revocation_detail(session_id)
        except StoreUnavailable:
            return None
        except Exception:  # a bug must not turn a REVOKED answer into an error
            log.exception("reading why a session was revoked failed")
            return None
        finally:
            self._reading.pop(session_id, None)
        if len(self._known) >= KEPT:
            self._known.clear()
        self._known[session_id] = (detail, self._monotonic())
        return detail

    def forget(self) -> None:
        """Drops what is remembered (after a subject's data was erased)."""
        self._known.clear()
