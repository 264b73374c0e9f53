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
import json
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
    """The metadata sent with every call."""
    return ((API_KEY_HEADER, api_key),) if api_key else None
