"""Several hosts starting at once on a new PostgreSQL database: one migrates, the others wait on the
migration lock and find the database at the head (docs/deploy.md, "Several hosts")."""

from __future__ import annotations

import threading
import uuid

import pytest

from pomona.storage import migrate
from pomona.storage.sql import SqlDatabase


def test_concurrent_start_ups_migrate_once(pg_admin_url: str) -> None:
    """Three processes' start-up migrations racing on an empty database all succeed, at the head."""
    import psycopg

    name = f"pomona_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{pg_admin_url.rsplit('/', 1)[0]}/{name}"
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def host() -> None:
        db = SqlDatabase(url)
        try:
            start.wait()
            migrate.upgrade_if_needed(db.engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.dispose()

    try:
        threads = [threading.Thread(target=host) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        db = SqlDatabase(url)
        assert migrate.stored_revisions(db.engine) == [migrate.head()]
        db.dispose()
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


pytestmark = pytest.mark.postgres
