"""SQLite's stand-in for PostgreSQL's session-level advisory locks: a lock file beside the
database, held with ``flock``, that one process (one store) at a time holds.

PostgreSQL's ``pg_try_advisory_lock`` keeps maintenance on one replica at a time. On SQLite
the replicas are processes on one machine (``serve --workers``, or several ``serve`` on
one file), and the kernel's whole-file ``flock`` gives the same: held per open file (so
two stores in one process exclude each other too), never waited for, and released when
its holder exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held_beside(database: Path, lock_id: int) -> Iterator[bool]:
    """Yields whether this store holds ``lock_id`` for ``database`` during the block."""
    path = database.with_name(f"{database.name}-lock-{lock_id & 0xFFFFFFFFFFFFFFFF:016x}")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # closing the descriptor below releases the lock
    finally:
        os.close(descriptor)
