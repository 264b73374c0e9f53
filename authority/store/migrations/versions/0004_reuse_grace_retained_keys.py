"""Refresh tokens remember what they were traded for (the reuse grace period), and the
public halves of purged signing keys are kept for logout.

Revision ID: 0004_reuse_grace_retained_keys
Revises: 0003_log_epoch
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_reuse_grace_retained_keys"
down_revision = "0003_log_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("rotated_from", sa.String(64), nullable=True))
    op.create_table(
        "retained_public_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("replaced_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retained_public_keys")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("rotated_from")
