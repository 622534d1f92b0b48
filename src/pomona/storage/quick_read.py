"""Read-only reads on the raw drivers (stdlib ``sqlite3``, ``psycopg``), for the CLI's read commands
(issue 14: start-up).

``pomona tenant list`` in a helpdesk loop should not pay for SQLAlchemy: on a database that needs
nothing done at start-up, the tenants are read here, on the raw driver, in one read transaction.
"Nothing to do" is what a start-up would find (pomona.app.build): the database at the migrations' head
(``alembic_version`` read here, the head read from the migration files' text) and every sealed secret
current under the server key and opened by it (which proves the key, as ``seal_all`` does: a wrong key
raises ServerKeyError, SERVER_KEY_MISMATCH). Anything else answers None, and the caller takes the
ordinary path, which migrates or seals and then reads through the stores.

The rows are read as :mod:`pomona.storage.tenants_sql` reads them (every column of :class:`Tenant`,
ordered by name, timestamps in UTC): tests/unit/test_cli_imports.py compares the two.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pomona.domain.models import Tenant
from pomona.storage.migrate import head_from_files
from pomona.storage.sealed_columns import SEALED_COLUMNS

if TYPE_CHECKING:
    from pomona.ports import Sealer  # not imported at run time: its dataclasses cost start-up time

#: How long a read waits for a writer's lock (milliseconds), as the SQLAlchemy connections do.
_LOCK_WAIT_MS = 30_000


def _when(value: object) -> datetime:
    """A timestamp as SQLAlchemy writes it on SQLite (naive text, in UTC) -> an aware datetime."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _tenant(row: dict[str, object]) -> Tenant:
    for name in ("created_at", "push_not_after"):
        if row[name] is not None:
            row[name] = _when(row[name])
    for name in ("ca_cert_pem", "push_cert_pem"):
        if row[name] is not None:
            row[name] = bytes(row[name])  # type: ignore[call-overload]
    return Tenant(**row)  # type: ignore[arg-type]


def sqlite_tenants(db_path: Path, sealer: Sealer) -> list[Tenant] | None:
    """Every tenant, ordered by name, read from the SQLite database at ``db_path``; None when the
    database needs a start-up's work first (absent, not at the head, a secret to seal or re-seal)."""
    if not db_path.is_file():
        return None
    # mode=rw: never creates a database (a missing file is the ordinary path's: it makes and migrates).
    conn = sqlite3.connect(
        f"{db_path.resolve().as_uri()}?mode=rw", uri=True, timeout=_LOCK_WAIT_MS / 1000, isolation_level=None
    )
    try:
        conn.execute("BEGIN")  # one snapshot for the checks and the read
        return _tenants(conn, sealer, sqlite3.OperationalError)
    finally:
        conn.close()


def postgres_tenants(url: str, sealer: Sealer) -> list[Tenant] | None:
    """:func:`sqlite_tenants` on PostgreSQL (``url``: the SQLAlchemy URL, postgresql+psycopg:// or
    postgresql://), in one read-only REPEATABLE READ transaction; None as there, and when the database
    cannot be reached (the ordinary path names the problem: DATABASE_UNAVAILABLE)."""
    try:
        import psycopg
    except ImportError:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgresql+psycopg", "postgres"):
        return None
    try:
        conn = psycopg.connect(f"postgresql://{rest}")
    except psycopg.Error:
        return None
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        return _tenants(conn, sealer, psycopg.errors.UndefinedTable)
    finally:
        conn.rollback()
        conn.close()


def _tenants(conn: Any, sealer: Sealer, no_table: type[Exception]) -> list[Tenant] | None:
    """The checks and the read on an open DB-API connection (sqlite3 or psycopg), in its transaction."""
    head = head_from_files()
    if head is None:
        return None
    try:
        revisions = sorted(str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version"))
    except no_table:
        return None  # no version table: a database to migrate
    if revisions != [head]:
        return None
    for col in SEALED_COLUMNS:
        query = f'SELECT "{col.key}", "{col.column}" FROM "{col.table}" WHERE "{col.column}" IS NOT NULL'
        for key, value in conn.execute(query).fetchall():
            raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
            if not sealer.is_current(raw):
                return None  # plaintext, or sealed under an older key: the start-up seals it
            sealer.open(raw, col.context(str(key)))  # a key that does not open it: ServerKeyError
    names = [f.name for f in fields(Tenant)]
    rows = conn.execute(f"SELECT {', '.join(names)} FROM tenants ORDER BY name").fetchall()
    return [_tenant(dict(zip(names, r, strict=True))) for r in rows]


__all__ = ["postgres_tenants", "sqlite_tenants"]
