"""Devices: a session's class and name, why a session was revoked (and by which device),
and the session event log.

Revision ID: 0005_devices
Revises: 0004_reuse_grace_retained_keys
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_devices"
down_revision = "0004_reuse_grace_retained_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("device_class", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("device_name", sa.String(256), nullable=False, server_default=""))
    # Revocations made before this revision have no recorded cause (UNSPECIFIED).
    with op.batch_alter_table("revocations") as batch:
        batch.add_column(sa.Column("cause", sa.SmallInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("replaced_by_device_id", sa.String(256), nullable=True))
        batch.add_column(sa.Column("replaced_by_device_name", sa.String(256), nullable=True))
    op.create_index("ix_revocations_session_id", "revocations", ["session_id"])
    op.create_table(
        "session_events",
        sa.Column("sequence", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("occurred_at", sa.Double, nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(256), nullable=False),
        sa.Column("device_class", sa.String(64), nullable=False),
        sa.Column("device_name", sa.String(256), nullable=False),
        sa.Column("replaced_session_ids", sa.Text, nullable=False),
        sa.Column("cause", sa.SmallInteger, nullable=False),
        sa.Column("caller", sa.String(256), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_session_events_occurred_at", "session_events", ["occurred_at"])
    op.create_index("ix_session_events_subject", "session_events", ["subject"])


def downgrade() -> None:
    op.drop_table("session_events")
    op.drop_index("ix_revocations_session_id", "revocations")
    with op.batch_alter_table("revocations") as batch:
        batch.drop_column("replaced_by_device_name")
        batch.drop_column("replaced_by_device_id")
        batch.drop_column("cause")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("device_name")
        batch.drop_column("device_class")
