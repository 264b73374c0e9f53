"""A fault-injecting TCP proxy for tests, on asyncio streams in the test's own event loop.

    proxy = await TcpProxy.start("127.0.0.1", 5432)   # listens on 127.0.0.1:proxy.port
    proxy.cut()          # resets every open connection; new ones are accepted and reset at once
    proxy.resume()       # forwards again
    proxy.delay(0.1)     # adds latency to every chunk, in both directions
    proxy.hold_ends()    # a connection the server ends stays open to the client, until
    proxy.release_ends() # ... this closes them (proxy.held counts them)
    await proxy.close()

Connections are reset (SO_LINGER 0, then abort), not shut down politely, so both ends
see the failure at once instead of waiting for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes the connection under ``writer`` with a TCP reset, at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to a target until told to fail."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._cut = False
        self._latency = 0.0
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        # Connections the server ended, held open to the client (hold_ends).
        self.held = 0
        self._holding = False
        self._released = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, target_host: str, target_port: int) -> TcpProxy:
        """A proxy listening on a free loopback port, forwarding to the target."""
        proxy = cls(target_host, target_port)
        proxy._server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
        proxy.port = proxy._server.sockets[0].getsockname()[1]
        return proxy

    def cut(self) -> None:
        """Resets every open connection in both directions and refuses new ones."""
        self._cut = True
        self.release_ends()
        for client, upstream in list(self._links):
            _reset(client)
            _reset(upstream)
        self._links.clear()

    def resume(self) -> None:
        """Accepts and forwards connections again."""
        self._cut = False

    def hold_ends(self) -> None:
        """From now on, a connection the server ends is not closed to the client: what the
        server sent last (a FATAL error, say) reaches the client, the end itself does not,
        until :meth:`release_ends`. What the client sends meanwhile is dropped."""
        self._holding = True
        self._released.clear()

    def release_ends(self) -> None:
        """Closes the held connections, and holds no more."""
        self._holding = False
        self._released.set()

    def delay(self, seconds: float) -> None:
        """Holds every chunk back ``seconds`` before forwarding it (0 for none)."""
        self._latency = seconds

    async def close(self) -> None:
        """Stops listening, resets every connection and waits for the handlers to end."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._handlers:  # each ends on its own once its connections are reset
            await asyncio.wait(set(self._handlers), timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(writer)
            return
        if self._cut:  # cut while we were connecting
            _reset(writer)
            _reset(up_writer)
            return
        link = (writer, up_writer)
        self._links.add(link)
        pipes = [asyncio.create_task(self._pipe(reader, up_writer)), asyncio.create_task(self._pipe(up_reader, writer))]
        try:
            done, _ = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if self._holding and pipes[1] in done:  # the server ended it: hold the client side
                self.held += 1
                up_writer.transport.abort()
                await self._released.wait()
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._links.discard(link)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies one direction until end of stream or a broken connection."""
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                if self._latency:
                    await asyncio.sleep(self._latency)
                if writer.transport.is_closing():
                    return
                writer.write(data)
                await writer.drain()
