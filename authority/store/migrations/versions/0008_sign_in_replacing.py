"""A sign-in that replaces every live session, in one round trip on PostgreSQL.

Under the single-device rule as it comes (REPLACE, no device classes, a total cap of one)
a sign-in signs out every live session of its subject, whichever they are
(``authority.policy.replaces_every_live_session``). Such a sign-in need not read them
before it writes: ``authority_sign_in_replacing`` takes the subject's lock, revokes the
subject's live sessions as it finds them then, and writes the new session, the log
entries, the session events and the notification, in the round trip that commits them.
It decides nothing: which sign-ins may call it is decided in ``authority/policy.py``,
and every other sign-in still reads, decides and calls ``authority_sign_in`` (0007).

Nothing else changes, so replicas of the previous revision keep running beside this one
during a rolling upgrade: they call ``authority_sign_in``, which stays, and both
functions take the same subject lock.

Revision ID: 0008_sign_in_replacing
Revises: 0007_log_without_lock
"""

from alembic import op

revision = "0008_sign_in_replacing"
down_revision = "0007_log_without_lock"
branch_labels = None
depends_on = None

# Every statement in a VOLATILE function takes a fresh snapshot (authority/store/signin.py),
# so the sessions revoked after the lock include those of a sign-in that committed while
# this one waited. They are listed as a decided sign-in lists them: the signing-in
# device's own first (p_by_device_id is that device), then the oldest first. Session
# columns are named, so a column a later revision adds takes its default from a replica
# of this one. 4 is SESSION_ENDED, the contract's number.
SIGN_IN_REPLACING = """
CREATE FUNCTION authority_sign_in_replacing(
    p_lock bigint, p_subject text, p_now double precision, p_idle_cutoff double precision,
    p_session jsonb, p_refresh_hash text, p_reason text, p_cause smallint,
    p_by_device_id text, p_by_device_name text, p_caller text, p_signed_in jsonb
) RETURNS TABLE (o_sequence bigint, o_session_id text, o_token_id text,
                 o_expires_at double precision, o_cause smallint, o_by_device_id text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_replaced text[];
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    PERFORM pg_advisory_xact_lock(p_lock);
    WITH ended AS (
        UPDATE sessions s SET revoked_at = p_now
        WHERE s.subject = p_subject AND s.revoked_at IS NULL AND s.expires_at > p_now
          AND (p_idle_cutoff IS NULL OR s.last_used_at > p_idle_cutoff)
        RETURNING s.session_id, s.device_id, s.created_at
    )
    SELECT coalesce(array_agg(e.session_id::text ORDER BY e.device_id IS DISTINCT FROM p_by_device_id,
                                                         e.created_at, e.session_id), '{}')
        INTO v_replaced FROM ended e;
    INSERT INTO sessions (session_id, subject, device_id, audience, claims, access_ttl, created_at,
                          expires_at, last_used_at, access_expires_at, revoked_at, device_class,
                          device_name, key_thumbprint)
        SELECT r.session_id, r.subject, r.device_id, r.audience, r.claims, r.access_ttl, r.created_at,
               r.expires_at, r.last_used_at, r.access_expires_at, r.revoked_at, r.device_class,
               r.device_name, r.key_thumbprint
        FROM jsonb_populate_record(NULL::sessions, p_session) r;
    INSERT INTO refresh_tokens (token_hash, session_id, issued_at, key_thumbprint)
        VALUES (p_refresh_hash, p_session->>'session_id', p_now, p_session->>'key_thumbprint');
    INSERT INTO session_event_log (kind, occurred_at, subject, session_id, device_id, device_class,
                                   device_name, replaced_session_ids, cause, caller)
        SELECT 4, p_now, s.subject, s.session_id, s.device_id, s.device_class, s.device_name, '',
               p_cause, p_caller
        FROM sessions s WHERE s.session_id = ANY (v_replaced)
        ORDER BY array_position(v_replaced, s.session_id::text);
    INSERT INTO session_event_log (kind, occurred_at, subject, session_id, device_id, device_class,
                                   device_name, replaced_session_ids, cause, caller)
        SELECT e.kind, e.occurred_at, e.subject, e.session_id, e.device_id, e.device_class,
               e.device_name, array_to_string(v_replaced, ' '), e.cause, e.caller
        FROM jsonb_to_record(p_signed_in) AS e(kind smallint, occurred_at double precision, subject text,
             session_id text, device_id text, device_class text, device_name text, cause smallint,
             caller text);
    RETURN QUERY
        INSERT INTO revocation_log AS r (session_id, subject, reason, revoked_at, expires_at, cause,
                                         replaced_by_device_id, replaced_by_device_name)
        SELECT s.session_id, s.subject, p_reason, p_now, s.access_expires_at, p_cause, p_by_device_id,
               p_by_device_name
        FROM sessions s WHERE s.session_id = ANY (v_replaced)
        ORDER BY array_position(v_replaced, s.session_id::text)
        RETURNING r.sequence, r.session_id::text, r.token_id::text, r.expires_at, r.cause,
                  r.replaced_by_device_id::text;
    PERFORM pg_notify('authority_revocations', '');
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite sign-ins read in their own transaction
        op.execute(SIGN_IN_REPLACING)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION authority_sign_in_replacing")
