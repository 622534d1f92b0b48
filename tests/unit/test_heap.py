"""The server's C heap (pomona.heap): glibc's malloc arenas bounded, so threads that come and go share two
arenas instead of one each; the heap's free pages handed back once a minute by the server's background
(services/jobs.py ``Background.trim``) (issue 14, item 5)."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import threading

import pytest

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


def arenas(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MALLOC_ARENA_MAX", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("Arena "))


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
