"""Fixtures for the client package's tests: a real authority, and a greeter consumer
served by a grpc or a grpc.aio server in remote or local mode.

Every test body here is blocking code: the grpc.aio greeter runs in an event loop of
its own in a background thread, so one body drives both flavours.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from authority_client import (
    AsyncAuthorityClient,
    AsyncValidator,
    AuthorityClient,
    FollowSettings,
    Mode,
    ValidationSettings,
    Validator,
)
from authority_client.local.mirror import RevocationMirror

from authority.testing import InProcessAuthority

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "greeter"))

import greeter  # noqa: E402

T = TypeVar("T")

FLAVOURS = ["grpc", "aio"]
# remote+cache keeps a cache evicted by the revocation stream.
MODES = ["remote", "remote+cache", "local"]
# A REVOKED answer waits this long for why and by which device (explanation_wait; 250 ms
# by default), so that a test asserting the device's name is not at the mercy of a
# loaded machine's first read.
EXPLANATION_WAIT = 2.0
# Quick reconnects so outage tests take seconds, not minutes.
FOLLOW = FollowSettings(heartbeat_interval=0.2, idle_timeout=1.0, min_backoff=0.05, max_backoff=0.3)


def validation_settings(mode: str, **overrides: Any) -> ValidationSettings:
    """The consumer's settings for a mode name of :data:`MODES`."""
    base = {
        "remote": ValidationSettings(mode=Mode.REMOTE, follow=FOLLOW),
        "remote+cache": ValidationSettings(mode=Mode.REMOTE, cache_size=100, cache_ttl=60, follow=FOLLOW),
        "local": ValidationSettings(mode=Mode.LOCAL, follow=FOLLOW),
    }[mode]
    return dataclasses.replace(base, **overrides)


class _Loop:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Consumer:
    """A running greeter and a channel to it; the same face for both flavours."""

    def __init__(
        self, flavour: str, authority_target: str, settings: ValidationSettings, api_key: str | None = None
    ) -> None:
        self.flavour = flavour
        self._loop: _Loop | None = None
        if flavour == "grpc":
            self._client = AuthorityClient(authority_target, api_key=api_key)
            self.validator: Validator | AsyncValidator = Validator(self._client, settings).start()
            self._server, port = greeter.create_server(self.validator)
        else:
            self._loop = _Loop()

            async def start() -> tuple[AsyncAuthorityClient, AsyncValidator, grpc.aio.Server, int]:
                client = AsyncAuthorityClient(authority_target, api_key=api_key)
                validator = await AsyncValidator(client, settings).start()
                server, port = await greeter.create_aio_server(validator)
                return client, validator, server, port

            self._aclient, self.validator, self._aserver, port = self._loop.run(start())
        self.target = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.target)

    @property
    def mirror(self) -> RevocationMirror:
        assert self.validator.mirror is not None
        return self.validator.mirror

    def wait_until_fresh(self, timeout: float = 10.0) -> bool:
        """Waits until the consumer's revocation mirror vouches (at once without one)."""
        if isinstance(self.validator, Validator):
            return self.validator.wait_until_fresh(timeout)
        assert self._loop is not None
        return self._loop.run(self.validator.wait_until_fresh(timeout))

    def say_hello(self, token: str | None, name: str = "world") -> str:
        return greeter.say_hello(self.channel, name, token)

    def accepts(self, token: str) -> bool:
        """Whether SayHello with ``token`` goes through."""
        try:
            self.say_hello(token)
        except grpc.RpcError:
            return False
        return True

    def refusal(self, token: str | None) -> tuple[grpc.StatusCode, str]:
        """The status and reason of a SayHello that must fail."""
        with pytest.raises(grpc.RpcError) as failed:
            self.say_hello(token)
        error: Any = failed.value
        reasons = [value for key, value in error.trailing_metadata() or () if key == "x-token-invalid-reason"]
        return error.code(), reasons[0] if reasons else ""

    def close(self) -> None:
        self.channel.close()
        if isinstance(self.validator, Validator):
            self._server.stop(None)
            self.validator.close()
            self._client.close()
            return
        assert self._loop is not None and isinstance(self.validator, AsyncValidator)
        validator = self.validator

        async def stop() -> None:
            await self._aserver.stop(None)
            await validator.close()
            await self._aclient.close()

        self._loop.run(stop())
        self._loop.close()


StartConsumer = Callable[..., Consumer]


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[InProcessAuthority]:
    """A real authority on a temporary SQLite file that issues for ``greeter`` too."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'authority.db'}"
    with InProcessAuthority(database_url=database_url, audiences=("token-authority", greeter.AUDIENCE),
                            explanation_wait=EXPLANATION_WAIT) as running:
        yield running


@pytest.fixture
def start_consumer(authority: InProcessAuthority) -> Iterator[StartConsumer]:
    """Starts greeters of a flavour and mode against ``authority``; closes them afterwards."""
    started: list[Consumer] = []

    def start(flavour: str, mode: str, **overrides: Any) -> Consumer:
        consumer = Consumer(flavour, authority.target, validation_settings(mode, **overrides))
        started.append(consumer)
        return consumer

    yield start
    for consumer in reversed(started):
        consumer.close()
