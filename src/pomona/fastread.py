"""The composition root's read-only fast path, for the CLI's read commands (issue 14: start-up).

`pomona tenant list` on SQLite reads through :mod:`pomona.storage.quick_read` (the stdlib driver, no
SQLAlchemy, no services) when the database needs no start-up work; otherwise, and on PostgreSQL, it
answers None and the caller builds the whole application (pomona.app.build), as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pomona.domain.models import Tenant
    from pomona.settings import Settings


def tenants(settings: Settings) -> list[Tenant] | None:
    """Every tenant, ordered by name, or None: take the ordinary path (pomona.app.build).

    Only the default SQLite database under the data directory, with a data directory already private
    (0700) and no configured signing identity (build() checks that one at every start)."""
    if settings.database_url or settings.signing_identity is not None:
        return None
    data_dir = settings.data_dir
    db_path = data_dir / "pomona.db"
    try:
        if not db_path.is_file() or data_dir.stat().st_mode & 0o077:
            return None
    except OSError:
        return None  # the ordinary path names the problem (DATA_DIR_UNUSABLE)
    from pomona.pki.sealing import KeyringSealer, server_keys
    from pomona.storage.quick_read import sqlite_tenants

    return sqlite_tenants(db_path, KeyringSealer(server_keys(data_dir, settings.server_key())))


__all__ = ["tenants"]
