"""ADE profiles, their definitions at ABM per token, and the wanted assignment of each device

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 02:40:00.000000

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abm_profiles",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_abm_profiles_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_abm_profiles")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_abm_profiles_tenant_id_name"),
    )
    op.create_table(
        "abm_profile_definitions",
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=36), nullable=False),
        sa.Column("profile_uuid", sa.String(length=64), nullable=False),
        sa.Column("defined_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["abm_profiles.id"],
            name=op.f("fk_abm_profile_definitions_profile_id_abm_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["abm_tokens.id"],
            name=op.f("fk_abm_profile_definitions_token_id_abm_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("profile_id", "token_id", name=op.f("pk_abm_profile_definitions")),
    )
    op.create_table(
        "abm_assignments",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("serial_number", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("explicit", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_try_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["abm_profiles.id"],
            name=op.f("fk_abm_assignments_profile_id_abm_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_abm_assignments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "serial_number", name=op.f("pk_abm_assignments")),
    )
    with op.batch_alter_table("abm_device_history", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("abm_device_history", schema=None) as batch_op:
        batch_op.drop_column("reason")
    op.drop_table("abm_assignments")
    op.drop_table("abm_profile_definitions")
    op.drop_table("abm_profiles")
