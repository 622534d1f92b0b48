"""The daily failure roll-up, for every backend: which counter a failure event adds to.

Failure counts are kept per (tenant, UTC day, reason, platform, enrollment type, step) as failure
events are appended, so that reports over months of a large event log read hundreds of rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pomona.domain.models import Event, Outcome
from pomona.domain.policy import platform_from_detail

#: The columns of a roll-up key, in order; a report groups by one of GROUPS.
KEY = ("tenant_id", "day", "reason", "platform", "enrollment_type", "step")
#: A report's ``group_by`` -> the key column it reads.
GROUPS = {"reason": "reason", "platform": "platform", "type": "enrollment_type", "step": "step", "day": "day"}


def day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def failure_key(e: Event) -> dict[str, str] | None:
    """The roll-up counter a new event adds one to, or None when it is not a failure with a reason."""
    if e.outcome is not Outcome.FAILED or not e.reason:
        return None
    return {
        "tenant_id": e.tenant_id,
        "day": day(e.at),
        "reason": e.reason,
        "platform": platform_from_detail(e.detail),
        "enrollment_type": str(e.detail.get("type") or e.detail.get("enrollment_type") or "byod"),
        "step": e.step.value,
    }
