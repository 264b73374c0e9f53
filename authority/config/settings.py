"""The authority's settings: one frozen object, every option with a safe default.

Every option has a default that is safe for a newcomer (an embedded SQLite file,
loopback only). A :class:`Settings` is checked as it is made
(:mod:`authority.config.checks`): an invalid value raises
:class:`~authority.errors.ConfigError` naming the option, so the server stops at start
rather than misbehaving later.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum

from authority import credentials
from authority.config.checks import check, check_security
from authority.config.values import class_limit, proof_audiences, read_option_file
from authority.errors import ConfigError


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
    # Two reads of the log start at least this far apart: under a stream of revocations
    # one read carries many entries instead of one read, and its round trip, per entry.
    revocation_min_read_interval: float = 0.01
    # How long a REVOKED answer waits for why and by which device (read from the store on
    # that rare path, authority/explanations.py); a read not done by then is left out of
    # that answer, and the next one has it.
    explanation_wait: float = 0.25
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
    # HTTP connections (authority/http/connections.py): a client has this long to send a
    # request's head, from the connection's handshake or the last answer (so an idle
    # keep-alive connection is closed then too), as long again for its body, as long for
    # a TLS handshake, and as long to resume reading an answer.
    http_read_timeout: float = 60.0
    # The most HTTP connections open at once, handshakes included; past it a new one gets
    # 503 and is closed. Lowered, with a warning, when the open-file limit cannot hold it.
    http_max_connections: int = 1000
    # Devices (authority/sessions.py): CLASS=N limits, the policy acting within a class;
    # "*" is the class of an empty device_class and of every class not named. Empty: no
    # classes, only the total cap.
    session_limits: tuple[str, ...] = ()
    # How long the session event log keeps an event.
    session_events_retention: int = 30 * 24 * 3600
    # `authority serve` runs this many processes on one port (authority/api/workers.py);
    # "auto" is one per core. 1 serves from the process itself, as before workers existed.
    workers: int = 1
    # The event loop `authority serve` runs on (authority/api/loops.py): "auto" is uvloop
    # where it is installed, else asyncio's own; "uvloop" insists on it; "asyncio".
    event_loop: str = "auto"
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
        check(self)
        check_security(self)

    @property
    def default_audience(self) -> str:
        """The audience of a token whose sign-in named none."""
        return self.audiences[0]

    @property
    def class_limits(self) -> dict[str, int]:
        """``session_limits`` as a map from class to its limit (empty: no classes)."""
        return dict(class_limit(entry) for entry in self.session_limits)

    @property
    def total_session_cap(self) -> int:
        """The most live sessions a subject may have, over every class."""
        if self.max_sessions_per_subject:
            return self.max_sessions_per_subject
        return sum(self.class_limits.values()) or 1

    def proof_required_for(self, audience: str) -> bool:
        """Whether a sign-in for ``audience`` must come with a proof of possession."""
        audiences = proof_audiences(self.require_proof_of_possession)
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
            raw = read_option_file("api_keys_file", self.api_keys_file)
            try:
                text = raw.decode("utf-8-sig")  # an editor's byte-order mark is no part of the first entry
            except UnicodeDecodeError:
                raise ConfigError("api_keys_file", f"{self.api_keys_file} is not UTF-8 text") from None
            entries += credentials.parse_api_keys_file(text)
        return entries

    def key_encryption_key_bytes(self) -> bytes | None:
        """The key-encryption key (32 bytes), or None when none is configured."""
        text = self.key_encryption_key.strip()
        option = "key_encryption_key"
        if self.key_encryption_key_file:
            option = "key_encryption_key_file"
            raw = read_option_file(option, self.key_encryption_key_file)
            text = raw.decode(errors="replace").strip("\ufeff \t\r\n")  # a BOM or a line end is no part of it
            if not text:
                # A file named for the key that reads empty (emptied, or a pipe read twice)
                # must never mean "no key", which would store signing keys in plaintext.
                raise ConfigError(option, f"{self.key_encryption_key_file} is empty: it must hold the key")
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
