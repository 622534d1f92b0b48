"""Shared fixtures: the shared/ folder, both databases, a wired Pomona, live servers.

A test that needs a missing part (PostgreSQL, the shared vectors, a system tool) fails under CI=true and
is skipped LOUDLY elsewhere, so a developer machine without PostgreSQL still runs the rest.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


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


@pytest.fixture
def pg_url(pg_admin_url: str, pg_template: str) -> Iterator[str]:
    """A PostgreSQL database for one test, migrated to head (a copy of the template), dropped afterwards."""
    name = _pg_create(pg_admin_url, pg_template)
    yield _pg(pg_admin_url, name)
    _pg_drop(pg_admin_url, name)


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
