"""Keys are published before they sign: signing_keys.activates_at; and an index for the purge.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("activates_at", sa.Double, nullable=True))
    # Keys made before this revision have been signing since they were created.
    op.execute("UPDATE signing_keys SET activates_at = created_at")
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("activates_at", existing_type=sa.Double, nullable=False)
    # The purge looks for sessions whose last access token has expired.
    op.create_index("ix_sessions_access_expires_at", "sessions", ["access_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_sessions_access_expires_at", "sessions")
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("activates_at")
