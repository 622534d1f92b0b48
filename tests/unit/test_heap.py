"""The server bounds glibc's malloc arenas (pomona.asgi.bound_malloc_arenas): threads that come and go
share two arenas instead of one each, so memory freed by one is reused by the next (issue 14, item 5)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

#: Eight threads allocate at once, then glibc's malloc_stats() lists the arenas on stderr.
PROBE = """
import ctypes, sys, threading
from pomona.asgi import bound_malloc_arenas
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
