"""admin API tokens expire and are revoked; no tenant name has the form of a tenant id

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 21:50:00.000000

A tenant is named by its name or by its id (a UUID). Before this revision a name could be a UUID, even
another tenant's id, and a reference then named two tenants. Names of that form are renamed here to
``tenant-<old name>`` (with a number added in the unlikely case that name is taken); the new name
appears in ``pomona tenant list``. Enrollment URLs carry the tenant id, so no device is affected.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _is_tenant_id(name: str) -> bool:
    try:
        uuid.UUID(name.strip())
    except ValueError:
        return False
    return True


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))

    conn = op.get_bind()
    tenants = sa.table("tenants", sa.column("id", sa.String(36)), sa.column("name", sa.String(100)))
    names = {r.name for r in conn.execute(sa.select(tenants.c.name))}
    for row in conn.execute(sa.select(tenants.c.id, tenants.c.name)).all():
        if not _is_tenant_id(row.name):
            continue
        new, n = f"tenant-{row.name}", 1
        while new in names:
            n += 1
            new = f"tenant-{row.name}-{n}"
        names.add(new)
        conn.execute(sa.update(tenants).where(tenants.c.id == row.id).values(name=new))


def downgrade() -> None:
    # Renamed tenants keep their new names: the old ones were ambiguous references.
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
