"""The heap of a served process: what start-up made is frozen out of garbage collection.

Start-up leaves a large heap that lives as long as the process: modules, protobuf
descriptors, SQLAlchemy's tables and compiled statements, the key ring (about 120,000
objects the collector tracks, measured here). CPython's full collection walks every
tracked object, and under a sign-in load one ran every few seconds (objects of the calls
in flight outlive the young generations), taking 70 to 90 ms each on this project's
machine: a stall of the event loop, so of every call in flight. :func:`gc.freeze` moves
what start-up made into a permanent generation that collections skip, and full
collections then took under a millisecond; the benchmark's sign-in p99 fell with them
(README "The event loop and the heap").

Reference counting still frees frozen objects. Only a frozen object in a reference cycle
stays when later code drops it (the key ring a rotation replaces, say): bounded by what
start-up made, and once. :func:`authority.api.server.serve` freezes, for the process it
owns; :func:`~authority.api.server.create_server` does not, since it also runs inside
other programs (the tests, :mod:`authority.testing`), whose heaps are theirs.
"""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> int:
    """Collects what start-up left unreachable, then freezes the rest; how many objects
    the collector now skips."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
