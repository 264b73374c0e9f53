"""The authority's settings: one frozen object, read from ``AUTHORITY_*`` variables and flags.

This is the only module that reads the environment. Every option has a default that
is safe for a newcomer (an embedded SQLite file, loopback only); an invalid value
raises :class:`~authority.errors.ConfigError` naming the option, so the server stops at
start rather than misbehaving later.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import enum
import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from authority import credentials
from authority.errors import ConfigError

ENV_PREFIX = "AUTHORITY_"
# The project's documented variables that are not settings: the admin commands' target
# and API key (also the demo's), and the tests' PostgreSQL. Every Settings field is known
# as AUTHORITY_<FIELD>; anything else with the prefix is reported as a likely typo.
OTHER_VARIABLES = frozenset({"AUTHORITY_TARGET", "AUTHORITY_API_KEY", "AUTHORITY_TEST_POSTGRES_URL"})


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
    # The total cap on a subject's live sessions. 0: not set, which means 1, or with
    # session_limits the sum of the class limits.
    max_sessions_per_subject: int = 0
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
    # Caller authentication (authority/credentials.py, authority/api/callers.py); certificates and keys are PEM files.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Clients must present a certificate from this CA (mutual TLS).
    tls_client_ca_file: str = ""
    # IDENTITY=ROLE[+ROLE]: a client certificate's subject CN or SAN and its roles.
    client_roles: tuple[str, ...] = ()
    # NAME:ROLE[+ROLE]:sha256:HEX, one per calling service: hashes only, never keys.
    api_keys: tuple[str, ...] = ()
    api_keys_file: str = ""
    allow_unauthenticated_callers: bool = False
    # Encrypts private signing keys at rest: base64 of 32 random bytes, or a file of it.
    key_encryption_key: str = dataclasses.field(default="", repr=False)
    key_encryption_key_file: str = ""
    allow_plaintext_keys: bool = False
    # json, text, or auto: text when stderr is a terminal, JSON lines otherwise.
    log_format: str = "auto"
    # Log one OK line in N of the token checks (ValidateToken, ext_authz Check); 1: every
    # line. Other statuses are always logged, and the metrics count every call.
    log_sample_validate: int = 1
    # HOST:PORT (or a bare PORT, on loopback) for the Prometheus metrics; empty is off.
    metrics_listen: str = ""
    # High availability (README "Running at scale"). LISTEN/NOTIFY and the session-level
    # maintenance lock need a connection of their own: direct to the primary, or through
    # session pooling. Empty: database_url.
    listen_database_url: str = ""
    # database_url goes through a transaction pooler (PgBouncer pool_mode = transaction):
    # no statement caches, timeouts set per transaction; needs listen_database_url.
    database_transaction_pooling: bool = False
    # Refresh-token reuse grace (authority/sessions.py): the refresh token just traded,
    # presented again within this many seconds (a retry after a lost reply), gets a new
    # pair on the same session instead of revoking it. 0 keeps reuse always fatal.
    refresh_token_reuse_grace: float = 5.0
    # HTTP services (authority/http/): HOST:PORT for JWKS, metadata, introspection and
    # revocation over HTTP, empty is off; it follows the gRPC port's TLS and callers.
    http_listen: str = ""
    # The https base URL the HTTP endpoints are reached at, for the RFC 8414 metadata;
    # empty: the issuer, when it is an https URL.
    public_url: str = ""
    # Devices (authority/sessions.py): CLASS=N limits, the policy acting within a class;
    # "*" is the class of an empty device_class and of every class not named. Empty: no
    # classes, only the total cap.
    session_limits: tuple[str, ...] = ()
    # How long the session event log keeps an event.
    session_events_retention: int = 30 * 24 * 3600
    # `authority serve` runs this many processes on one port (authority/api/workers.py);
    # "auto" is one per core. 1 serves from the process itself, as before workers existed.
    workers: int = 1
    # Device-bound tokens (README "Device-bound tokens", authority/binding.py): a DPoP
    # proof's iat may be this far from now either way, and its jti is remembered as long.
    proof_max_age: float = 60.0
    # "false" (proofs optional), "true" (every sign-in needs one), or the audiences whose
    # sign-ins need one, comma-separated.
    require_proof_of_possession: str = "false"
    # The most proof jtis remembered at once per process; when full, proofs are refused
    # rather than a jti forgotten before its window ends.
    proof_replay_cache_size: int = 100_000

    def __post_init__(self) -> None:
        _check(self)
        _check_security(self)

    @property
    def default_audience(self) -> str:
        """The audience of a token whose sign-in named none."""
        return self.audiences[0]

    @property
    def class_limits(self) -> dict[str, int]:
        """``session_limits`` as a map from class to its limit (empty: no classes)."""
        return dict(_class_limit(entry) for entry in self.session_limits)

    @property
    def total_session_cap(self) -> int:
        """The most live sessions a subject may have, over every class."""
        if self.max_sessions_per_subject:
            return self.max_sessions_per_subject
        return sum(self.class_limits.values()) or 1

    def proof_required_for(self, audience: str) -> bool:
        """Whether a sign-in for ``audience`` must come with a proof of possession."""
        audiences = _proof_audiences(self.require_proof_of_possession)
        return audiences is None or audience in audiences

    def idle_cutoff(self, now: float) -> float | None:
        """Sessions last used before this have ended idle; None when there is no idle timeout."""
        return now - self.idle_timeout if self.idle_timeout else None

    @property
    def authenticates_callers(self) -> bool:
        """Whether callers must prove who they are (API keys or client certificates)."""
        return bool(self.api_keys or self.api_keys_file or self.client_roles)

    def api_key_entries(self) -> list[str]:
        """Every configured API key entry: ``api_keys``, then the lines of ``api_keys_file``."""
        entries = list(self.api_keys)
        if self.api_keys_file:
            entries += credentials.parse_api_keys_file(read_option_file("api_keys_file", self.api_keys_file).decode())
        return entries

    def key_encryption_key_bytes(self) -> bytes | None:
        """The key-encryption key (32 bytes), or None when none is configured."""
        text = self.key_encryption_key
        option = "key_encryption_key"
        if self.key_encryption_key_file:
            option = "key_encryption_key_file"
            text = read_option_file(option, self.key_encryption_key_file).decode(errors="replace").strip()
        if not text:
            return None
        try:
            kek = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            kek = b""
        if len(kek) != 32:
            # Never echo the value: it is the secret that guards every signing key.
            raise ConfigError(option, "must be 32 random bytes, base64-encoded (openssl rand -base64 32)")
        return kek


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
        if option == "workers" and text.strip().lower() == "auto":
            return os.cpu_count() or 1
        if option in _DURATIONS:
            return parse_duration(option, text)
        try:
            return int(text)
        except ValueError:
            raise ConfigError(option, f"{text!r} is not a whole number") from None
    if field.type == "bool":
        if text.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if text.strip().lower() in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError(option, f"{text!r} is not true or false")
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
        "session_events_retention",
    }
)

_CLASS_LIMIT = re.compile(r"^([A-Za-z0-9._-]{1,64}|\*)=(\d+)$")


def _class_limit(entry: str) -> tuple[str, int]:
    match = _CLASS_LIMIT.match(entry.strip())
    if match is None or int(match.group(2)) < 1:
        raise ConfigError(
            "session_limits", f"{entry!r} is not CLASS=N (a class of letters, digits, '.', '_', '-' or '*'; N >= 1)"
        )
    return match.group(1), int(match.group(2))


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


# The longest any duration option may be: 10 years. Every time the authority computes
# from one (a session's end, a token's expiry) must stay within what a protobuf
# Timestamp, a JWT and a 32-bit column hold, for centuries to come; nothing sensible
# is longer.
MAX_DURATION_SECONDS = 3650 * 86400
_SECOND_OPTIONS = ("max_staleness", "revocation_poll_interval", "refresh_token_reuse_grace", "proof_max_age")
# More workers than this is a typo, not a machine: each holds its own pools and mirror.
MAX_WORKERS = 64
# A retry comes within seconds; a longer grace only widens what a stolen token can do.
MAX_REUSE_GRACE_SECONDS = 60.0
# A proof is made for one request; a long window only widens the replay that reaches
# another process (each keeps its own replay cache) and the memory the cache needs.
MAX_PROOF_AGE_SECONDS = 600.0


def _proof_audiences(text: str) -> frozenset[str] | None:
    """``require_proof_of_possession`` as the audiences it names: None for every
    audience ("true"), empty for none ("false")."""
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return None
    if word in ("", "false", "no", "off", "0"):
        return frozenset()
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _check_representable(s: Settings) -> None:
    """Refuses, at start, a duration whose results could not be represented."""
    for option in (*sorted(_DURATIONS), *_SECOND_OPTIONS):
        value = getattr(s, option)
        if not math.isfinite(value) or value > MAX_DURATION_SECONDS:
            raise ConfigError(option, "must be at most 3650d (10 years)")


def known_variables() -> frozenset[str]:
    """Every ``AUTHORITY_*`` variable the project reads."""
    return frozenset(ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)) | OTHER_VARIABLES


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning for each ``AUTHORITY_*`` variable that nothing reads, naming the closest
    known one: a typo (``AUTHORITY_MAX_SESSION_PER_SUBJECT``) must not go unnoticed."""
    environ = os.environ if environ is None else environ
    known = sorted(known_variables())
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        warnings.append(f"{name} is not a setting of the authority and is ignored{hint}")
    return warnings


