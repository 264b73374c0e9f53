"""The revocation log's epoch: a random id per database, so a restored copy can be renewed.

Revision ID: 0003_log_epoch
Revises: 0002
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003_log_epoch"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "log_epoch",
        # One row: id 1.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.String(32), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "epoch": secrets.token_hex(8)}])


def downgrade() -> None:
    op.drop_table("log_epoch")
