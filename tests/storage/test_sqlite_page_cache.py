"""SQLite's page caches: 1 MB per connection, the pool's and the hot reads' own, so that the server's
connections fit the page slab together (pomona.heap, storage/database.py SQLITE_CACHE_KIB)."""

from __future__ import annotations

import pytest

from pomona.heap import SQLITE_PAGE_SIZE, SQLITE_SLAB_PAGES
from pomona.storage.database import SQLITE_CACHE_KIB, SqlDatabase


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_sqlite_connection_keeps_a_1_mb_page_cache(sql: SqlDatabase) -> None:
    """A unit of work's connection and a hot read's connection both say cache_size = -1024 (KiB)."""
    with sql.unit_of_work(readonly=True) as uow:
        assert uow.conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
    hot = sql.hot._conn()
    assert hot.execute("PRAGMA cache_size").fetchone()[0] == -SQLITE_CACHE_KIB


def test_four_full_caches_fit_the_slab() -> None:
    """The numbers agree: four connections with full caches need no more pages than the slab holds."""
    assert 4 * SQLITE_CACHE_KIB * 1024 // SQLITE_PAGE_SIZE <= SQLITE_SLAB_PAGES