def _check(s: Settings) -> None:
    def positive(option: str, value: int) -> None:
        if value <= 0:
            raise ConfigError(option, "must be greater than zero")

    _check_representable(s)

    for option in ("access_token_ttl", "max_access_token_ttl", "refresh_token_ttl", "purge_interval",
                   "purge_batch_size", "session_events_retention", "log_sample_validate"):
        positive(option, getattr(s, option))
    if not 1 <= s.workers <= MAX_WORKERS:
        raise ConfigError("workers", f"must be between 1 and {MAX_WORKERS}, or auto (one per core)")
    if s.max_sessions_per_subject < 0:
        raise ConfigError("max_sessions_per_subject", "must not be negative (0: 1, or the sum of session_limits)")
    classes = [_class_limit(entry)[0] for entry in s.session_limits]
    if len(set(classes)) != len(classes):
        raise ConfigError("session_limits", "names a class twice")
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
    _check_high_availability(s)
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be one of DEBUG, INFO, WARNING, ERROR")
    if not _is_host_port(s.listen):
        raise ConfigError("listen", f"{s.listen!r} is not HOST:PORT")
    if s.log_format not in ("json", "text", "auto"):
        raise ConfigError("log_format", "must be one of json, text, auto")
    if s.metrics_listen and not _is_host_port(metrics_address(s.metrics_listen)):
        raise ConfigError("metrics_listen", f"{s.metrics_listen!r} is not HOST:PORT or PORT")
    if not 0 <= s.refresh_token_reuse_grace <= MAX_REUSE_GRACE_SECONDS:
        raise ConfigError("refresh_token_reuse_grace", "must be between 0 (strict) and 60 seconds")
    if s.http_listen and not _is_host_port(s.http_listen):
        raise ConfigError("http_listen", f"{s.http_listen!r} is not HOST:PORT")
    if s.public_url and not is_https_url(s.public_url):
        raise ConfigError("public_url", f"{s.public_url!r} is not an https URL without query or fragment")
    _check_proofs(s)


