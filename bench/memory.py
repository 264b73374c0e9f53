"""Memory held per live revocation by the server's mirror, measured with tracemalloc in a
process of its own (so nothing else the benchmark holds is counted)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
import tracemalloc
from typing import Any


async def _measure(database_url: str, leeway: int) -> tuple[int, int]:
    from authority.revocations import RevocationMirror
    from authority.store import Store

    store = Store.open(database_url)
    try:
        await store.keys()  # connect first, so the pool's own memory is not counted
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        mirror = RevocationMirror()
        batch: list[Any] = []
        # Loaded as Authority.open loads it.
        async for batch in store.live_revocations(time.time() - leeway):
            mirror.advance(batch)
        batch = []  # the last batch is garbage once applied
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return len(mirror), held
    finally:
        await store.close()


def _main(database_url: str, leeway: int, results: Any) -> None:
    results.put(asyncio.run(_measure(database_url, leeway)))


def mirror_bytes(database_url: str, leeway: int = 30) -> tuple[int, int]:
    """(live revocations, bytes the loaded mirror holds) for the store at ``database_url``."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_main, args=(database_url, leeway, results), daemon=True)
    process.start()
    entries, held = results.get(timeout=600)
    process.join(timeout=10)
    return int(entries), int(held)
