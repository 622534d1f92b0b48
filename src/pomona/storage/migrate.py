"""Run the Alembic migrations programmatically (no alembic.ini needed at run time).

Alembic is imported only when a migration runs or the revision graph is walked: every CLI command opens
the database, and on a database already at the head :func:`upgrade_if_needed` costs one SELECT and
reading the migration files' ``revision`` lines (start-up time, issue 14).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
#: The PostgreSQL advisory lock key migrations run under ("pomomigr" as 8 bytes, as a signed bigint).
MIGRATION_LOCK = int.from_bytes(b"pomomigr", "big", signed=True)
_REVISION = re.compile(r'^(down_revision|revision)\s*=\s*(None|"[^"]*"|\'[^\']*\')\s*$', re.MULTILINE)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def upgrade_if_needed(engine: Engine) -> None:
    """:func:`upgrade` to the head, unless the database is at the head already (then Alembic is not
    imported). Whatever is not plainly at the head (no version table, another revision, a graph the
    files do not make plain) goes to Alembic, which migrates or refuses as it always did."""
    head = head_from_files()
    if head is not None and stored_revisions(engine) == [head]:
        return
    if engine.dialect.name != "postgresql":
        upgrade(engine)  # SQLite: one writer at a time already (BEGIN IMMEDIATE)
        return
    # Several hosts may start at once on an older PostgreSQL database (docs/deploy.md, "Several hosts"):
    # one migrates while the others wait on a session advisory lock, then find the database at the head.
    with engine.connect() as lock:
        lock.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        try:
            if head is None or stored_revisions(engine) != [head]:
                upgrade(engine)
        finally:
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            lock.commit()


def stored_revisions(engine: Engine) -> list[str] | None:
    """The revisions in the database's ``alembic_version`` table (one SELECT), or None when there is
    no such table (a new database) or it cannot be read."""
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.info["sqlite_readonly"] = True  # BEGIN, not BEGIN IMMEDIATE (storage/database.py)
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except DBAPIError:
        return None
    return sorted(str(r[0]) for r in rows)


def head_from_files() -> str | None:
    """The head revision as the migration files declare it (``revision = ...``, ``down_revision = ...``
    read as text, nothing imported): the one revision no other revises. None when that is not plain
    (a file without both lines, branches, merges): the caller then asks Alembic."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found: dict[str, str] = {m[1]: m[2] for m in _REVISION.finditer(text)}
        if set(found) != {"revision", "down_revision"} or found["revision"] == "None":
            return None
        revisions.add(found["revision"][1:-1])
        if found["down_revision"] != "None":
            revised.add(found["down_revision"][1:-1])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 and revised <= revisions else None


def current(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revisions() -> list[str]:
    """Every migration this version ships, oldest first (the last is the head)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return [s.revision for s in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions()))]


def head() -> str:
    """The newest revision the code knows (what `upgrade` reaches)."""
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    script = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://")))
    return str(script.get_current_head())
