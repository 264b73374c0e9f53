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

from authority.errors import ConfigError


def refuse_taken_port(listen: str) -> None:
    """Raises ``ConfigError("listen", "HOST:PORT is already in use")`` when another socket
    holds the port of ``listen`` on any address its host resolves to. Port 0 is never taken.

    The probe binds a plain socket without SO_REUSEPORT and lets it go. Any holder refuses
    that bind, even one that set SO_REUSEPORT itself; SO_REUSEADDR (as grpc sets it) lets
    the connections a previous run left in TIME_WAIT pass, since they hold nothing.
    """
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # an unresolvable host is grpc's to refuse, with its own words
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ConfigError("listen", f"{listen} is already in use") from None
                # Anything else (an address this machine does not have) is left to grpc.
