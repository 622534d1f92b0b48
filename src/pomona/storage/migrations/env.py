"""Alembic environment: migrations run on the engine Pomona hands over (render_as_batch for SQLite)."""

from __future__ import annotations

from alembic import context

from pomona.storage.schema import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    if engine.dialect.name == "sqlite":
        connection.info["sqlite_readonly"] = False
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
