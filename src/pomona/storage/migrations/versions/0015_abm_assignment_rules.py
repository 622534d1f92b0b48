"""ADE assignment rules (by model, device family, order number), the rule an assignment came from, and
a device's order number

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 21:40:00.000000

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abm_assignment_rules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["abm_profiles.id"],
            name=op.f("fk_abm_assignment_rules_profile_id_abm_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_abm_assignment_rules_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_abm_assignment_rules")),
    )
    op.create_index("ix_abm_assignment_rules_tenant_id", "abm_assignment_rules", ["tenant_id"], unique=False)
    with op.batch_alter_table("abm_assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rule_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("abm_devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("order_number", sa.String(length=64), server_default="", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("abm_devices", schema=None) as batch_op:
        batch_op.drop_column("order_number")
    with op.batch_alter_table("abm_assignments", schema=None) as batch_op:
        batch_op.drop_column("rule_id")
    op.drop_index("ix_abm_assignment_rules_tenant_id", table_name="abm_assignment_rules")
    op.drop_table("abm_assignment_rules")
