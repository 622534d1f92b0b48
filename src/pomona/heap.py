"""The server process's C heap (glibc malloc): a bound on its arenas, and free memory handed back.

Off glibc (musl, macOS) both do nothing and say so (False).

- :func:`bound_malloc_arenas`: glibc gives each thread that allocates an arena of its own, up to 8 per
  core; the server's threads (anyio's workers, which come and go, the jobs' executor, SQLite's page
  caches allocated from them) leave memory spread over many arenas that is seldom returned: RSS rose in
  steps over a soak (issue 14, bench/memory.py). Set once, before the server's threads start.
- :func:`release_free_heap`: ``malloc_trim(0)``. Memory freed inside an arena (a console page's rows,
  a health round's, SQLite page caches dropped when another connection wrote) stays the process's until
  the chunks around it are freed too; glibc only gives back the top of the heap. With 100,000 devices
  the arenas kept 8-14 MB free after a few minutes of mixed traffic, more after each background round,
  and RSS rose by it (bench/memory.py's soak). ``malloc_trim`` returns every free page (madvise), so RSS
  follows what is in use. It walks the arenas' free chunks under their locks: a few milliseconds on the
  server's heap; ``services/jobs.py`` runs it in a worker thread once a minute
  (``Background.trim``).
"""

from __future__ import annotations

import ctypes
from typing import Any

#: malloc arenas a server process may have (glibc's default: 8 per core).
MALLOC_ARENAS = 2


def _libc() -> Any | None:
    try:
        return ctypes.CDLL(None)  # this process's C library
    except OSError:
        return None


def bound_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Bound glibc's malloc arenas (``mallopt(M_ARENA_MAX)``), as ``MALLOC_ARENA_MAX`` would. Returns
    whether the bound was set (False off glibc: nothing to do)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(mallopt(m_arena_max, arenas))


def release_free_heap() -> bool:
    """Hand the heap's free pages back to the system (``malloc_trim(0)``). Returns whether glibc did it
    (False off glibc; True on glibc even when there was nothing to give back)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True
