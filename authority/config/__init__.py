"""The authority's settings: one frozen object, read from ``AUTHORITY_*`` variables and flags.

This package is the only reader of the environment. Every option has a default that
is safe for a newcomer (an embedded SQLite file, loopback only); an invalid value
raises :class:`~authority.errors.ConfigError` naming the option, so the server stops at
start rather than misbehaving later.

One module per concern, every public name importable from here:

- :mod:`authority.config.settings`: :class:`Settings` and its enums;
- :mod:`authority.config.values`: the text of one value (durations, addresses, URLs, files);
- :mod:`authority.config.environment`: variables and flags, and where each value came from;
- :mod:`authority.config.checks`: what a Settings must pass as it is made.
"""

from authority.config.checks import (
    EVENT_LOOPS,
    MAX_PROOF_AGE_SECONDS,
    MAX_REUSE_GRACE_SECONDS,
    MAX_WORKERS,
    WRITABLE_SESSION_ATTRS,
)
from authority.config.environment import (
    ENV_PREFIX,
    OTHER_VARIABLES,
    describe,
    known_variables,
    load_settings,
    sources,
    unknown_variables,
)
from authority.config.settings import Algorithm, Policy, Settings
from authority.config.values import (
    MASK,
    MAX_DURATION_SECONDS,
    duration_text,
    is_https_url,
    is_loopback,
    mask_url,
    metrics_address,
    parse_duration,
    parse_seconds,
    read_option_file,
)

__all__ = [
    "ENV_PREFIX",
    "EVENT_LOOPS",
    "MASK",
    "MAX_DURATION_SECONDS",
    "MAX_PROOF_AGE_SECONDS",
    "MAX_REUSE_GRACE_SECONDS",
    "MAX_WORKERS",
    "OTHER_VARIABLES",
    "WRITABLE_SESSION_ATTRS",
    "Algorithm",
    "Policy",
    "Settings",
    "describe",
    "duration_text",
    "is_https_url",
    "is_loopback",
    "known_variables",
    "load_settings",
    "mask_url",
    "metrics_address",
    "parse_duration",
    "parse_seconds",
    "read_option_file",
    "sources",
    "unknown_variables",
]
