"""The logs without the cluster-wide lock: positions ordered by writing transaction.

Until this revision every writer to the revocation and session event logs held one
advisory lock until it committed, so entries became visible in sequence order. From
here on there is no such lock. On PostgreSQL a log position is the writing
transaction's id times 2^20 plus a counter (see ``authority/store/log_order.py`` for
why a reader then never skips an entry that commits late).

Followers of the older code rely on the lock: they would skip entries. So the tables
move (``revocations`` becomes ``revocation_log``, ``session_events`` becomes
``session_event_log``) and, on PostgreSQL, the old names become views that refuse
every read and write with a message saying why: a replica still running the older
code stops following (and its view of the log goes stale, so it fails closed) instead
of skipping entries. See "Sign-ins, the logs and rolling upgrades" in the README.

A refresh token also carries its session's key thumbprint from here on, and on
PostgreSQL a trigger refuses one that does not carry the session's: the older code,
which knows nothing of device binding (revision 0006 came with it unused), would trade a
bound session's refresh token without a proof and issue bearer tokens for it. During a
rolling upgrade its refreshes of bound sessions fail instead.

It also adds ``authority_sign_in``, the sign-in's compare-and-write in one round trip
(authority/store/signin.py says why, and why it holds no rule of the policy).

Revision ID: 0007_log_without_lock
Revises: 0006_device_key_binding
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_log_without_lock"
down_revision = "0006_device_key_binding"
branch_labels = None
depends_on = None

# Bits of a position below the transaction id: authority.store.log_order.COUNTER_BITS.
_BITS = 20
_LOGS = (("revocations", "revocation_log"), ("session_events", "session_event_log"))
REFUSAL = (
    "the authority logs moved to revocation_log and session_event_log (schema revision "
    "0007_log_without_lock): writers no longer take the log lock that this older authority "
    "relies on to read them without skipping entries; upgrade this replica (README: Sign-ins, the logs and rolling upgrades)"
)

# The sign-in's compare-and-write (authority/store/signin.py says why it is a function and
# why it holds no rule of the policy): the subject's lock, the check that its live sessions
# are still those the decision was made on, then the decision written as given.
SIGN_IN = """
CREATE FUNCTION authority_sign_in(
    p_lock bigint, p_subject text, p_now double precision, p_idle_cutoff double precision,
    p_live text[], p_session jsonb, p_refresh_hash text, p_replaced text[], p_reason text,
    p_cause smallint, p_by_device_id text, p_by_device_name text, p_events jsonb
) RETURNS TABLE (o_written boolean, o_sequence bigint, o_session_id text, o_token_id text,
                 o_expires_at double precision, o_cause smallint, o_by_device_id text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    PERFORM pg_advisory_xact_lock(p_lock);
    IF (SELECT coalesce(array_agg(s.session_id::text ORDER BY s.session_id COLLATE "C"), '{}')
        FROM sessions s
        WHERE s.subject = p_subject AND s.revoked_at IS NULL AND s.expires_at > p_now
          AND (p_idle_cutoff IS NULL OR s.last_used_at > p_idle_cutoff)) IS DISTINCT FROM p_live THEN
        RETURN QUERY SELECT false, NULL::bigint, NULL::text, NULL::text, NULL::double precision,
                            NULL::smallint, NULL::text;
        RETURN;
    END IF;
    -- Columns a session record may not carry yet take their defaults.
    INSERT INTO sessions SELECT (jsonb_populate_record(NULL::sessions,
        '{"device_class": "", "device_name": "", "key_thumbprint": ""}'::jsonb || p_session)).*;
    INSERT INTO refresh_tokens (token_hash, session_id, issued_at, key_thumbprint)
        VALUES (p_refresh_hash, p_session->>'session_id', p_now, coalesce(p_session->>'key_thumbprint', ''));
    RETURN QUERY SELECT true, NULL::bigint, NULL::text, NULL::text, NULL::double precision,
                        NULL::smallint, NULL::text;
    RETURN QUERY
        WITH ended AS (
            UPDATE sessions s SET revoked_at = p_now
            WHERE s.session_id = ANY (p_replaced) AND s.revoked_at IS NULL
            RETURNING s.session_id, s.subject, s.access_expires_at
        )
        INSERT INTO revocation_log AS r (session_id, subject, reason, revoked_at, expires_at, cause,
                                         replaced_by_device_id, replaced_by_device_name)
        SELECT e.session_id, e.subject, p_reason, p_now, e.access_expires_at, p_cause, p_by_device_id,
               p_by_device_name
        FROM ended e ORDER BY array_position(p_replaced, e.session_id::text)
        RETURNING true, r.sequence, r.session_id::text, r.token_id::text, r.expires_at, r.cause,
                  r.replaced_by_device_id::text;
    INSERT INTO session_event_log (kind, occurred_at, subject, session_id, device_id, device_class,
                                   device_name, replaced_session_ids, cause, caller)
        SELECT e.kind, e.occurred_at, e.subject, e.session_id, e.device_id, e.device_class,
               e.device_name, e.replaced_session_ids, e.cause, e.caller
        FROM jsonb_to_recordset(p_events) AS e(kind smallint, occurred_at double precision, subject text,
             session_id text, device_id text, device_class text, device_name text,
             replaced_session_ids text, cause smallint, caller text);
    PERFORM pg_notify('authority_revocations', '');
END $$
"""


BINDING_REFUSAL = (
    "the session of this refresh token is bound to a device key (schema revision 0007_log_without_lock): "
    "this older authority cannot check its proof; upgrade this replica (README: Sign-ins, the logs and rolling upgrades)"
)
BINDING_GUARD = f"""
CREATE FUNCTION authority_refresh_binding_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key_thumbprint IS DISTINCT FROM
       (SELECT s.key_thumbprint FROM sessions s WHERE s.session_id = NEW.session_id) THEN
        RAISE EXCEPTION '{BINDING_REFUSAL}' USING ERRCODE = 'feature_not_supported';
    END IF;
    RETURN NEW;
END $$
"""


def upgrade() -> None:
    # Existing refresh tokens take their session's thumbprint ("" for every session made
    # before device binding was used).
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("key_thumbprint", sa.String(64), nullable=False, server_default=""))
    op.execute(
        "UPDATE refresh_tokens SET key_thumbprint = (SELECT s.key_thumbprint FROM sessions s"
        " WHERE s.session_id = refresh_tokens.session_id)"
    )
    for old, new in _LOGS:
        op.rename_table(old, new)
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one writer at a time: its logs stay in commit order
    op.execute(BINDING_GUARD)
    op.execute(
        "CREATE TRIGGER authority_refresh_binding_guard BEFORE INSERT ON refresh_tokens"
        " FOR EACH ROW EXECUTE FUNCTION authority_refresh_binding_guard()"
    )
    op.execute(
        f"""
        CREATE FUNCTION authority_old_log_refused() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'feature_not_supported';
        END $$
        """
    )
    for old, new in _LOGS:
        bind = op.get_bind()
        sequence = bind.execute(sa.text(f"SELECT pg_get_serial_sequence('{new}', 'sequence')")).scalar_one()
        # Positions of this revision must come after every older one.
        newest, first = bind.execute(
            sa.text(f"SELECT coalesce(max(sequence), 0), pg_current_xact_id()::text::bigint << {_BITS} FROM {new}")
        ).one()
        if newest >= first:
            raise RuntimeError(f"{new} holds positions beyond {first}; this revision cannot order after them")
        op.execute(
            f"ALTER TABLE {new} ALTER COLUMN sequence SET DEFAULT "
            f"(pg_current_xact_id()::text::bigint << {_BITS}) + (nextval('{sequence}') & {(1 << _BITS) - 1})"
        )
        op.execute(
            f"""
            CREATE FUNCTION authority_old_{old}() RETURNS SETOF {new} LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'feature_not_supported';
            END $$
            """
        )
        op.execute(f"CREATE VIEW {old} AS SELECT * FROM authority_old_{old}()")
        op.execute(
            f"CREATE TRIGGER authority_old_{old}_refused INSTEAD OF INSERT OR UPDATE OR DELETE ON {old}"
            " FOR EACH ROW EXECUTE FUNCTION authority_old_log_refused()"
        )
    op.execute(SIGN_IN)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER authority_refresh_binding_guard ON refresh_tokens")
        op.execute("DROP FUNCTION authority_refresh_binding_guard()")
        op.execute("DROP FUNCTION authority_sign_in")
    for old, new in _LOGS:
        if postgres:
            op.execute(f"DROP VIEW {old}")
            op.execute(f"DROP FUNCTION authority_old_{old}()")
            sequence = op.get_bind().execute(
                sa.text(f"SELECT pg_get_serial_sequence('{new}', 'sequence')")
            ).scalar_one()
            # Positions stay ahead of the ones made here.
            op.execute(f"SELECT setval('{sequence}', (SELECT coalesce(max(sequence), 1) FROM {new}))")
            op.execute(f"ALTER TABLE {new} ALTER COLUMN sequence SET DEFAULT nextval('{sequence}')")
        op.rename_table(new, old)
    if postgres:
        op.execute("DROP FUNCTION authority_old_log_refused()")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("key_thumbprint")
