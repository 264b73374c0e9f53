"""The text of option values: durations, lists, addresses, URLs, and files an option names.

Each parser raises :class:`~authority.errors.ConfigError` naming the option; each
function here reads or writes one value and knows nothing of the others.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from authority.errors import ConfigError

# The options written as durations in whole seconds (90s, 15m, 12h, 30d).
DURATION_OPTIONS = frozenset(
    {
        "access_token_ttl",
        "max_access_token_ttl",
        "refresh_token_ttl",
        "idle_timeout",
        "leeway",
        "purge_interval",
        "key_publish_ahead",
        "key_rotation_interval",
        "session_events_retention",
    }
)


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# The longest any duration may be: 10 years. Every time the authority computes from one
# (a session's end, a token's expiry, a key's activation) must stay within what a
# protobuf Timestamp, a JWT and a 32-bit column hold, for centuries to come; nothing
# sensible is longer.
MAX_DURATION_SECONDS = 3650 * 86400


def parse_duration(option: str, text: str) -> int:
    """Whole seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``30d``, at most
    :data:`MAX_DURATION_SECONDS`."""
    match = _DURATION.match(text)
    if match is None or match.group(2) == "ms":
        raise ConfigError(option, f"{text!r} is not a duration such as 90s, 15m, 12h or 30d")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DURATION_SECONDS:
        raise ConfigError(option, "must be at most 3650d (10 years)")
    return seconds


def parse_seconds(option: str, text: str) -> float:
    """Seconds, fractions allowed, from ``250ms``, ``1.5s``, ``5`` or ``2m``."""
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", text)
    if match is None:
        raise ConfigError(option, f"{text!r} is not a duration such as 250ms, 5s or 2m")
    unit = match.group(2)
    return float(match.group(1)) * (0.001 if unit == "ms" else _UNIT_SECONDS[unit])


def duration_text(seconds: float) -> str:
    """``15m``, ``5s``, ``250ms``: the way every duration is written, whole or fractional."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


_CLASS_LIMIT = re.compile(r"^([A-Za-z0-9._-]{1,64}|\*)=(\d+)$")


def class_limit(entry: str) -> tuple[str, int]:
    """A ``session_limits`` entry, ``CLASS=N``, as its class and limit."""
    match = _CLASS_LIMIT.match(entry.strip())
    if match is None or int(match.group(2)) < 1:
        raise ConfigError(
            "session_limits", f"{entry!r} is not CLASS=N (a class of letters, digits, '.', '_', '-' or '*'; N >= 1)"
        )
    return match.group(1), int(match.group(2))


def proof_audiences(text: str) -> frozenset[str] | None:
    """``require_proof_of_possession`` as the audiences it names: None for every
    audience ("true"), empty for none ("false")."""
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return None
    if word in ("", "false", "no", "off", "0"):
        return frozenset()
    return frozenset(part.strip() for part in text.split(",") if part.strip())


_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (from HOST:PORT) names only this machine: a loopback address or
    ``localhost``. Any other name might resolve anywhere, so it does not count."""
    host = host.strip("[]")
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_https_url(url: str) -> bool:
    """Whether ``url`` is an absolute https URL with a host and no query or fragment, as
    RFC 8414 requires of an issuer identifier."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises for one that is not a number below 65536
    except ValueError:  # an unbalanced IPv6 bracket, a port out of range
        return False
    return parts.scheme == "https" and bool(host) and "?" not in url and "#" not in url


def is_host_port(address: str) -> bool:
    """Whether ``address`` is HOST:PORT, with a port that can be one."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def metrics_address(metrics_listen: str) -> str:
    """``metrics_listen`` as HOST:PORT: a bare port means loopback, never every interface."""
    return f"127.0.0.1:{metrics_listen}" if metrics_listen.isdigit() else metrics_listen


MASK = "***"


# A password given as a query parameter (libpq's and asyncpg's ``?password=``).
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*")


def mask_url(url: str) -> str:
    """The URL with its password, if any, replaced by ``***``: the one in the user
    information and any ``password=`` query parameter."""
    url = _QUERY_PASSWORD.sub(lambda found: found.group(1) + MASK, url)
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.partition(':')[0]}:{MASK}@{location}"


# Option files hold a key, a few API keys or a certificate chain: far less than this.
MAX_OPTION_FILE_BYTES = 1024 * 1024


def read_option_file(option: str, path: str) -> bytes:
    """The bytes of a file an option names; ConfigError naming the option if unreadable or
    larger than :data:`MAX_OPTION_FILE_BYTES` (``/dev/zero`` never ends)."""
    try:
        with open(path, "rb") as file:
            content = file.read(MAX_OPTION_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(option, f"cannot read {path}: {error.strerror}") from None
    if len(content) > MAX_OPTION_FILE_BYTES:
        raise ConfigError(option, f"{path} is larger than {MAX_OPTION_FILE_BYTES // 1024} KiB")
    return content
