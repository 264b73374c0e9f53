"""The sign-in functions without their repeated reads of the sessions table.

``authority_sign_in_replacing`` (0008) revoked the subject's live sessions in one
statement and then found them again by id, twice: for their session events and for
their log entries (``WHERE session_id = ANY (...)``). PL/pgSQL keeps a statement's
plan on its connection until the table's statistics change, and a generic plan made
while the sessions table was still small scans the whole table: on a new database both
lookups read every session ever written, on every sign-in, until autovacuum first
analyzed the table. The function now keeps the revoked rows as the
``UPDATE`` returns them and writes the events and the log entries from that array, in
the order it lists them.

``authority_sign_in`` (0007) inserted the new session with
``SELECT (jsonb_populate_record(...)).*``, which PostgreSQL expands into one call of the
function per column: fourteen parses of the session's JSON for one row. It now calls it
once, in ``FROM``, and names the columns, as 0008 does.

Arguments, answers and what the functions write are unchanged. Only their bodies
change, so replicas of the previous revision keep running beside this one during a
rolling upgrade and call them as before.

Revision ID: 0009_sign_in_without_rereads
Revises: 0008_sign_in_replacing
"""

import runpy
from pathlib import Path

from alembic import op

revision = "0009_sign_in_without_rereads"
down_revision = "0008_sign_in_replacing"
branch_labels = None
depends_on = None

# As in 0008: every statement takes a fresh snapshot, and the sessions revoked after the
# lock are listed the signing-in device's own first, then the oldest first. The array
# holds whole session rows; unnest() WITH ORDINALITY gives them back in that order.
SIGN_IN_REPLACING = """
CREATE OR REPLACE FUNCTION authority_sign_in_replacing(
    p_lock bigint, p_subject text, p_now double precision, p_idle_cutoff double precision,
    p_session jsonb, p_refresh_hash text, p_reason text, p_cause smallint,
    p_by_device_id text, p_by_device_name text, p_caller text, p_signed_in jsonb
) RETURNS TABLE (o_sequence bigint, o_session_id text, o_token_id text,
                 o_expires_at double precision, o_cause smallint, o_by_device_id text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_ended sessions[];
BEGIN
    PERFORM set_config('lock_timeout', '5s', true);
    PERFORM pg_advisory_xact_lock(p_lock);
    WITH ended AS (
        UPDATE sessions s SET revoked_at = p_now
        WHERE s.subject = p_subject AND s.revoked_at IS NULL AND s.expires_at > p_now
          AND (p_idle_cutoff IS NULL OR s.last_used_at > p_idle_cutoff)
        RETURNING s
    )
    SELECT coalesce(array_agg(e.s ORDER BY (e.s).device_id IS DISTINCT FROM p_by_device_id,
                                           (e.s).created_at, (e.s).session_id), '{}')
        INTO v_ended FROM ended e;
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
        SELECT 4, p_now, e.subject, e.session_id, e.device_id, e.device_class, e.device_name, '',
               p_cause, p_caller
        FROM unnest(v_ended) WITH ORDINALITY AS e ORDER BY e.ordinality;
    INSERT INTO session_event_log (kind, occurred_at, subject, session_id, device_id, device_class,
                                   device_name, replaced_session_ids, cause, caller)
        SELECT e.kind, e.occurred_at, e.subject, e.session_id, e.device_id, e.device_class,
               e.device_name, (SELECT coalesce(string_agg(r.session_id, ' ' ORDER BY r.ordinality), '')
                               FROM unnest(v_ended) WITH ORDINALITY AS r), e.cause, e.caller
        FROM jsonb_to_record(p_signed_in) AS e(kind smallint, occurred_at double precision, subject text,
             session_id text, device_id text, device_class text, device_name text, cause smallint,
             caller text);
    RETURN QUERY
        INSERT INTO revocation_log AS r (session_id, subject, reason, revoked_at, expires_at, cause,
                                         replaced_by_device_id, replaced_by_device_name)
        SELECT e.session_id, e.subject, p_reason, p_now, e.access_expires_at, p_cause, p_by_device_id,
               p_by_device_name
        FROM unnest(v_ended) WITH ORDINALITY AS e ORDER BY e.ordinality
        RETURNING r.sequence, r.session_id::text, r.token_id::text, r.expires_at, r.cause,
                  r.replaced_by_device_id::text;
    PERFORM pg_notify('authority_revocations', '');
END $$
"""

# As in 0007 but for the insert of the new session: the record a replica sends may not
# carry the newer columns yet (they take their defaults), and the columns are named.
SIGN_IN = """
CREATE OR REPLACE FUNCTION authority_sign_in(
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
    INSERT INTO sessions (session_id, subject, device_id, audience, claims, access_ttl, created_at,
                          expires_at, last_used_at, access_expires_at, revoked_at, device_class,
                          device_name, key_thumbprint)
        SELECT r.session_id, r.subject, r.device_id, r.audience, r.claims, r.access_ttl, r.created_at,
               r.expires_at, r.last_used_at, r.access_expires_at, r.revoked_at, r.device_class,
               r.device_name, r.key_thumbprint
        FROM jsonb_populate_record(NULL::sessions,
            '{"device_class": "", "device_name": "", "key_thumbprint": ""}'::jsonb || p_session) r;
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


def _or_replace(function: str) -> str:
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SIGN_IN)
        op.execute(SIGN_IN_REPLACING)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        versions = Path(__file__).parent
        op.execute(_or_replace(runpy.run_path(str(versions / "0007_log_without_lock.py"))["SIGN_IN"]))
        op.execute(_or_replace(runpy.run_path(str(versions / "0008_sign_in_replacing.py"))["SIGN_IN_REPLACING"]))
