"""ADE challenges: the serial an enrollment token (and the identity SCEP issued for it) is bound to

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:30:00.000000

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.add_column(sa.Column("ade_serial", sa.String(length=64), nullable=True))
    with op.batch_alter_table("device_certs") as batch:
        batch.add_column(sa.Column("ade_serial", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_certs") as batch:
        batch.drop_column("ade_serial")
    with op.batch_alter_table("enrollment_tokens") as batch:
        batch.drop_column("ade_serial")
