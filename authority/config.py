"""The authority's settings: one frozen object, read from ``AUTHORITY_*`` variables and flags.

This is the only module that reads the environment. Every option has a default that
is safe for a newcomer (an embedded SQLite file, loopback only); an invalid value
raises :class:`~authority.errors.ConfigError` naming the option, so the server stops at
start rather than misbehaving later.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from collections.abc import Mapping
from typing import Any

from authority.errors import ConfigError

ENV_PREFIX = "AUTHORITY_"


class Policy(enum.Enum):
    """What a sign-in does when the subject already has as many sessions as allowed."""

    REPLACE = "replace"
    REJECT = "reject"


class Algorithm(enum.Enum):
    """The asymmetric signature algorithms the authority signs with (JOSE names)."""

    EDDSA = "EdDSA"
    ES256 = "ES256"
    RS256 = "RS256"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the authority can be configured with; durations are in seconds."""

    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite+aiosqlite:///authority.db"
    issuer: str = "token-authority"
    # The first is the default audience of issued tokens; tokens are issued only
    # for these.
    audiences: tuple[str, ...] = ("token-authority",)
    signing_algorithm: Algorithm = Algorithm.EDDSA
    access_token_ttl: int = 15 * 60
    max_access_token_ttl: int = 60 * 60
    refresh_token_ttl: int = 30 * 24 * 3600
    # 0 disables it; otherwise a session with no refresh for this long ends.
    idle_timeout: int = 0
    max_sessions_per_subject: int = 1
    default_policy: Policy = Policy.REPLACE
    leeway: int = 30
    purge_interval: int = 60
    purge_batch_size: int = 1000
    log_level: str = "INFO"
    # A replica whose view of the revocation log has not been confirmed for this long
    # answers ValidateToken with UNAVAILABLE rather than vouch for a token.
    max_staleness: float = 5.0
    # How often each replica reads the revocation log when no notification woke it.
    revocation_poll_interval: float = 1.0
    # A new signing key is published this long before it signs.
    key_publish_ahead: int = 60
    # 0: keys rotate only with `authority keys rotate`; otherwise this often, automatically.
    key_rotation_interval: int = 0

    def __post_init__(self) -> None:
        _check(self)

    @property
    def default_audience(self) -> str:
        """The audience of a token whose sign-in named none."""
        return self.audiences[0]

    def idle_cutoff(self, now: float) -> float | None:
        """Sessions last used before this have ended idle; None when there is no idle timeout."""
        return now - self.idle_timeout if self.idle_timeout else None


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(option: str, text: str) -> int:
    """Whole seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``30d``."""
    match = _DURATION.match(text)
    if match is None or match.group(2) == "ms":
        raise ConfigError(option, f"{text!r} is not a duration such as 90s, 15m, 12h or 30d")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_seconds(option: str, text: str) -> float:
    """Seconds, fractions allowed, from ``250ms``, ``1.5s``, ``5`` or ``2m``."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", text)
    if match is None:
        raise ConfigError(option, f"{text!r} is not a duration such as 250ms, 5s or 2m")
    unit = match.group(2)
    return float(match.group(1)) * (0.001 if unit == "ms" else _UNIT_SECONDS[unit])


def _parse(field: dataclasses.Field[Any], text: str) -> Any:
    option = field.name
    if field.type == "float":
        return parse_seconds(option, text)
    if field.type == "int":
        if option in _DURATIONS:
            return parse_duration(option, text)
        try:
            return int(text)
        except ValueError:
            raise ConfigError(option, f"{text!r} is not a whole number") from None
    if field.type == "tuple[str, ...]":
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if field.type == "Policy":
        try:
            return Policy(text.lower())
        except ValueError:
            raise ConfigError(option, f"{text!r} is not one of {', '.join(p.value for p in Policy)}") from None
    if field.type == "Algorithm":
        by_name = {a.value.lower(): a for a in Algorithm}
        if text.lower() not in by_name:
            raise ConfigError(option, f"{text!r} is not one of {', '.join(a.value for a in Algorithm)}")
        return by_name[text.lower()]
    return text


_DURATIONS = frozenset(
    {
        "access_token_ttl",
        "max_access_token_ttl",
        "refresh_token_ttl",
        "idle_timeout",
        "leeway",
        "purge_interval",
        "key_publish_ahead",
        "key_rotation_interval",
    }
)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
    """Settings from ``AUTHORITY_<OPTION>`` variables, then command-line overrides.

    Overrides are the text of flags as given (``None`` means the flag was not given),
    so a flag and its environment variable are parsed and checked the same way.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        text = overrides.get(field.name)
        if text is None:
            text = environ.get(ENV_PREFIX + field.name.upper())
        if text is not None:
            values[field.name] = _parse(field, text)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "is not an option")
    return Settings(**values)


def _check(s: Settings) -> None:
    def positive(option: str, value: int) -> None:
        if value <= 0:
            raise ConfigError(option, "must be greater than zero")

    for option in ("access_token_ttl", "max_access_token_ttl", "refresh_token_ttl", "purge_interval",
                   "purge_batch_size", "max_sessions_per_subject"):
        positive(option, getattr(s, option))
    if s.leeway < 0 or s.leeway > 300:
        raise ConfigError("leeway", "must be between 0 and 300 seconds")
    if s.idle_timeout < 0:
        raise ConfigError("idle_timeout", "must not be negative (0 disables it)")
    if s.access_token_ttl > s.max_access_token_ttl:
        raise ConfigError("access_token_ttl", "must not exceed max_access_token_ttl")
    if s.max_access_token_ttl > s.refresh_token_ttl:
        raise ConfigError("max_access_token_ttl", "must not exceed refresh_token_ttl")
    if s.idle_timeout and s.idle_timeout < s.max_access_token_ttl + s.leeway:
        # An idle-ended session must hold no access token that still validates, or
        # ending it would leave a token that nothing revokes.
        raise ConfigError("idle_timeout", "must be 0 or at least max_access_token_ttl + leeway")
    if s.max_staleness <= 0:
        raise ConfigError("max_staleness", "must be greater than zero")
    if not 0 < s.revocation_poll_interval < s.max_staleness:
        raise ConfigError("revocation_poll_interval", "must be greater than zero and less than max_staleness")
    if s.key_publish_ahead < 0:
        raise ConfigError("key_publish_ahead", "must not be negative")
    if s.key_rotation_interval < 0:
        raise ConfigError("key_rotation_interval", "must not be negative (0 disables it)")
    if s.key_rotation_interval and s.key_rotation_interval <= s.key_publish_ahead:
        raise ConfigError("key_rotation_interval", "must be 0 or longer than key_publish_ahead")
    if not s.issuer:
        raise ConfigError("issuer", "must not be empty")
    if not s.audiences or any(not a for a in s.audiences):
        raise ConfigError("audiences", "must name at least one audience, none empty")
    if not s.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("database_url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be one of DEBUG, INFO, WARNING, ERROR")
    host, sep, port = s.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("listen", f"{s.listen!r} is not HOST:PORT")
