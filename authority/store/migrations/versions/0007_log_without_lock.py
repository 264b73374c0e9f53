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
of skipping entries. See "Rolling upgrades" in the README.

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
    "relies on to read them without skipping entries; upgrade this replica (README: Rolling upgrades)"
)


def upgrade() -> None:
    for old, new in _LOGS:
        op.rename_table(old, new)
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one writer at a time: its logs stay in commit order
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


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
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