def _check_proofs(s: Settings) -> None:
    if not 0 < s.proof_max_age <= MAX_PROOF_AGE_SECONDS:
        raise ConfigError("proof_max_age", "must be greater than zero and at most 10m")
    if s.proof_replay_cache_size < 1:
        raise ConfigError("proof_replay_cache_size", "must be at least 1")
    audiences = _proof_audiences(s.require_proof_of_possession)
    unknown = sorted((audiences or frozenset()) - set(s.audiences))
    if unknown:
        raise ConfigError(
            "require_proof_of_possession",
            f"{unknown[0]!r} is not one of the audiences; give false, true, or audiences of AUTHORITY_AUDIENCES",
        )


# The authority writes: every connection must land on a server that takes writes.
WRITABLE_SESSION_ATTRS = ("read-write", "primary")


def _check_high_availability(s: Settings) -> None:
    for option in ("database_url", "listen_database_url"):
        url = getattr(s, option)
        attrs = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("target_session_attrs", [])
        if any(value not in WRITABLE_SESSION_ATTRS for value in attrs):
            raise ConfigError(option, "target_session_attrs must be read-write or primary: the authority writes")
    if s.listen_database_url and not s.listen_database_url.startswith("postgresql+asyncpg://"):
        raise ConfigError("listen_database_url", "must start with postgresql+asyncpg:// (LISTEN is PostgreSQL's)")
    if s.database_transaction_pooling:
        if not s.database_url.startswith("postgresql+asyncpg://"):
            raise ConfigError("database_transaction_pooling", "is for PostgreSQL behind a pooler only")
        if not s.listen_database_url:
            # Notifications would go to whichever client holds a server connection at
            # the time: silently lost. Refuse rather than fall back without saying so.
            raise ConfigError(
                "listen_database_url",
                "must be set under database_transaction_pooling: LISTEN/NOTIFY and the maintenance lock need a "
                "session of their own (direct to the primary, or PgBouncer session pooling)",
            )


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


