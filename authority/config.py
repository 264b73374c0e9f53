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
    # json, text, or auto: text when stderr is a terminal, JSON lines otherwise.
    log_format: str = "auto"
    # HOST:PORT (or a bare PORT, on loopback) for the Prometheus metrics; empty is off.
    metrics_listen: str = ""

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


def _parse(field: dataclasses.Field[Any], text: str) -> Any:
    option = field.name
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
    {"access_token_ttl", "max_access_token_ttl", "refresh_token_ttl", "idle_timeout", "leeway", "purge_interval"}
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
    if not s.issuer:
        raise ConfigError("issuer", "must not be empty")
    if not s.audiences or any(not a for a in s.audiences):
        raise ConfigError("audiences", "must name at least one audience, none empty")
    if not s.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("database_url", "must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be one of DEBUG, INFO, WARNING, ERROR")
    if not _is_host_port(s.listen):
        raise ConfigError("listen", f"{s.listen!r} is not HOST:PORT")
    if s.log_format not in ("json", "text", "auto"):
        raise ConfigError("log_format", "must be one of json, text, auto")
    if s.metrics_listen and not _is_host_port(metrics_address(s.metrics_listen)):
        raise ConfigError("metrics_listen", f"{s.metrics_listen!r} is not HOST:PORT or PORT")


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def metrics_address(metrics_listen: str) -> str:
    """``metrics_listen`` as HOST:PORT: a bare port means loopback, never every interface."""
    return f"127.0.0.1:{metrics_listen}" if metrics_listen.isdigit() else metrics_listen


# Options whose value is a secret, by the words in their name; `authority config` masks them.
_SECRET_WORDS = ("key", "secret", "password")
MASK = "***"


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def mask_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.partition(':')[0]}:{MASK}@{location}"


def describe(settings: Settings) -> dict[str, str]:
    """Every option's effective value as text, in declaration order, secrets masked."""
    shown: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in _DURATIONS:
            text = _duration_text(value)
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        else:
            text = str(value)
        if field.name == "database_url":
            text = mask_url(text)
        elif text and any(word in field.name for word in _SECRET_WORDS):
            text = MASK
        shown[field.name] = text
    return shown


def sources(environ: Mapping[str, str] | None = None, **overrides: str | None) -> dict[str, str]:
    """Where each option's value comes from: ``flag``, ``env`` or ``default``."""
    environ = os.environ if environ is None else environ
    return {
        field.name: "flag" if overrides.get(field.name) is not None
        else "env" if ENV_PREFIX + field.name.upper() in environ
        else "default"
        for field in dataclasses.fields(Settings)
    }
