"""The server's C heap (pomona.heap): glibc's malloc arenas bounded, so threads that come and go share two
arenas instead of one each; the heap's free pages handed back once a minute by the server's background
(services/jobs.py ``Background.trim``); SQLite's page caches in a slab of their own (issue 14, item 5)."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import threading
from ctypes.util import find_library
from pathlib import Path

import httpx
import pytest

from helpers import start_server
from pomona.heap import release_free_heap
from pomona.services.jobs import Background, JobRunner

#: Eight threads allocate at once, then glibc's malloc_stats() lists the arenas on stderr.
PROBE = """
import ctypes, sys, threading
from pomona.heap import bound_malloc_arenas
if sys.argv[1] == "bound":
    assert bound_malloc_arenas()
start = threading.Barrier(8)
def work():
    start.wait()
    held = [bytearray(4096) for _ in range(2000)]
    start.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter (this one's path); it must exit 0."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MALLOC_ARENA_MAX", None)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def arenas(mode: str) -> int:
    return sum(1 for line in python(PROBE, mode).stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
def test_threads_share_two_arenas_when_bounded() -> None:
    """Unbounded, eight allocating threads get arenas of their own; bounded, they share at most two."""
    assert arenas("free") > 2
    assert 1 <= arenas("bound") <= 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_free_heap_is_handed_back() -> None:
    """On glibc, malloc_trim runs (and may run again at once)."""
    held = [bytearray(4096) for _ in range(2000)]
    del held
    assert release_free_heap()
    assert release_free_heap()


class _IdleWorker:
    async def run(self) -> None:
        await asyncio.Event().wait()

    def stop(self) -> None:
        pass


async def _noop() -> None:
    return None


def _background(trim: object, interval: float, *, push_worker: bool) -> Background:
    return Background(
        jobs=JobRunner(),
        push=_IdleWorker(),
        close_gateway=_noop,
        health_round=lambda: 0,
        push_worker=push_worker,
        health_interval=0,
        trim=trim,  # type: ignore[arg-type]
        trim_interval=interval,
    )


@pytest.mark.parametrize("push_worker", [True, False])
def test_background_trims_the_heap_in_a_worker_thread_until_stopped(push_worker: bool) -> None:
    """Every server process trims (with or without the push worker), off the event loop's thread, and
    a trim that raised does not end the schedule; after stop() no trim runs."""
    threads: list[int] = []
    twice = threading.Event()

    def trim() -> None:
        threads.append(threading.get_ident())
        if len(threads) == 1:
            raise RuntimeError("first trim fails")
        twice.set()

    async def go() -> None:
        bg = _background(trim, 0.01, push_worker=push_worker)
        await bg.start()
        await asyncio.to_thread(twice.wait, 30)
        await bg.stop()
        done = len(threads)
        await asyncio.sleep(0.05)
        assert len(threads) == done

    asyncio.run(go())
    assert len(threads) >= 2
    assert threading.get_ident() not in threads


def test_background_trim_interval_zero_is_off() -> None:
    """An interval of 0 schedules no trim."""
    calls: list[int] = []

    async def go() -> None:
        bg = _background(lambda: calls.append(1), 0, push_worker=True)
        await bg.start()
        await asyncio.sleep(0.05)
        await bg.stop()

    asyncio.run(go())
    assert calls == []


#: A database of 20,000 rows (about 600 pages), read twice: the pages' memory (slab, malloc) printed after
#: the reads and after the connection let its cache go. The process then exits with its connection open.
SLAB_PROBE = """
import sys
from pomona.heap import give_sqlite_a_page_slab, sqlite_page_slab_use
if sys.argv[1] == "late":
    import sqlite3
print(give_sqlite_a_page_slab())
import sqlite3
db = sqlite3.connect(sys.argv[2])
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
db.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 100,) for _ in range(20000)])
db.commit()
db.execute("PRAGMA shrink_memory")
for _ in range(2):
    db.execute("SELECT count(*), sum(length(v)) FROM t").fetchone()
print(*sqlite_page_slab_use())
db.execute("PRAGMA shrink_memory")
print(*sqlite_page_slab_use())
"""


def slab_probe(mode: str, tmp_path: Path) -> list[str]:
    return python(SLAB_PROBE, mode, str(tmp_path / "slab.db")).stdout.split("\n")


def test_sqlite_pages_come_from_the_slab_and_go_back_to_it(tmp_path: Path) -> None:
    """Set before SQLite starts, a read's pages are the slab's (none malloc'd past it); a connection
    letting its cache go gives them back; the process exits cleanly with a connection still open."""
    assert find_library("sqlite3"), "SQLite is not a shared library here: the slab cannot be set"
    set_, read, shrunk = slab_probe("early", tmp_path)[:3]
    assert set_ == "True"
    used, overflow = map(int, read.split())
    assert used > 300 and overflow == 0
    assert int(shrunk.split()[0]) < 10


def test_the_slab_is_not_set_once_sqlite_started(tmp_path: Path) -> None:
    """After the sqlite3 module's import the setting would come too late: nothing is changed, and the
    pages come from malloc as before."""
    set_, read = slab_probe("late", tmp_path)[:2]
    assert set_ == "False"
    assert int(read.split()[0]) == 0


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_pomona_serve_sets_the_slab_on_sqlite_only(tmp_path: Path, db_url: str) -> None:
    """`pomona serve` on SQLite sets it before its first connection (its debug line says True); on
    PostgreSQL it leaves it (4.4 MB of RSS for nothing)."""
    server = start_server(tmp_path, db_url, env={"POMONA_LOG_LEVEL": "debug"})
    try:
        httpx.get(f"{server.url}/healthz", timeout=5)
    finally:
        server.stop()
    said = "True" if db_url.startswith("sqlite") else "False"
    assert f"SQLite page caches in a slab of their own: {said}" in server.log.read_text()
