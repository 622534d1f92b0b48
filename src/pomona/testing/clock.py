"""A clock that stands still until the test moves it: :class:`pomona.ports.Clock` for tests."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

#: Where a FrozenClock starts when not told.
DEFAULT_START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class FrozenClock:
    """``now()`` returns the same instant until :meth:`advance` or :meth:`set` moves it.

    >>> clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    >>> clock.advance(minutes=5).isoformat()
    '2026-01-01T00:05:00+00:00'
    """

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._lock = threading.Lock()
        self._now = _aware(start)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move forward by ``delta`` and/or ``timedelta(**parts)`` (seconds=, minutes=, days=, ...);
        returns the new now. Time never runs backwards here: use :meth:`set` for that."""
        step = (delta or timedelta()) + timedelta(**parts)
        if step < timedelta():
            raise ValueError("advance() moves forward; use set() to go back")
        with self._lock:
            self._now += step
            return self._now

    def set(self, at: datetime) -> None:
        with self._lock:
            self._now = _aware(at)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("a FrozenClock keeps aware datetimes (tzinfo=UTC), as the system clock gives")
    return at
