"""A database that does not answer is StorageUnavailableError (DATABASE_UNAVAILABLE, 503), from a unit of
work and from the check-in's hot read, on SQLite and PostgreSQL (the memory backend cannot lose its
database): its text is the driver's first line, never the statement or its parameters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from pomona.domain.errors import StorageUnavailableError
from pomona.storage.sql import SqlDatabase


def _admin(admin_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture
def pg_dropped(pg_admin_url: str, pg_template: str) -> Iterator[tuple[SqlDatabase, str]]:
    """A PostgreSQL database in use (pooled and hot-read connections open), then dropped under them."""
    name = f"pomona_gone_{uuid.uuid4().hex[:8]}"
    _admin(pg_admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    db = SqlDatabase(f"{pg_admin_url.rsplit('/', 1)[0]}/{name}")
    try:
        with db.unit_of_work() as uow:
            uow.conn.execute(text("SELECT 1"))
        assert db.channel_state("fp-none", skip_not_now=False) is None
        _admin(pg_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')
        yield db, name
    finally:
        db.dispose()
        _admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_that_is_not_there_is_unavailable(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A SQLite file whose folder is gone, a PostgreSQL database that does not exist: both reads say
    StorageUnavailableError with the driver's first line."""
    if backend == "sqlite":
        url, cause = f"sqlite:///{tmp_path / 'unmounted' / 'pomona.db'}", "unable to open database file"
    else:
        admin = request.getfixturevalue("pg_admin_url")
        url, cause = f"{admin.rsplit('/', 1)[0]}/pomona_never_created", "does not exist"
    db = SqlDatabase(url)
    try:
        with pytest.raises(StorageUnavailableError, match=cause) as raised, db.unit_of_work() as uow:
            uow.conn.execute(text("SELECT 1"))
        assert "\n" not in str(raised.value)
        with pytest.raises(StorageUnavailableError, match=cause):
            db.channel_state("fp1", skip_not_now=False)
    finally:
        db.dispose()


def test_a_database_dropped_under_its_connections_is_unavailable(pg_dropped: tuple[SqlDatabase, str]) -> None:
    """Dropped while its pooled connections were open: the next unit of work and the next hot read (the
    server ended their sessions, and a new connection finds no database) are StorageUnavailableError,
    without the statement."""
    db, name = pg_dropped
    for _ in range(2):  # the pooled connection the server ended, then a new one that finds no database
        with pytest.raises(StorageUnavailableError) as raised, db.unit_of_work() as uow:
            uow.conn.execute(text("SELECT 1"))
        assert "SELECT" not in str(raised.value)
    with pytest.raises(StorageUnavailableError, match=f'database "{name}" does not exist'):
        db.channel_state("fp1", skip_not_now=False)


def test_postgresql_connections_give_up_connecting_after_a_bound() -> None:
    """A PostgreSQL URL without connect_timeout gets PG_CONNECT_TIMEOUT_S; one naming its own keeps it."""
    from pomona.storage.database import PG_CONNECT_TIMEOUT_S

    plain = SqlDatabase("postgresql://pomona@127.0.0.1:1/none")
    own = SqlDatabase("postgresql://pomona@127.0.0.1:1/none?connect_timeout=30")
    try:
        assert plain.engine.url.query["connect_timeout"] == str(PG_CONNECT_TIMEOUT_S)
        assert own.engine.url.query["connect_timeout"] == "30"
        assert "connect_timeout" not in plain.display_url  # messages show the URL as given
    finally:
        plain.dispose()
        own.dispose()
