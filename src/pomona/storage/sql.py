"""The SQL backend's public names, kept at their old import path (app.py, cli and tests import them).

The backend lives in one module per store (``*_sql.py``) around :mod:`pomona.storage.database`.
"""

from __future__ import annotations

from pomona.storage.database import SqlDatabase, SqlUnitOfWork, private_dir, redact_url, sqlite_url
from pomona.storage.rows import utc as _utc

__all__ = ["SqlDatabase", "SqlUnitOfWork", "_utc", "private_dir", "redact_url", "sqlite_url"]
