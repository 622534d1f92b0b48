"""The composition root's read-only fast path, for the CLI's read commands (issue 14: start-up).

`pomona tenant list` reads through :mod:`pomona.storage.quick_read` (sqlite3 or psycopg, no SQLAlchemy,
no services) when the database needs no start-up work; otherwise it answers None and the caller builds
the whole application (pomona.app.build), as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pomona.domain.models import Tenant
    from pomona.settings import Settings


def tenants(settings: Settings) -> list[Tenant] | None:
    """Every tenant, ordered by name, or None: take the ordinary path (pomona.app.build).

    PostgreSQL, or the default SQLite database under a data directory already private (0700); never
    with a configured signing identity (build() checks that one at every start)."""
    if settings.signing_identity is not None:
        return None
    data_dir = settings.data_dir  # the server key's folder (and SQLite's)
    db_path = data_dir / "pomona.db"
    url = settings.database_url
    if url and not url.startswith("postgres"):
        return None
    try:
        if data_dir.stat().st_mode & 0o077 or (not url and not db_path.is_file()):
            return None
    except OSError:
        return None  # the ordinary path makes the folder, or names the problem (DATA_DIR_UNUSABLE)
    from pomona.pki.sealing import KeyringSealer, server_keys
    from pomona.storage.quick_read import postgres_tenants, sqlite_tenants

    sealer = KeyringSealer(server_keys(data_dir, settings.server_key()))
    return postgres_tenants(url, sealer) if url else sqlite_tenants(db_path, sealer)


__all__ = ["tenants"]
