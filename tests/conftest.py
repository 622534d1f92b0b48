"""Shared fixtures: the shared/ folder, both databases, a wired Pomona, live servers.

A test that needs a missing part (PostgreSQL, the shared vectors, a system tool) fails under CI=true and
is skipped LOUDLY elsewhere, so a developer machine without PostgreSQL still runs the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"

# A suite started in the background by a shell without job control (or under nohup) inherits SIGINT
# ignored, and so would every process a test starts: the tests that stop a command or a server with
# Ctrl-C (events --follow, the README's demo) then wait for it in vain. Their children get it back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


from helpers import missing  # noqa: E402


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "vectors").is_dir():
        missing(f"shared/ is not beside the project ({SHARED})")
    return SHARED


# --- databases ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url = os.environ.get("POMONA_TEST_PG", PG_DEFAULT)
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        missing(f"PostgreSQL is not reachable at {url} ({exc.__class__.__name__}); set POMONA_TEST_PG")
    return url


def _pg_create(admin_url: str, template: str | None = None) -> str:
    import psycopg

    name = f"pomona_t_{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    return name


def _pg_drop(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg(admin_url: str, name: str) -> str:
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(scope="session")
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per test process; each test's database copies it
    (CREATE DATABASE ... TEMPLATE), which costs a fraction of running the migrations again."""
    from pomona.storage.sql import SqlDatabase

    name = _pg_create(pg_admin_url)
    db = SqlDatabase(_pg(pg_admin_url, name))
    db.create_all()
    db.dispose()
    yield name
    _pg_drop(pg_admin_url, name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per test process; each test's database is a copy."""
    from pomona.storage.sql import SqlDatabase

    path = tmp_path_factory.mktemp("template") / "pomona.db"
    db = SqlDatabase(f"sqlite:///{path}")
    db.create_all()
    db.dispose()  # the last connection closes: the WAL is checkpointed into the file
    return path


#: Databases of this test process that a finished test left empty, at head: the next test reuses one.
_PG_FREE: list[str] = []


def _pg_tables(conn: Any) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def _pg_reset(url: str, template_tables: set[str], head: str) -> bool:
    """Empty a test's database for the next test (one transaction of DELETEs), if it still has the template's tables at
    the head revision and nothing holds a lock on them; False when it must be dropped instead."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            if _pg_tables(conn) != template_tables:
                return False
            if conn.execute("SELECT version_num FROM alembic_version").fetchall() != [(head,)]:
                return False
            # DELETE rather than TRUNCATE: a test leaves a few rows, and TRUNCATE gives each of the ~40
            # tables a new file (tenths of a second a test); with the foreign keys' triggers off (replica
            # role) the order does not matter. The sequences restart, as TRUNCATE ... RESTART IDENTITY did.
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '1s'")
                conn.execute("SET LOCAL session_replication_role = replica")
                for table in sorted(template_tables - {"alembic_version"}):
                    conn.execute(f'DELETE FROM "{table}"')  # type: ignore[arg-type]
                seqs = conn.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
                for (seq,) in seqs.fetchall():
                    conn.execute(f'ALTER SEQUENCE "{seq}" RESTART')  # type: ignore[arg-type]
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_template_state(pg_admin_url: str, pg_template: str) -> tuple[set[str], str]:
    """The template's tables and revision: what a reused database must still have."""
    import psycopg

    with psycopg.connect(_pg(pg_admin_url, pg_template), autocommit=True) as conn:
        head = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return _pg_tables(conn), str(head[0]) if head else ""


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str, pg_template_state: tuple[set[str], str]) -> Iterator[str]:
    """A PostgreSQL database for one test, migrated to head and empty: a copy of the template, or one an
    earlier test of this process used and left emptied (emptying costs a fraction of CREATE and DROP
    DATABASE). A database whose tables or revision a test changed, or that is still locked, is dropped."""
    name = _PG_FREE.pop() if _PG_FREE else _pg_create(pg_admin_url, pg_template)
    url = _pg(pg_admin_url, name)
    yield url
    if _pg_reset(url, *pg_template_state):
        _PG_FREE.append(name)
    else:
        _pg_drop(pg_admin_url, name)


@pytest.fixture(scope="session", autouse=True)
def _pg_free_dropped(request: pytest.FixtureRequest) -> Iterator[None]:
    """The reusable databases go when the test process ends."""
    yield
    if _PG_FREE:
        admin = os.environ.get("POMONA_TEST_PG", PG_DEFAULT)
        while _PG_FREE:
            _pg_drop(admin, _PG_FREE.pop())


@pytest.fixture
def pg_empty_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, EMPTY PostgreSQL database (for tests of the migrations themselves), dropped afterwards."""
    name = _pg_create(pg_admin_url)
    yield _pg(pg_admin_url, name)
    _pg_drop(pg_admin_url, name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on both databases, each migrated to head (the migrations themselves are
    tested from empty databases: ``empty_db_url``)."""
    if request.param == "sqlite":
        target = tmp_path / "pomona.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: nothing migrated yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pomona.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


@pytest.fixture
def pomona(db_url: str, tmp_path: Path) -> Iterator[object]:
    """A fully wired Pomona (services over the real database), public URL https://pomona.test."""
    from pomona.app import Settings, build

    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test"))
    yield p
    p.close()
