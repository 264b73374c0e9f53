"""The event loop ``authority serve`` runs on: uvloop where it is installed, or asyncio's own.

uvloop puts libuv under asyncio's API, so the server's code is the same on both; what
changes is what the loop itself costs. A served call wakes the loop several times (grpc.aio
completes each call through futures and callbacks), and on uvloop each wake costs less:
measured by the benchmark's load, about a tenth less server CPU per ValidateToken, while
sign-ins, whose time is in grpc, the database's round trip and the authority's own code,
differ by no more than the noise. A bare grpc.aio server gains less, which is why the
benchmark's floor runs on uvloop too (README "The event loop and the heap").

``event_loop``: ``auto`` (the default) takes uvloop when it can be imported (it is a
dependency on CPython everywhere but Windows) and asyncio's loop otherwise;
``uvloop`` insists on it and refuses to start without it; ``asyncio`` is the standard
library's loop, for an operator who wants no native loop at all. Each server's start-up
line says which loop runs. Only the server is chosen for: the client package, the tests'
in-process servers and :mod:`authority.testing` run on whatever loop their caller runs.

The server's stop signals are set here too (:func:`stop_signals`): uvloop, unlike
asyncio's loop, leaves its signal handlers in place when it closes, and a signal reaching a
closed loop is lost, so a second Ctrl-C or SIGTERM after the stop would do nothing.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from authority.config import EVENT_LOOPS
from authority.errors import ConfigError

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the loop of ``choice`` (one of :data:`authority.config.EVENT_LOOPS`); None for asyncio's own."""
    if choice not in EVENT_LOOPS:
        raise ConfigError("event_loop", f"must be one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as error:
        if choice == "uvloop":
            raise ConfigError(
                "event_loop", f"uvloop cannot be imported ({error}); install it, or choose asyncio or auto"
            ) from None
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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> Iterator[None]:
    """``stop`` on SIGTERM and SIGINT while the block runs; the handlers the process had
    before are back when it ends, on either loop."""
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop)
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
