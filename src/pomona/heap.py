"""The server process's C heap (glibc malloc): a bound on its arenas, free memory handed back, and SQLite's
page caches kept out of it.

Off glibc (musl, macOS) the first two do nothing and say so (False).

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
- :func:`give_sqlite_a_page_slab`: SQLite's page caches in one slab of their own
  (``SQLITE_CONFIG_PAGECACHE``) instead of malloc. Each cached page is a ~4.3 KB block; a connection
  drops its whole cache whenever another one wrote since its last transaction (WAL), and again when it
  goes back to the pool (``PRAGMA shrink_memory``), so pages are allocated and freed all the time, among
  the heap's long-lived objects. A freed 4.3 KB block holds a whole aligned page about one time in
  fourteen, so ``malloc_trim`` could not give those holes back: the heap's free space rose from 7 to 12
  MB in five minutes of bench/memory.py's soak (mallinfo2; in-use memory flat at 34 MB), faster with each
  health round (its reads took SQLite's memory from 2.3 to 4.5 MB). In the slab a freed page goes back to the slab's free
  list and is the next one handed out. Set before SQLite starts (before the ``sqlite3`` module's first
  import in the process): ``pomona serve`` and ``pomona demo`` do it on SQLite before their first
  connection. ``uvicorn pomona.asgi:app`` runs without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys
from typing import Any

#: malloc arenas a server process may have (glibc's default: 8 per core).
MALLOC_ARENAS = 2

#: Pages of SQLite's slab (:func:`give_sqlite_a_page_slab`): 4.4 MB, all resident from the start (SQLite
#: links its free list through every slot). With 1 MB caches per connection (storage/database.py
#: SQLITE_CACHE_KIB) the server's connections held at most 334 pages at once in bench/memory.py's soak
#: with a health round every 30 s (sampled every 2 s), none past the slab; past it, SQLite mallocs as
#: before. A larger slab costs its size in RSS at rest (3,800 pages: +15 MB).
SQLITE_SLAB_PAGES = 1024
#: The page size the slab's slots hold (SQLite's default; the server does not change it). A database
#: with larger pages gets its pages from malloc, as without the slab.
SQLITE_PAGE_SIZE = 4096
_SQLITE_CONFIG_PAGECACHE = 7  # sqlite3.h
_SQLITE_CONFIG_PCACHE_HDRSZ = 24
_SQLITE_STATUS_PAGECACHE_USED = 1
_SQLITE_STATUS_PAGECACHE_OVERFLOW = 2
_slab: int | None = None  # the slab's address: SQLite uses it for the process's life, never unmapped


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


def _sqlite_library() -> Any | None:
    """The SQLite library the ``sqlite3`` module links, loaded (RTLD_GLOBAL) so that the module's import
    finds it already in the process; None where it is not a shared library of its own."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None


def give_sqlite_a_page_slab(pages: int = SQLITE_SLAB_PAGES) -> bool:
    """Give SQLite's page caches a slab of ``pages`` slots (``SQLITE_CONFIG_PAGECACHE``). Only before
    SQLite starts: returns False, changing nothing, once the ``sqlite3`` module was imported in this
    process, where SQLite is not a shared library (``sqlite3`` built in) or did not accept the setting;
    True when it is set, or was already set here."""
    global _slab
    if _slab is not None:
        return True
    if "_sqlite3" in sys.modules or pages <= 0:
        return False
    lib = _sqlite_library()
    if lib is None:
        return False
    header = ctypes.c_int(0)
    if lib.sqlite3_config(_SQLITE_CONFIG_PCACHE_HDRSZ, ctypes.byref(header)) != 0:
        return False
    slot = (SQLITE_PAGE_SIZE + header.value + 7) // 8 * 8
    address = _map_for_good(slot * pages)
    if address is None:
        return False
    rc = lib.sqlite3_config(
        _SQLITE_CONFIG_PAGECACHE, ctypes.c_void_p(address), ctypes.c_int(slot), ctypes.c_int(pages)
    )
    if rc != 0:
        return False
    _slab = address
    return True


def _map_for_good(size: int) -> int | None:
    """``size`` bytes of anonymous memory (page-aligned, resident only where touched) that nothing
    unmaps: not a Python object, which the interpreter's exit would free while SQLite's last connections
    still close into it. None if the C library has no mmap."""
    libc = _libc()
    c_mmap = getattr(libc, "mmap", None)
    if c_mmap is None:
        return None
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    address = c_mmap(None, size, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if address is None or address == ctypes.c_void_p(-1).value:  # MAP_FAILED
        return None
    return int(address)


def sqlite_page_slab_use() -> tuple[int, int] | None:
    """SQLite's page caches now: (pages in the slab, bytes malloc'd past it), or None where SQLite is not
    a shared library here."""
    lib = _sqlite_library()
    if lib is None:
        return None
    out = []
    for op in (_SQLITE_STATUS_PAGECACHE_USED, _SQLITE_STATUS_PAGECACHE_OVERFLOW):
        current, highest = ctypes.c_int(0), ctypes.c_int(0)
        lib.sqlite3_status(op, ctypes.byref(current), ctypes.byref(highest), 0)
        out.append(current.value)
    return out[0], out[1]
