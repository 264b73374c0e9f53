"""Device-bound sessions: the RFC 7638 thumbprint of the device key a session is bound
to (DPoP, RFC 9449); empty for a session of bearer tokens.

Revision ID: 0006_device_key_binding
Revises: 0005_devices
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_device_key_binding"
down_revision = "0005_devices"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Sessions made before this revision are bearer sessions ("").
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("key_thumbprint", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("key_thumbprint")
