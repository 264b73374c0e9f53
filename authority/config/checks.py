"""The checks a :class:`~authority.config.settings.Settings` passes as it is made.

Each refuses, with :class:`~authority.errors.ConfigError` naming the option, a value the
authority could not run with: out of range, inconsistent with another option, a file
that cannot be read, or a listener open to anyone without caller authentication.
"""

from __future__ import annotations

import math
import urllib.parse
from typing import TYPE_CHECKING

from authority import credentials
from authority.config.database_urls import check_postgres_query, check_sqlite_query
from authority.config.values import (
    DURATION_OPTIONS,
    MAX_DURATION_SECONDS,
    class_limit,
    is_host_port,
    is_https_url,
    is_loopback,
    metrics_address,
    proof_audiences,
    read_option_file,
)
from authority.errors import ConfigError

# event_loop: see authority/api/loops.py.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")

if TYPE_CHECKING:
    # Only for annotations: Settings runs these checks as it is made.
    from authority.config.settings import Settings

_SECOND_OPTIONS = (
    "max_staleness", "revocation_poll_interval", "revocation_min_read_interval", "refresh_token_reuse_grace",
    "proof_max_age", "explanation_wait",
)
# An HTTP client slower than this is holding a connection, not sending a request.
MAX_HTTP_READ_TIMEOUT_SECONDS = 3600
# More HTTP connections than this is a typo: each holds a file descriptor and buffers.
MAX_HTTP_CONNECTIONS = 1_000_000
# More workers than this is a typo, not a machine: each holds its own pools and mirror.
MAX_WORKERS = 64
# A retry comes within seconds; a longer grace only widens what a stolen token can do.
MAX_REUSE_GRACE_SECONDS = 60.0
# An answer waits for its explanation no longer than a caller's deadline is likely to be.
MAX_EXPLANATION_WAIT_SECONDS = 5.0
# A proof is made for one request; a long window only widens the replay that reaches
# another process (each keeps its own replay cache) and the memory the cache needs.
MAX_PROOF_AGE_SECONDS = 600.0


# The authority writes: every connection must land on a server that takes writes.
WRITABLE_SESSION_ATTRS = ("read-write", "primary")


def check(s: Settings) -> None:
    """Every option in range and consistent with the others (security aside: :func:`check_security`)."""
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
    classes = [class_limit(entry)[0] for entry in s.session_limits]
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
    # At most the poll: so every poll interval of 10 ms or more takes the default.
    if not 0 <= s.revocation_min_read_interval <= s.revocation_poll_interval:
        raise ConfigError("revocation_min_read_interval", "must be 0 or more, and at most revocation_poll_interval")
    if not 0 <= s.explanation_wait <= MAX_EXPLANATION_WAIT_SECONDS:
        raise ConfigError("explanation_wait", "must be between 0 (never wait) and 5 seconds")
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
    for option in ("database_url", "listen_database_url"):
        _check_database_url(option, getattr(s, option))
    _check_high_availability(s)
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level", "must be one of DEBUG, INFO, WARNING, ERROR")
    if not is_host_port(s.listen):
        raise ConfigError("listen", f"{s.listen!r} is not HOST:PORT")
    if s.log_format not in ("json", "text", "auto"):
        raise ConfigError("log_format", "must be one of json, text, auto")
    if s.event_loop not in EVENT_LOOPS:
        raise ConfigError("event_loop", f"must be one of {', '.join(EVENT_LOOPS)}")
    if s.metrics_listen and not is_host_port(metrics_address(s.metrics_listen)):
        raise ConfigError("metrics_listen", f"{s.metrics_listen!r} is not HOST:PORT or PORT")
    if not 0 <= s.refresh_token_reuse_grace <= MAX_REUSE_GRACE_SECONDS:
        raise ConfigError("refresh_token_reuse_grace", "must be between 0 (strict) and 60 seconds")
    if s.http_listen and not is_host_port(s.http_listen):
        raise ConfigError("http_listen", f"{s.http_listen!r} is not HOST:PORT")
    if not 0 < s.http_read_timeout <= MAX_HTTP_READ_TIMEOUT_SECONDS:
        raise ConfigError("http_read_timeout", "must be greater than zero and at most 1h")
    if not 1 <= s.http_max_connections <= MAX_HTTP_CONNECTIONS:
        raise ConfigError("http_max_connections", f"must be between 1 and {MAX_HTTP_CONNECTIONS:,}")
    if s.public_url and not is_https_url(s.public_url):
        raise ConfigError("public_url", f"{s.public_url!r} is not an https URL without query or fragment")
    _check_proofs(s)


def _check_representable(s: Settings) -> None:
    """Refuses, at start, a duration whose results could not be represented."""
    for option in (*sorted(DURATION_OPTIONS), *_SECOND_OPTIONS):
        value = getattr(s, option)
        if not math.isfinite(value) or value > MAX_DURATION_SECONDS:
            raise ConfigError(option, "must be at most 3650d (10 years)")


def _check_proofs(s: Settings) -> None:
    if not 0 < s.proof_max_age <= MAX_PROOF_AGE_SECONDS:
        raise ConfigError("proof_max_age", "must be greater than zero and at most 10m")
    if s.proof_replay_cache_size < 1:
        raise ConfigError("proof_replay_cache_size", "must be at least 1")
    audiences = proof_audiences(s.require_proof_of_possession)
    unknown = sorted((audiences or frozenset()) - set(s.audiences))
    if unknown:
        raise ConfigError(
            "require_proof_of_possession",
            f"{unknown[0]!r} is not one of the audiences; give false, true, or audiences of AUTHORITY_AUDIENCES",
        )


def _check_database_url(option: str, url: str) -> None:
    """Refuses, at start and in one line, a URL the drivers would fail on later with a
    traceback. The URL itself is never quoted: it may hold a password."""
    if not url:
        return
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number from 0 to 65535)
    except ValueError:
        raise ConfigError(option, "has a host or port that does not parse (a port is 1 to 65535, an IPv6 "
                          "address is in brackets)") from None
    if url.startswith("sqlite"):
        if parts.path in ("", "/", "/:memory:") or "mode=memory" in parts.query:
            raise ConfigError(option, "names no file: an in-memory SQLite database would lose every session at "
                              "a restart, and each connection would see a database of its own")
        check_sqlite_query(option, url)
        return
    if "sslmode" in urllib.parse.parse_qs(parts.query):
        raise ConfigError(option, "sslmode is libpq's: asyncpg takes ssl=require (or verify-ca, verify-full)")
    check_postgres_query(option, url)


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


def check_security(s: Settings) -> None:
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
