"""Public test helpers (as ``structlog.testing``): a frozen clock, the in-memory database, and the
emulators and the virtual device in their own modules.

    from pomona.testing import FrozenClock, MemoryDatabase

    db, clock = MemoryDatabase(), FrozenClock()
    policy = PolicyService(db, clock)   # a real service, no SQL
"""

from __future__ import annotations

from pomona.storage.memory import MemoryDatabase, MemoryUnitOfWork
from pomona.testing.clock import FrozenClock

__all__ = ["FrozenClock", "MemoryDatabase", "MemoryUnitOfWork"]
