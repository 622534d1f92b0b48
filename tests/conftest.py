"""Shared fixtures: the shared/ folder, both databases, a wired Pomona, live servers.

A test that needs a missing part (PostgreSQL, the shared vectors, a system tool) fails under CI=true and
is skipped LOUDLY elsewhere, so a developer machine without PostgreSQL still runs the rest.
"""

from __future__ import annotations

import os
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


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"pomona_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pomona.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pomona(db_url: str, tmp_path: Path) -> Iterator[object]:
    """A fully wired Pomona (services over the real database), public URL https://pomona.test."""
    from pomona.app import Settings, build

    p = build(Settings(data_dir=tmp_path, database_url=db_url, public_url="https://pomona.test"))
    yield p
    p.close()
