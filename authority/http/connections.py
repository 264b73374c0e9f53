"""How many HTTP connections the listener holds, and for how long.

A client that opens connections and sends nothing, or half a request, must not take the
process's file descriptors from the gRPC port and the database pool, which share them.
Three bounds keep it so:

- **Time.** aiohttp's keep-alive timer runs from a connection's opening and from each
  answer, and closes a connection still waiting for a complete request head then, a
  half-sent head included: ``http_read_timeout`` is that timer. The body has as long
  again once the head has come (:func:`authority.http.tokens.read_form`), and a TLS
  handshake as long.
- **Number.** :class:`LimitedSite` admits at most ``http_max_connections`` connections at
  once. Past it, a new connection gets 503 with ``Retry-After`` and is closed: one
  fixed answer, written before anything is read.
- **Room.** :func:`ensure_descriptor_room` raises the process's soft open-file limit
  toward its hard one, as a server that polls with epoll can, so that the cap leaves room
  for everything else; a hard limit too low for the cap stops the start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import ssl
from collections.abc import Callable

from aiohttp import web

from authority.errors import ConfigError
from authority.http.status import RETRY_AFTER_SECONDS, SERVER_NAME

log = logging.getLogger(__name__)

# Descriptors kept beyond the HTTP connections: gRPC connections, the database pool, the
# listening sockets, the log and the files the process reads.
SPARE_DESCRIPTORS = 1024
# How long a refused connection stays open after its answer, its input discarded, so that
# the client reads the answer rather than a reset for the request it was still sending.
REFUSAL_LINGER_SECONDS = 1.0
_FULL_BODY = json.dumps(
    {"error": "temporarily_unavailable", "error_description": "too many connections; retry later"}
).encode()
_FULL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: %d\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n"
    b"Server: %s\r\n\r\n" % (len(_FULL_BODY), RETRY_AFTER_SECONDS, SERVER_NAME.encode())
) + _FULL_BODY


def ensure_descriptor_room(max_connections: int) -> None:
    """Makes room for ``max_connections`` HTTP connections and :data:`SPARE_DESCRIPTORS`
    more, raising the soft open-file limit up to the hard one if need be; ConfigError
    naming ``http_max_connections`` when even the hard limit is too low."""
    needed = max_connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            "http_max_connections",
            f"{max_connections} connections need an open-file limit of at least {needed}, and this process's "
            f"hard limit is {hard} (ulimit -Hn); lower http_max_connections or raise the limit",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class _Refusal(asyncio.Protocol):
    """A connection past the limit: the fixed 503, then closed once the linger ends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_FULL_ANSWER)
        asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: the answer is the same for every one


class LimitedSite(web.BaseSite):
    """aiohttp's TCP site, admitting at most ``max_connections`` connections at once.

    The count is aiohttp's own list of open connections; a TLS connection joins it once
    its handshake is done, and the handshake is bounded by ``handshake_timeout``."""

    __slots__ = ("_host", "_port", "_reuse_port", "_max_connections", "_handshake_timeout", "_handler", "_on_refused",
                 "_refusing")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        handshake_timeout: float,
        handler: Callable[[web.Server], asyncio.BaseProtocol],
        on_refused: Callable[[], object] = lambda: None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``handler`` makes a connection's protocol (aiohttp's request handler) for the
        runner's server; ``on_refused`` is called for each connection refused."""
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._max_connections = max_connections
        self._handshake_timeout = handshake_timeout
        self._handler = handler
        self._on_refused = on_refused
        self._refusing = False

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    def open_connections(self) -> int:
        """How many connections the site holds now (not those refused)."""
        server = self._runner.server
        return 0 if server is None else len(server.connections)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def accept() -> asyncio.BaseProtocol:
            if len(server.connections) < self._max_connections:
                self._refusing = False
                return self._handler(server)
            if not self._refusing:  # once each time the limit is reached, not per connection
                self._refusing = True
                log.warning("HTTP connections reached http_max_connections (%d): new ones get 503 until some close",
                            self._max_connections)
            self._on_refused()
            return _Refusal()

        self._server = await asyncio.get_running_loop().create_server(
            accept, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_port=self._reuse_port or None,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
