"""The idle check-in's raw connections (storage/hot_sql.py ``HotReads``): one per thread that reads, closed
when that thread ends, so worker threads that come and go leave none behind (issue 14: each kept its
SQLite page cache for the server's life); on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import threading

from pomona.storage.sql import SqlDatabase


def _read(db: SqlDatabase) -> None:
    assert db.channel_state("fp-unknown", skip_not_now=False) is None


def test_threads_that_end_leave_no_connection_open(sql: SqlDatabase) -> None:
    """Forty threads read (eight at a time) and end: none of their connections stays open."""
    for _ in range(5):
        batch = [threading.Thread(target=_read, args=(sql,)) for _ in range(8)]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
    gc.collect()
    assert sql.hot.open_connections() == 0


def test_a_running_thread_keeps_its_one_connection(sql: SqlDatabase) -> None:
    """A thread reading again reuses its connection; while another thread runs, both are open."""
    _read(sql)
    _read(sql)
    assert sql.hot.open_connections() == 1
    reading, release = threading.Event(), threading.Event()

    def other() -> None:
        _read(sql)
        reading.set()
        release.wait(30)

    t = threading.Thread(target=other)
    t.start()
    assert reading.wait(30)
    assert sql.hot.open_connections() == 2
    release.set()
    t.join()
    gc.collect()
    assert sql.hot.open_connections() == 1
    _read(sql)  # the surviving connection still answers
    assert sql.hot.open_connections() == 1


def test_a_write_in_a_thread_that_ends_is_kept_and_its_connection_closed(sql: SqlDatabase) -> None:
    """The command channel's take in a short-lived thread: its connection closes with the thread."""
    from datetime import UTC, datetime

    results: list[bool] = []
    t = threading.Thread(
        target=lambda: results.append(sql.take_command(1, "no-such-enrollment", None, datetime.now(UTC)))
    )
    t.start()
    t.join()
    gc.collect()
    assert results == [False]
    assert sql.hot.open_connections() == 0


def test_dispose_closes_every_thread_connection(sql: SqlDatabase) -> None:
    """dispose() closes the connections of threads still running; a later read opens a new one."""
    _read(sql)
    sql.hot.close()
    assert sql.hot.open_connections() == 0
    gc.collect()
    _read(sql)
    assert sql.hot.open_connections() == 1
