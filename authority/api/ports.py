"""Whether the gRPC port is free, asked before anything else happens at start.

grpc's own refusal of a busy port is a log line ("Address already in use") and a bare
``RuntimeError``, and it comes only when the port is added. :func:`refuse_taken_port`
says it plainly, before the database is touched. The authority binds with SO_REUSEPORT
off, so a second server never shares a port; workers that share one port on purpose
(SO_REUSEPORT among themselves) call this first, before the first of them binds, so that
a port another process already holds is refused rather than silently shared.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from authority.errors import ConfigError


def refuse_taken_port(listen: str, option: str = "listen") -> None:
    """Raises ``ConfigError(option, "HOST:PORT is already in use")`` when another socket
    holds the port of ``listen`` on any address its host resolves to. Port 0 is never taken.

    The probe binds a plain socket without SO_REUSEPORT and lets it go. Any holder refuses
    that bind, even one that set SO_REUSEPORT itself; SO_REUSEADDR (as grpc sets it) lets
    the connections a previous run left in TIME_WAIT pass, since they hold nothing.
    """
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    for family, kind, proto, address in _addresses(host, port):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError(option, f"{listen} is already in use") from None
                # Anything else (an address this machine does not have) is left to grpc.


def reserve_shared_port(listen: str, option: str = "listen") -> tuple[str, list[socket.socket]]:
    """Checks ``listen`` with :func:`refuse_taken_port`, then holds its port for workers
    that share it: returns ``listen`` with the port bound (port 0 becomes the one picked)
    and the holding sockets, which the caller closes when the last worker has stopped.

    The holders are bound with SO_REUSEPORT and never listen, so they take no connection,
    yet while a worker restarts no other program can bind the port and take its place.
    """
    refuse_taken_port(listen, option)
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    held: list[socket.socket] = []
    try:
        for family, kind, proto, address in _addresses(host, port):
            holder = socket.socket(family, kind, proto)
            held.append(holder)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # As grpc binds "[::]": one socket for IPv6 and IPv4 alike.
                holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                holder.bind((address[0], port, *address[2:]))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError(option, f"{host}:{port} is already in use") from None
                if error.errno == errno.EADDRNOTAVAIL:
                    continue  # an address this machine does not have: grpc says so
                raise ConfigError(option, f"cannot listen on {listen}") from error
            # Port 0: every address takes the port the first one was given.
            port = port or int(holder.getsockname()[1])
    except BaseException:
        for holder in held:
            holder.close()
        raise
    return f"{host}:{port}", held


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, tuple[Any, ...]]]:
    """Where ``host`` binds (every address it resolves to); none when it does not resolve,
    which grpc then refuses with its own words."""
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return []
    return [(family, kind, proto, tuple(address)) for family, kind, proto, _, address in found]
