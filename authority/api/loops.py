"""The event loop ``authority serve`` runs on: uvloop where it is installed, or asyncio's own.

uvloop puts libuv under asyncio's API, so the server's code is the same on both; what
changes is what the loop itself costs. A served call wakes the loop several times (grpc.aio
completes each call through futures and callbacks, and a sign-in waits on PostgreSQL
besides), and on uvloop each wake costs less: measured by the benchmark's load in one
run, about a tenth less server CPU per ValidateToken and per sign-in. A bare grpc.aio
server serving only health costs the same on both, which is why the floor does not move.

``event_loop``: ``auto`` (the default) takes uvloop when it can be imported (it is a
dependency wherever it builds, every platform but Windows) and asyncio's loop otherwise;
``uvloop`` insists on it and refuses to start without it; ``asyncio`` is the standard
library's loop, for an operator who wants no native loop at all. The start-up line says
which loop runs. Only the server is chosen for: the client package, the tests' in-process
servers and :mod:`authority.testing` run on whatever loop their caller runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from authority.errors import ConfigError

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop of ``choice`` (one of :data:`authority.config.EVENT_LOOPS`); None for asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop", "uvloop is not installed; install it, or choose asyncio or auto") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Runs ``main`` to its end on a new loop of ``choice``, as :func:`asyncio.run` does."""
    try:
        factory = loop_factory(choice)
    except BaseException:
        main.close()  # never awaited: no "coroutine was never awaited" warning on a refused start
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which loop ``loop`` is, for the start-up line."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"
