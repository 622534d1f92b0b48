"""Fixtures of the storage tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pomona.ports import Database
from pomona.storage.sql import SqlDatabase
from pomona.testing import MemoryDatabase


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Every backend in turn: memory, SQLite (a copy of the migrated template), PostgreSQL."""
    if request.param == "memory":
        yield MemoryDatabase()
        return
    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), tmp_path / "pomona.db")
        url = f"sqlite:///{tmp_path / 'pomona.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    d = SqlDatabase(url)
    d.create_all()
    yield d
    d.dispose()


@pytest.fixture
def sql(db_url: str) -> Iterator[SqlDatabase]:
    """A SQL database (SQLite, then PostgreSQL), migrated: for what only SQL storage has (the driver's
    statements, its connections, lock waits)."""
    d = SqlDatabase(db_url)
    d.create_all()
    yield d
    d.dispose()
