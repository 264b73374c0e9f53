"""How the clients talk to the authority: channel options, retries, deadlines, metadata.

Retries are gRPC's own (a ``retryPolicy`` in the channel's service config), on
UNAVAILABLE only and only for calls that are safe to repeat: ValidateToken and
GetSigningKeys read, and RevokeToken of an already revoked target changes nothing. A
sign-in or a refresh is never repeated behind the caller's back: a refresh whose answer
was lost and that was sent again would be taken for a stolen refresh token.

``round_robin`` spreads calls over every address a ``dns:///host:port`` target resolves
to, so one name can front several authority replicas.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import warnings
from collections.abc import Sequence
from typing import Any

SERVICE = "authority.v1.TokenAuthority"
IDEMPOTENT_METHODS = ("ValidateToken", "GetSigningKeys", "RevokeToken")
API_KEY_HEADER = "x-api-key"


@dataclasses.dataclass(frozen=True)
class ChannelSettings:
    """Channel and call settings; the defaults suit a consumer on the same network."""

    # Every unary call's deadline, retries included.
    timeout: float = 2.0
    # Attempts per idempotent call on UNAVAILABLE (gRPC caps this at 5).
    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    # Keepalive pings while calls are open, so a dead peer is noticed on a quiet stream.
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    load_balancing: str = "round_robin"

    def service_config(self) -> dict[str, Any]:
        """The gRPC service config: load balancing and the retry policy."""
        return {
            "loadBalancingConfig": [{self.load_balancing: {}}],
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": method} for method in IDEMPOTENT_METHODS],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": f"{self.initial_backoff}s",
                        "maxBackoff": f"{self.max_backoff}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }

    def options(self) -> list[tuple[str, Any]]:
        """Channel arguments for ``grpc.*_channel`` and ``grpc.aio.*_channel``."""
        return [
            ("grpc.service_config", json.dumps(self.service_config())),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", int(self.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout * 1000)),
            # Pings only while calls are open: idle pings get a client cut off by servers
            # with gRPC's default ping policy.
            ("grpc.keepalive_permit_without_calls", 0),
        ]


def call_metadata(api_key: str | None) -> Sequence[tuple[str, str]] | None:
    """The metadata sent with every call; ValueError, never quoting it, for an API key that
    metadata cannot carry (gRPC would fail every call with INTERNAL)."""
    if not api_key:
        return None
    if not api_key.isascii() or not api_key.isprintable() or api_key != api_key.strip():
        raise ValueError(
            "api_key must be printable ASCII without spaces at its ends (one read from a file may end in a newline)"
        )
    return ((API_KEY_HEADER, api_key),)


class PlaintextApiKeyWarning(UserWarning):
    """An API key is about to cross the network unencrypted."""


def _is_loopback(target: str) -> bool:
    """Whether a gRPC target names only this machine (``unix:`` sockets included)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    address = target.split("///", 1)[-1].removeprefix("ipv4:").removeprefix("ipv6:")
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host.lower() in ("localhost", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_plaintext_api_key(target: str | None, credentials: object | None, api_key: str | None) -> None:
    """Warns (:class:`PlaintextApiKeyWarning`) when ``api_key`` would go in the clear to
    another machine: a target that is not loopback, with no TLS ``credentials``.

    Anyone on the path could read the key and then issue and revoke tokens as this
    service. Pass ``credentials=grpc.ssl_channel_credentials(...)``.
    """
    if api_key and credentials is None and target is not None and not _is_loopback(target):
        warnings.warn(
            f"the API key would be sent unencrypted to {target}: pass credentials=grpc.ssl_channel_credentials() "
            "for an authority on another machine",
            PlaintextApiKeyWarning,
            stacklevel=3,
        )
