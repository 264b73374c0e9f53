"""The tables, as SQLAlchemy Core metadata. Migrations create them; queries use them.

Times are seconds since the epoch as double precision: the same on SQLite and
PostgreSQL, precise to the microsecond, and directly comparable with JWT times.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("private_key", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # From then on the key signs; until then it is only published, so that every
    # replica and consumer knows it before the first token it signs arrives.
    sa.Column("activates_at", sa.Double, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("device_id", sa.String(256), nullable=False),
    sa.Column("audience", sa.String(256), nullable=False),
    # Extra claims as JSON text, carried into every access token the session issues.
    sa.Column("claims", sa.Text, nullable=False),
    sa.Column("access_ttl", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    # When the refresh token, and so the session, expires.
    sa.Column("expires_at", sa.Double, nullable=False),
    # The last sign-in or refresh, for the idle timeout.
    sa.Column("last_used_at", sa.Double, nullable=False),
    # The expiry of the newest access token the session issued.
    sa.Column("access_expires_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    # Devices (migration 0005): the class the policy counts the session in, fixed at
    # sign-in, and the login service's display label (personal data: erased by forget).
    sa.Column("device_class", sa.String(64), nullable=False, server_default=""),
    sa.Column("device_name", sa.String(256), nullable=False, server_default=""),
    # Device binding (migration 0006): the RFC 7638 thumbprint of the device key the
    # session's tokens are bound to (cnf.jkt); "" for bearer tokens.
    sa.Column("key_thumbprint", sa.String(64), nullable=False, server_default=""),
    sa.Index("ix_sessions_subject", "subject"),
    sa.Index("ix_sessions_expires_at", "expires_at"),
    sa.Index("ix_sessions_access_expires_at", "access_expires_at"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    # SHA-256 of the token, hex: the token itself is never stored.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), sa.ForeignKey("sessions.session_id", ondelete="CASCADE"), nullable=False),
    sa.Column("issued_at", sa.Double, nullable=False),
    # Set when the token is traded; presenting it again is theft.
    sa.Column("used_at", sa.Double, nullable=True),
    # The hash of the token this one was traded for (None for a sign-in's), so that a
    # retry of that token within the reuse grace period is told from a theft.
    sa.Column("rotated_from", sa.String(64), nullable=True),
    # The session's key_thumbprint, written with every refresh token (migration 0007). On
    # PostgreSQL a trigger refuses a refresh token whose value is not its session's: an
    # older authority, which knows nothing of device binding, cannot trade a bound
    # session's refresh token without a proof during a rolling upgrade.
    sa.Column("key_thumbprint", sa.String(64), nullable=False, server_default=""),
    sa.Index("ix_refresh_tokens_session_id", "session_id"),
)

# The revocation log (named revocations before migration 0007; on PostgreSQL that name is
# now a view refusing the older code, which would skip entries: see store/log_order.py).
revocations = sa.Table(
    "revocation_log",
    metadata,
    # The log's order: strictly increasing, never reused; on PostgreSQL the writing
    # transaction's id first (the column default of migration 0007, store/log_order.py).
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("token_id", sa.String(64), nullable=True),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("reason", sa.String(256), nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=False),
    # When everything the entry revokes has expired; the purge drops it after that.
    sa.Column("expires_at", sa.Double, nullable=False),
    # Why (a RevocationCause number), and for a replacement the device that signed in.
    sa.Column("cause", sa.SmallInteger, nullable=False, server_default="0"),
    sa.Column("replaced_by_device_id", sa.String(256), nullable=True),
    sa.Column("replaced_by_device_name", sa.String(256), nullable=True),
    sa.Index("ix_revocations_expires_at", "expires_at"),
    # A refused token's explanation is read by session (the rare path).
    sa.Index("ix_revocations_session_id", "session_id"),
    sqlite_autoincrement=True,
)

# The append-only session event log: sign-ins, refusals, reused refresh tokens, ended
# sessions. Never a token or a key; purged after session_events_retention.
session_events = sa.Table(
    "session_event_log",
    metadata,
    sa.Column(
        "sequence",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("occurred_at", sa.Double, nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("session_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(256), nullable=False),
    sa.Column("device_class", sa.String(64), nullable=False),
    sa.Column("device_name", sa.String(256), nullable=False),
    # Space-separated session ids (they are base64url, never holding a space).
    sa.Column("replaced_session_ids", sa.Text, nullable=False),
    sa.Column("cause", sa.SmallInteger, nullable=False),
    sa.Column("caller", sa.String(256), nullable=False),
    sa.Index("ix_session_events_occurred_at", "occurred_at"),
    sa.Index("ix_session_events_subject", "subject"),
    sqlite_autoincrement=True,
)

# The revocation log's epoch (one row, id 1): a random id chosen when the schema was made,
# renewed by `authority migrate --renew-epoch` after a restore. See Store.log_state.
log_epoch = sa.Table(
    "log_epoch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("epoch", sa.String(32), nullable=False),
)

# The signing keys' set version (one row, id 1): raised by triggers on every change to
# signing_keys (migration 0011), read with the keys. See KeyQueries.versioned_keys.
key_set_version = sa.Table(
    "key_set_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

retained_public_keys = sa.Table(
    "retained_public_keys",
    metadata,
    # The public half of a signing key the purge deleted: it verifies logout requests
    # only (never a token's validity, never published) until every session that can
    # hold a token it signed has ended.
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    # SubjectPublicKeyInfo PEM: nothing secret.
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    # When its successor began signing: the last token it signed is older.
    sa.Column("replaced_at", sa.Double, nullable=False),
)
