"""How many HTTP connections the listener holds, for how long, and what a connection it
cannot serve is told.

A client that opens connections and sends nothing, half a request or no TLS handshake,
or never reads its answers, must not take the process's file descriptors from the gRPC
port and the database pool, which share them. These bounds keep it so:

- **Number.** :class:`LimitedSite` accepts each connection itself and counts it from
  that moment until its socket closes, a TLS handshake in progress included, so that at
  most ``max_connections`` are open at once. Past that, a plain connection gets a fixed
  503 with ``Retry-After``, written before anything is read, and is closed a second later
  (at most :data:`MAX_LINGERING_REFUSALS` of them linger at once; the rest are closed at
  once, as a TLS one is: it could read no plain answer).
- **Time.** aiohttp's keep-alive timer runs from a connection's handshake and from each
  answer, and closes a connection still waiting for a complete request head then, a
  half-sent head included: ``read_timeout`` (``http_read_timeout``) is that timer. The
  body has as long again once the head has come (:func:`authority.http.tokens.read_form`);
  a TLS handshake as long; and an answer the client stops reading as long, before the
  connection is dropped.
- **Room.** :func:`descriptor_room` raises the process's soft open-file limit toward its
  hard one, as a server that polls with epoll can, so that the cap leaves room for
  everything else; a hard limit too low for the cap lowers the cap, and says so.

A request aiohttp cannot parse is answered by :class:`Connection` with a JSON error of
fixed text: aiohttp's own words quote the request line or the header at fault, a token in
either included, and name aiohttp and its version.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from authority.http.status import INTERNAL_DESCRIPTION, RETRY_AFTER_SECONDS, SERVER_NAME, error_response

log = logging.getLogger(__name__)

# Descriptors kept beyond the HTTP connections: gRPC connections, the database pool, the
# listening sockets, the log and the files the process reads.
SPARE_DESCRIPTORS = 1024
# How long a refused connection stays open after its answer, its input discarded, so that
# the client reads the answer rather than a reset for the request it was still sending.
REFUSAL_LINGER_SECONDS = 1.0
# Refusals that may linger at once: a client opening connections as fast as it can must
# not hold a descriptor for each of them for a second.
MAX_LINGERING_REFUSALS = 64
# How long to wait before accepting again when the process has no descriptor left.
ACCEPT_RETRY_SECONDS = 0.1
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKLOG = 128
# What an unparsable request is told: the parser's own text would quote it back.
UNPARSED = "the request is not well-formed HTTP/1.1 (a request line or header malformed or over its limit)"
_REFUSAL_BODY = json.dumps(
    {"error": "temporarily_unavailable", "error_description": "too many connections; retry later"}
).encode()
REFUSAL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: %d\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n"
    b"Server: %s\r\n\r\n" % (len(_REFUSAL_BODY), RETRY_AFTER_SECONDS, SERVER_NAME.encode())
) + _REFUSAL_BODY


def descriptor_room(max_connections: int) -> int:
    """The connection cap this process can hold: ``max_connections`` once the soft
    open-file limit has been raised (up to the hard one) to hold it and
    :data:`SPARE_DESCRIPTORS` more; less, with a warning, when the hard limit is lower
    (then the HTTP connections get at most half of it, or all but the spare)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # a ceiling the hard limit does not show (macOS): keep the soft one
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    room = max(1, min(max_connections, max(soft - SPARE_DESCRIPTORS, soft // 2)))
    log.warning(
        "http_max_connections lowered from %d to %d: this process may open %d files (ulimit -Hn); "
        "raise the limit to %d to keep %d", max_connections, room, soft, needed, max_connections,
    )
    return room


class Connection(web.RequestHandler):
    """aiohttp's protocol for one connection, bounded in time where aiohttp is not:
    an answer the client has stopped reading for ``write_timeout`` drops the connection,
    and ``on_closed`` is called once when the connection is gone. A request aiohttp
    cannot parse gets a JSON error of fixed text (:data:`UNPARSED`)."""

    def __init__(
        self, server: web.Server, *, write_timeout: float, on_closed: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(server, loop=asyncio.get_running_loop(), **kwargs)
        self._write_timeout = write_timeout
        self._on_closed: Callable[[], None] | None = on_closed
        self._stalled: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = asyncio.get_running_loop().call_later(self._write_timeout, self._drop)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _drop(self) -> None:
        self._stalled = None
        if self.transport is not None:
            self.transport.abort()  # close() would wait for the buffer the client does not read

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        try:
            super().connection_lost(exc)
        finally:
            self.closed()

    def closed(self) -> None:
        """Tells the site this connection is gone (once, however often it is called)."""
        on_closed, self._on_closed = self._on_closed, None
        if on_closed is not None:
            on_closed()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; refuses once an answer has begun
        if status < 500:
            answer = error_response(status, "invalid_request", UNPARSED)
        else:
            answer = error_response(status, "server_error", INTERNAL_DESCRIPTION)
        answer.headers["Server"] = SERVER_NAME
        answer.force_close()
        return answer


class _Refusal(asyncio.Protocol):
    """A plain connection past the limit: the fixed 503, then closed once the linger ends."""

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self._on_closed = on_closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(REFUSAL_ANSWER)
        asyncio.get_running_loop().call_later(REFUSAL_LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: the answer is the same for every one

    def connection_lost(self, exc: BaseException | None) -> None:
        self._on_closed()


class _Listening:
    """The site's listening sockets and the tasks that accept on them and hand each
    connection to its protocol; what aiohttp's runner reads of a site's server."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.sockets = sockets
        self.tasks: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for sock in self.sockets:
            sock.close()


class LimitedSite(web.BaseSite):
    """aiohttp's TCP site, with its own accept loop so that it counts every connection
    from its accept to its close and admits at most ``max_connections`` at once."""

    __slots__ = ("_host", "_port", "_reuse_port", "_max_connections", "_read_timeout", "_handler_args",
                 "_on_refused", "_open", "_lingering", "_refusing")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        read_timeout: float,
        handler_args: dict[str, Any],
        on_refused: Callable[[], object] = lambda: None,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        """``handler_args`` are aiohttp's request-handler settings, the runner's own;
        ``on_refused`` is called for each connection refused."""
        super().__init__(runner, ssl_context=ssl_context, backlog=_BACKLOG)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._max_connections = max_connections
        self._read_timeout = read_timeout
        self._handler_args = handler_args
        self._on_refused = on_refused
        self._open = 0
        self._lingering = 0
        self._refusing = False

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    def open_connections(self) -> int:
        """How many connections the site holds now, handshakes included, refusals not."""
        return self._open

    async def start(self) -> None:
        await super().start()
        listening = _Listening(_bind(self._host, self._port, self._reuse_port, self._backlog))
        self._server = cast(asyncio.AbstractServer, listening)  # what BaseSite.stop and the runner read
        for sock in listening.sockets:
            _keep(listening, asyncio.get_running_loop().create_task(self._accept(sock, listening)))

    async def _accept(self, sock: socket.socket, listening: _Listening) -> None:
        loop = asyncio.get_running_loop()
        starved = False
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as error:
                if error.errno not in _OUT_OF_DESCRIPTORS:
                    return  # the socket was closed: the site has stopped
                if not starved:
                    starved = True
                    log.warning("no file descriptor left to accept an HTTP connection (%s); retrying",
                                errno.errorcode.get(error.errno or 0, "?"))
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)  # the connection waits in the backlog
                continue
            starved = False
            conn.setblocking(False)
            if self._open < self._max_connections:
                self._refusing = False
                self._open += 1
                _keep(listening, loop.create_task(self._serve(conn)))
            else:
                self._refuse(conn, listening)

    async def _serve(self, conn: socket.socket) -> None:
        server = self._runner.server
        connection: Connection | None = None

        def protocol() -> Connection:
            nonlocal connection
            assert server is not None
            connection = Connection(server, write_timeout=self._read_timeout, on_closed=self._closed,
                                    **self._handler_args)
            return connection

        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                protocol, conn, ssl=self._ssl_context,
                ssl_handshake_timeout=self._read_timeout if self._ssl_context else None,
            )
        except (Exception, asyncio.CancelledError) as error:
            # A TLS handshake that failed, timed out or was cut short by the stop: the
            # connection was never made, and its socket is closed here.
            conn.close()
            (connection.closed if connection is not None else self._closed)()
            if isinstance(error, asyncio.CancelledError):
                raise

    def _closed(self) -> None:
        self._open -= 1

    def _refuse(self, conn: socket.socket, listening: _Listening) -> None:
        if not self._refusing:  # once each time the limit is reached, not per connection
            self._refusing = True
            log.warning("HTTP connections reached http_max_connections (%d): new ones get 503 until some close",
                        self._max_connections)
        self._on_refused()
        if self._ssl_context is not None or self._lingering >= MAX_LINGERING_REFUSALS:
            conn.close()
            return
        self._lingering += 1

        def lingered() -> None:
            self._lingering -= 1

        async def answer() -> None:
            try:
                await asyncio.get_running_loop().connect_accepted_socket(lambda: _Refusal(lingered), conn)
            except (Exception, asyncio.CancelledError) as error:
                conn.close()
                lingered()
                if isinstance(error, asyncio.CancelledError):
                    raise

        _keep(listening, asyncio.get_running_loop().create_task(answer()))


def _keep(listening: _Listening, task: asyncio.Task[None]) -> None:
    listening.tasks.add(task)
    task.add_done_callback(listening.tasks.discard)


def _bind(host: str, port: int, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` resolves to, all on one port (port 0:
    the one the first was given); OSError when one cannot be bound."""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # its IPv4 twin has its own
            sock.bind((address[0], port, *address[2:]))
            port = port or int(sock.getsockname()[1])
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
