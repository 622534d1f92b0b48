"""How many refusals of unauthenticated requests reach the event log: a token bucket per tenant and source.

Anyone can send a request to ``/mdm/<tenant>`` or ``/scep/<tenant>``, and every refusal used to leave an
event: 100 bad requests added 18 MB in a second, and the noise reached diagnose and the reports. Now a
refusal of a caller that proved no identity (services/context.py ``Caller``) spends a token of the bucket
of its (tenant, client address): ``BURST`` tokens, refilled at ``RATE`` per second. Without a token, no
row is written; the refusal is counted per (tenant, address, reason), and once its window of ``WINDOW``
has passed, one EVENTS_SUPPRESSED event per reason says how many were left out, from where, and when
(written at the next refusal this process records, from anyone). Refusals of identified callers are never
throttled: "every refusal leaves an event" stays true for them.

The state is in memory, per process and per recording service (a few buckets each); ``MAX_SOURCES``
bounds it (the least recently used source is forgotten first, its suppressed count written out). It
stays per process on purpose (docs/ARCHITECTURE.md, "State shared between processes"): it bounds noise
in the event log, not access, so N processes letting N bursts through is still a bound, and a flood of
refused requests costs no database write (the portal's sign-in limit, a security limit, is shared).
Every string copied from a request into an event's detail is cut to ``MAX_DETAIL_CHARS``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

BURST: Final = 20
RATE: Final = 0.5  # tokens per second: a device retrying every few seconds is never throttled
WINDOW: Final = timedelta(minutes=1)
MAX_SOURCES: Final = 10_000
MAX_DETAIL_CHARS: Final = 200
_MAX_ITEMS: Final = 50


@dataclass(frozen=True)
class Suppressed:
    """Refusals left out of the event log: ``count`` of ``reason`` from ``source`` in [since, until)."""

    tenant_id: str
    source: str
    step: str
    reason: str
    count: int
    since: datetime
    until: datetime


@dataclass
class _Source:
    tokens: float
    at: datetime
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (step, reason) -> refusals
    since: datetime | None = None


class RefusalThrottle:
    """Token buckets per (tenant, source); thread-safe."""

    def __init__(
        self,
        *,
        burst: int = BURST,
        rate: float = RATE,
        window: timedelta = WINDOW,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.burst, self.rate, self.window, self.max_sources = burst, rate, window, max_sources
        self._sources: OrderedDict[tuple[str, str], _Source] = OrderedDict()
        self._lock = threading.Lock()
        self._pending = 0  # sources with suppressed counts
        self._evicted: list[Suppressed] = []  # counts of forgotten sources, to write out

    def admit(self, tenant_id: str, source: str, step: str, reason: str, now: datetime) -> bool:
        """Whether this refusal gets its own event; if not, it is counted."""
        key = (tenant_id, source)
        with self._lock:
            src = self._sources.get(key)
            if src is None:
                src = self._sources[key] = _Source(float(self.burst), now)
                self._evict()
            else:
                self._sources.move_to_end(key)
                elapsed = max((now - src.at).total_seconds(), 0.0)
                src.tokens = min(float(self.burst), src.tokens + elapsed * self.rate)
                src.at = now
            if src.tokens >= 1.0:
                src.tokens -= 1.0
                return True
            if src.since is None:
                src.since = now
                self._pending += 1
            src.counts[step, reason] = src.counts.get((step, reason), 0) + 1
            return False

    def due(self, now: datetime) -> list[Suppressed]:
        """The counts whose window has passed, taken (each is reported once)."""
        if not self._pending and not self._evicted:
            return []
        with self._lock:
            out, self._evicted = self._evicted, []
            for (tenant_id, source), src in self._sources.items():
                if src.since is not None and now - src.since >= self.window:
                    out += self._take(tenant_id, source, src, now)
        return out

    def _take(self, tenant_id: str, source: str, src: _Source, now: datetime) -> list[Suppressed]:
        assert src.since is not None
        out = [
            Suppressed(tenant_id, source, step, reason, n, src.since, now)
            for (step, reason), n in sorted(src.counts.items())
        ]
        src.counts, src.since = {}, None
        self._pending -= 1
        return out

    def _evict(self) -> None:
        while len(self._sources) > self.max_sources:
            (tenant_id, source), src = self._sources.popitem(last=False)
            if src.since is not None:
                self._evicted += self._take(tenant_id, source, src, src.at)


def cap_detail(value: object, depth: int = 0) -> object:
    """``value`` with every string cut to MAX_DETAIL_CHARS and every list or mapping to 50 items."""
    if isinstance(value, str):
        return value if len(value) <= MAX_DETAIL_CHARS else value[:MAX_DETAIL_CHARS] + "..."
    if isinstance(value, bytes):
        return cap_detail(value.decode("utf-8", "replace"), depth)
    if depth > 4:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())[:_MAX_ITEMS]
        return {str(k)[:MAX_DETAIL_CHARS]: cap_detail(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [cap_detail(v, depth + 1) for v in value[:_MAX_ITEMS]]
    return value


def cap(text: str | None, size: int) -> str | None:
    """A string copied from a request into a column of ``size`` characters."""
    return None if text is None else text[:size]


__all__ = ["MAX_DETAIL_CHARS", "RefusalThrottle", "Suppressed", "cap", "cap_detail"]
