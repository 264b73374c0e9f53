"""A real token authority inside the test process, for a consumer's own tests.

It lives in the server package, since it runs the server: a consumer's tests install the
authority (``pip install -e PATH/TO/token-authority``) beside the client package.

For blocking code (and grpc servers), :class:`InProcessAuthority` runs the authority in a
background thread with its own event loop::

    with InProcessAuthority() as authority:
        issued = authority.sign_in("alice", "laptop")
        ...  # point the consumer at authority.target, call it with issued.access_token

For asyncio code, :class:`AsyncInProcessAuthority` runs it in the running loop::

    async with AsyncInProcessAuthority() as authority:
        issued = await authority.sign_in("alice", "laptop")

Both keep their port and their SQLite file across :meth:`stop` and :meth:`start`, so a
test can take the authority away and bring it back. :meth:`mint` signs a token with the
authority's key without a sign-in (for expired or not-yet-valid tokens, odd audiences,
extra claims); :meth:`rotate_keys` rotates the signing key while it runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from authority_client.async_client import AsyncAuthorityClient
from authority_client.client import AuthorityClient
from authority_client.types import IssuedToken, SessionPolicy

from authority.api import callers
from authority.api.server import AuthorityServer, create_server
from authority.config import Settings
from authority.tokens import AccessClaims

T = TypeVar("T")
# Public, so it guards nothing: only the throwaway keys of test authorities are sealed with it.
TEST_KEY_ENCRYPTION_KEY = base64.b64encode(hashlib.sha256(b"authority.testing: test keys only").digest()).decode()


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


class _Core:
    """What both flavours share: the settings, the temporary store, the started server."""

    def __init__(self, database_url: str | None, port: int, settings: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if database_url is None:
            self._tmp = tempfile.mkdtemp(prefix="authority-")
            database_url = f"sqlite+aiosqlite:///{Path(self._tmp) / 'authority.db'}"
        self.database_url = database_url
        self.port = port
        # Signing keys sealed, as in production, which also keeps the "stored unencrypted"
        # warning out of the consumer's test output. Every in-process authority uses this
        # one key, so two of them on one database open each other's keys.
        self._overrides = {"leeway": 0, "key_encryption_key": TEST_KEY_ENCRYPTION_KEY, **settings}
        self.server: AuthorityServer | None = None

    @property
    def issuer(self) -> str:
        return str(self._overrides.get("issuer", "token-authority"))

    async def start(self) -> None:
        settings = Settings(listen=f"127.0.0.1:{self.port}", database_url=self.database_url, **self._overrides)
        # Unauthenticated callers on loopback is what a test authority is for: the warning
        # a served authority gives about it would only clutter the consumer's test output.
        callers_log = logging.getLogger(callers.__name__)
        callers_log.addFilter(_below_warning)
        try:
            self.server = await create_server(settings)
        finally:
            callers_log.removeFilter(_below_warning)
        self.port = self.server.port

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(None)

    def mint(self, subject: str, audience: str | None, ttl: float, not_before: float, claims: dict[str, Any]) -> str:
        if self.server is None:
            raise RuntimeError("the authority is not running")
        authority = self.server.authority
        now = int(time.time())
        token_claims = AccessClaims(
            subject=subject,
            device_id=str(claims.pop("device_id", "test-device")),
            session_id=str(claims.pop("sid", secrets.token_urlsafe(16))),
            token_id=secrets.token_urlsafe(16),
            issuer=authority.settings.issuer,
            audience=audience or authority.settings.default_audience,
            issued_at=now + int(not_before),
            expires_at=now + int(ttl),
            extra=claims,
        )
        return authority.codec.sign(token_claims)

    async def rotate_keys(self, publish_ahead: float) -> str:
        if self.server is None:
            raise RuntimeError("the authority is not running")
        return await self.server.authority.rotate_key(publish_ahead)

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class InProcessAuthority:
    """A token authority in a background thread; every method is blocking.

    ``database_url`` defaults to a temporary SQLite file removed on :meth:`close`;
    ``port`` 0 picks a free one at first start and keeps it; ``api_key`` is what
    :attr:`client` sends (when ``api_keys`` are configured); other keywords are
    ``authority.config.Settings`` fields (leeway defaults to 0).
    """

    def __init__(
        self, *, database_url: str | None = None, port: int = 0, api_key: str | None = None, **settings: Any
    ) -> None:
        self._core = _Core(database_url, port, settings)
        self._api_key = api_key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="in-process-authority", daemon=True)
        self._thread.start()
        self._client: AuthorityClient | None = None

    @property
    def target(self) -> str:
        """Where the authority listens."""
        return f"127.0.0.1:{self._core.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of its tokens."""
        return self._core.issuer

    @property
    def database_url(self) -> str:
        """The store, for a second authority on the same database."""
        return self._core.database_url

    @property
    def client(self) -> AuthorityClient:
        """A client connected to it."""
        if self._client is None:
            self._client = AuthorityClient(self.target, api_key=self._api_key)
        return self._client

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def start(self) -> InProcessAuthority:
        """Starts (or restarts) the authority on its port and store."""
        self._run(self._core.start())
        return self

    def stop(self) -> None:
        """Stops the authority at once; the store and port are kept for :meth:`start`."""
        self._run(self._core.stop())

    def sign_in(
        self, subject: str, device_id: str, *, policy: SessionPolicy = SessionPolicy.DEFAULT, **kwargs: Any
    ) -> IssuedToken:
        """Signs ``subject`` in on ``device_id`` through IssueToken."""
        return self.client.issue_token(subject, device_id, policy=policy, **kwargs)

    def mint(
        self,
        subject: str = "test-subject",
        *,
        audience: str | None = None,
        ttl: float = 300,
        not_before: float = 0,
        **claims: Any,
    ) -> str:
        """A token signed with the authority's current key, for no session.

        ``ttl`` and ``not_before`` are seconds from now (negative ``ttl``: already expired).
        """
        return self._run(_call(self._core.mint, subject, audience, ttl, not_before, claims))

    def rotate_keys(self, publish_ahead: float = 0) -> str:
        """Adds a signing key that is published at once and signs after ``publish_ahead``; its kid."""
        return self._run(self._core.rotate_keys(publish_ahead))

    def close(self) -> None:
        """Stops the authority and its thread and removes a temporary store."""
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            self._run(self._core.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._core.cleanup()

    def __enter__(self) -> InProcessAuthority:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _call(function: Callable[..., T], *args: Any) -> T:
    # Runs ``function`` on the authority's loop, which owns the server it reads.
    return function(*args)


class AsyncInProcessAuthority:
    """A token authority in the running event loop; the asyncio twin of :class:`InProcessAuthority`."""

    def __init__(
        self, *, database_url: str | None = None, port: int = 0, api_key: str | None = None, **settings: Any
    ) -> None:
        self._core = _Core(database_url, port, settings)
        self._api_key = api_key
        self._client: AsyncAuthorityClient | None = None

    @property
    def target(self) -> str:
        """Where the authority listens."""
        return f"127.0.0.1:{self._core.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of its tokens."""
        return self._core.issuer

    @property
    def database_url(self) -> str:
        """The store, for a second authority on the same database."""
        return self._core.database_url

    @property
    def client(self) -> AsyncAuthorityClient:
        """A client connected to it (created in the running loop)."""
        if self._client is None:
            self._client = AsyncAuthorityClient(self.target, api_key=self._api_key)
        return self._client

    async def start(self) -> AsyncInProcessAuthority:
        """Starts (or restarts) the authority on its port and store."""
        await self._core.start()
        return self

    async def stop(self) -> None:
        """Stops the authority at once; the store and port are kept for :meth:`start`."""
        await self._core.stop()

    async def sign_in(
        self, subject: str, device_id: str, *, policy: SessionPolicy = SessionPolicy.DEFAULT, **kwargs: Any
    ) -> IssuedToken:
        """Signs ``subject`` in on ``device_id`` through IssueToken."""
        return await self.client.issue_token(subject, device_id, policy=policy, **kwargs)

    def mint(
        self,
        subject: str = "test-subject",
        *,
        audience: str | None = None,
        ttl: float = 300,
        not_before: float = 0,
        **claims: Any,
    ) -> str:
        """A token signed with the authority's current key, for no session (see :class:`InProcessAuthority`)."""
        return self._core.mint(subject, audience, ttl, not_before, claims)

    async def rotate_keys(self, publish_ahead: float = 0) -> str:
        """Adds a signing key that is published at once and signs after ``publish_ahead``; its kid."""
        return await self._core.rotate_keys(publish_ahead)

    async def close(self) -> None:
        """Stops the authority and removes a temporary store."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        try:
            await self._core.stop()
        finally:
            self._core.cleanup()

    async def __aenter__(self) -> AsyncInProcessAuthority:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
