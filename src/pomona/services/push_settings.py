"""The push queue's settings (re-exported by services/push.py): a module of their own, so that
pomona.settings reads their defaults without importing the push service (the CLI's start-up, issue 14)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PushSettings"]


@dataclass(frozen=True)
class PushSettings:
    batch: int = 1000
    poll_interval: float = 0.5  # seconds between looks at the queue when idle
    lease: float = 60.0  # seconds a claim holds; a dead process's rows are free again after it
    repush: tuple[float, ...] = (60.0, 300.0, 1800.0, 3600.0)  # then the last value, repeated
    repush_cap: float = 72 * 3600.0  # stop re-pushing this long after the first accepted push
    retry_base: float = 5.0  # transient failures: retry_base * 2**n, up to retry_max, jittered
    retry_max: float = 300.0
    tenant_hold: float = 3600.0  # no or refused certificate: look again after this (a new one: at once)
    unresponsive_after: float = 4 * 3600.0  # DEVICE_UNRESPONSIVE: accepted pushes, silent this long

    @staticmethod
    def parse_schedule(text: str) -> tuple[float, ...]:
        values = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
        if not values or any(v <= 0 for v in values):
            raise ValueError(f"a re-push schedule is positive seconds, comma-separated, not {text!r}")
        return values
