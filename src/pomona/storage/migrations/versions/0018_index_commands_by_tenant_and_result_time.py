"""Index commands by tenant and result time, for history retention (services/retention.py)

History retention deletes a tenant's answered commands older than N days in batches: without this index
each batch would read every command of the tenant. The index adds one entry per command.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 03:30:00.000000

"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_commands_tenant_result_at", "commands", ["tenant_id", "result_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_commands_tenant_result_at", table_name="commands")
