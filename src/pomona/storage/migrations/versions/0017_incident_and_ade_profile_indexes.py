"""Indexes for the incident summary (events by step and time) and the ADE profile page (assignments by
profile, ABM devices by token and profile UUID)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 01:05:00.000000

"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_events_tenant_step_at", "events", ["tenant_id", "step", "at"]),
    (
        "ix_abm_assignments_tenant_profile",
        "abm_assignments",
        ["tenant_id", "profile_id", "serial_number", "last_error"],
    ),
    (
        "ix_abm_devices_tenant_token_profile",
        "abm_devices",
        ["tenant_id", "token_id", "profile_uuid", "serial_number", "profile_status", "deleted"],
    ),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