def read_option_file(option: str, path: str) -> bytes:
    """The bytes of a file an option names; ConfigError naming the option if unreadable."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise ConfigError(option, f"cannot read {path}: {error.strerror}") from None


def _check_security(s: Settings) -> None:
    """Caller authentication, TLS and key encryption: consistent, and files readable."""
    for option in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        if getattr(s, option):
            read_option_file(option, getattr(s, option))
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise ConfigError("tls_key_file" if s.tls_cert_file else "tls_cert_file",
                          "tls_cert_file and tls_key_file go together")
    if s.tls_client_ca_file and not s.tls_cert_file:
        raise ConfigError("tls_client_ca_file", "mutual TLS needs tls_cert_file and tls_key_file too")
    if s.client_roles and not s.tls_client_ca_file:
        raise ConfigError("client_roles", "needs tls_client_ca_file: only a verified certificate has an identity")
    for index, entry in enumerate(s.client_roles, 1):
        try:
            credentials.parse_client_role(entry)
        except ValueError as problem:
            raise ConfigError("client_roles", f"entry {index}: {problem}") from None
    names: set[str] = set()
    entries = s.api_key_entries()
    if s.api_keys_file and len(entries) == len(s.api_keys):
        raise ConfigError("api_keys_file", f"{s.api_keys_file} holds no entries")
    for index, entry in enumerate(entries):
        in_file = index >= len(s.api_keys)
        option = "api_keys_file" if in_file else "api_keys"
        number = index + 1 - (len(s.api_keys) if in_file else 0)
        try:
            name = credentials.parse_api_key(entry).name
        except ValueError as problem:
            raise ConfigError(option, f"entry {number}: {problem}") from None
        if name in names:
            raise ConfigError(option, f"the name {name!r} has two keys; rotate by giving the new key another name")
        names.add(name)
    if s.tls_client_ca_file and not s.authenticates_callers:
        raise ConfigError("client_roles", "must give a client identity a role when tls_client_ca_file is set")
    # The HTTP port follows the gRPC port's rule: without caller authentication, loopback only.
    for option in ("listen", "http_listen"):
        _check_loopback_rule(s, option)
    if s.key_encryption_key and s.key_encryption_key_file:
        raise ConfigError("key_encryption_key_file", "set key_encryption_key or key_encryption_key_file, not both")
    s.key_encryption_key_bytes()


def _check_loopback_rule(s: Settings, option: str) -> None:
    address = getattr(s, option)
    if not address:
        return
    host = address.rpartition(":")[0]
    if not s.authenticates_callers and not s.allow_unauthenticated_callers and not is_loopback(host):
        raise ConfigError(
            option,
            f"{host} is not a loopback address, and no caller authentication is configured (api_keys, "
            "api_keys_file or client_roles): anyone who reaches it could issue and revoke tokens. Configure "
            "callers, or set allow_unauthenticated_callers (--allow-unauthenticated-callers) to serve it anyway",
        )


def is_https_url(url: str) -> bool:
    """Whether ``url`` is an absolute https URL with a host and no query or fragment, as
    RFC 8414 requires of an issuer identifier."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises for one that is not a number below 65536
    except ValueError:  # an unbalanced IPv6 bracket, a port out of range
        return False
    return parts.scheme == "https" and bool(host) and "?" not in url and "#" not in url


def _is_host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def metrics_address(metrics_listen: str) -> str:
    """``metrics_listen`` as HOST:PORT: a bare port means loopback, never every interface."""
    return f"127.0.0.1:{metrics_listen}" if metrics_listen.isdigit() else metrics_listen


# Options whose value is a secret (or, for api_keys, better not shown); `authority config`
# masks them. Paths to files that hold secrets are shown: they say where, not what.
_SECRET_OPTIONS = frozenset({"key_encryption_key", "api_keys"})
MASK = "***"


def duration_text(seconds: float) -> str:
    """``15m``, ``5s``, ``250ms``: the way every duration is written, whole or fractional."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


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
        if field.name in _DURATIONS or field.type == "float":
            text = duration_text(value)
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, enum.Enum):
            text = str(value.value)
        else:
            text = str(value)
        if field.name in ("database_url", "listen_database_url"):
            text = mask_url(text)
        elif text and field.name in _SECRET_OPTIONS:
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
