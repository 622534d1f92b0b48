"""Backup and restore of the SQLite database (`pomona backup`, `pomona restore`; docs/deploy.md).

A backup is one SQLite database file (journal mode DELETE, mode 0600), made with SQLite's online backup
API (``sqlite3.Connection.backup``) while the server runs. The copy is taken in steps of
:data:`STEP_PAGES` pages (a progress bar can follow it) inside ONE read transaction on the source: under
WAL that transaction is a snapshot, so the copy is the database as it was at its start, and a check-in
written meanwhile neither shows in it nor restarts it. (Without that transaction SQLite restarts the copy
whenever another connection writes between two steps: on a busy server it may never finish.)

What a backup does NOT hold: the server key (``server.key`` in the data folder, or POMONA_SECRET_KEY) that
seals the secrets in it. Without the key, a stolen backup yields no device CA key, push certificate key
or session secret; with the key lost, a backup cannot give them back. The administrator keeps the key
apart (docs/deploy.md, docs/security.md). The sealed values carry the id of the key that sealed them
(pki/sealing.py), so :func:`inspect_backup` names the key a backup needs.

A restore checks, before it touches the database: the file is an SQLite database that passes
``PRAGMA quick_check`` and has Pomona's migration table (BACKUP_INVALID); its migration is one this
version ships (BACKUP_TOO_NEW otherwise); the database it replaces holds no tenant unless forced
(RESTORE_TARGET_NOT_EMPTY). It then works on a staged copy beside the database: migrated up to this
version's head, its sealed values opened with this server's key (SERVER_KEY_MISMATCH otherwise), and only
then copied over the database with the same backup API (so the database's own WAL and shared-memory files
stay coherent: the file is never replaced under an open connection).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy.engine import make_url

from pomona.domain.errors import (
    BackupInvalidError,
    BackupNotSqliteError,
    BackupTooNewError,
    RestoreTargetNotEmptyError,
)
from pomona.storage.sealed import SEALED_COLUMNS

__all__ = [
    "STEP_PAGES",
    "BackupInfo",
    "Progress",
    "check_backup_version",
    "copy_database",
    "inspect_backup",
    "libpq_url",
    "make_backup",
    "pg_commands",
    "refuse_non_empty",
    "sqlite_file",
    "tenant_count",
]

#: Pages copied per step of the online backup (4 MiB of 4 KiB pages): the progress bar's grain.
STEP_PAGES: Final = 1024
_V2: Final = b"\x02"

#: Called after each step with (pages copied, pages in all).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BackupInfo:
    """What a backup file holds: its size, its migration, and the ids of the server keys that sealed it."""

    path: Path
    size: int
    revision: str | None
    key_ids: tuple[str, ...]
    tenants: int


def sqlite_file(url: str) -> Path:
    """The database file of a SQLite URL, or BACKUP_NOT_SQLITE with the PostgreSQL commands."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise BackupNotSqliteError(pg_commands(url))
    if not parsed.database or parsed.database == ":memory:":
        raise BackupInvalidError(f"the database {url} is not a file")
    return Path(parsed.database)


def libpq_url(url: str) -> str:
    """The URL as pg_dump and pg_restore take it: no SQLAlchemy driver, no password (libpq reads it from
    ~/.pgpass or PGPASSWORD, never from a command line other users can see)."""
    parsed = make_url(url).set(drivername="postgresql", password=None)
    return parsed.render_as_string(hide_password=False)


def pg_commands(url: str) -> str:
    """The exact pg_dump and pg_restore lines for this database (docs/deploy.md explains them)."""
    target = libpq_url(url)
    return (
        "the database is PostgreSQL: back it up with "
        f"`pg_dump --format=custom --file=pomona.dump '{target}'` and restore it with "
        f"`pg_restore --clean --if-exists --no-owner --dbname='{target}' pomona.dump` "
        "(docs/deploy.md)"
    )


@contextmanager
def _open(path: Path, *, readonly: bool) -> Iterator[sqlite3.Connection]:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def copy_database(source: Path, target: Path, progress: Progress | None = None) -> None:
    """``source`` copied onto ``target`` (created or overwritten in place) with the online backup API,
    from one read snapshot of ``source`` (see the module docstring)."""

    def step(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(total - remaining, total)

    with _open(source, readonly=False) as src, _open(target, readonly=False) as dst:
        src.execute("BEGIN")
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            src.backup(dst, pages=STEP_PAGES, progress=step)
        finally:
            src.execute("COMMIT")


def make_backup(source: Path, out: Path, progress: Progress | None = None) -> BackupInfo:
    """A backup of the database file ``source`` at ``out`` (written beside it, then renamed into place:
    ``out`` is never a half-written file), journal mode DELETE, mode 0600."""
    if not source.exists():
        raise BackupInvalidError(f"there is no database at {source} to back up")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        copy_database(source, partial, progress)
        with _open(partial, readonly=False) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return inspect_backup(out)


def inspect_backup(path: Path) -> BackupInfo:
    """What the backup at ``path`` holds, or BACKUP_INVALID naming why it is not a usable backup."""
    if not path.is_file():
        raise BackupInvalidError(f"{path} is not a file")
    with path.open("rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise BackupInvalidError(f"{path} is not an SQLite database (not a Pomona backup)")
    try:
        with _open(path, readonly=True) as conn:
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise BackupInvalidError(f"{path} is damaged: {check[0] if check else 'unreadable'}")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "alembic_version" not in tables or "tenants" not in tables:
                raise BackupInvalidError(f"{path} is an SQLite database but not Pomona's")
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            keys: set[str] = set()
            for col in SEALED_COLUMNS:
                if col.table not in tables:
                    continue
                for (value,) in conn.execute(
                    f'SELECT "{col.column}" FROM "{col.table}" WHERE "{col.column}" IS NOT NULL'
                ):
                    raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                    if raw[:1] == _V2:
                        keys.add(raw[1:9].hex())
            tenants = int(conn.execute("SELECT count(*) FROM tenants").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupInvalidError(f"{path} cannot be read as a database: {exc}") from None
    return BackupInfo(path, path.stat().st_size, row[0] if row else None, tuple(sorted(keys)), tenants)


def check_backup_version(info: BackupInfo, known: list[str]) -> None:
    """BACKUP_TOO_NEW for a backup at a migration this version does not ship (a newer Pomona made it);
    an older one is fine (the restore migrates it up)."""
    if info.revision is not None and info.revision not in known:
        raise BackupTooNewError(
            f"{info.path} is at migration {info.revision}, which this version of Pomona does not know "
            f"(its newest is {known[-1]}): restore it with the Pomona version that made it, or a newer one"
        )


def tenant_count(path: Path) -> int:
    """How many tenants the database at ``path`` holds (0 for no file or no schema yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM tenants").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def refuse_non_empty(path: Path, force: bool) -> None:
    """RESTORE_TARGET_NOT_EMPTY unless the database at ``path`` has no tenant, or ``force``."""
    count = tenant_count(path)
    if count and not force:
        raise RestoreTargetNotEmptyError(
            f"the database {path} holds {count} tenant(s): a restore would replace them; "
            "stop the server, and give --force to replace it"
        )
