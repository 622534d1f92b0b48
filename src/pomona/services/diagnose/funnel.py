"""The enrollment funnel: the attempts the event log shows, and where each one stopped."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pomona.domain.models import Event, Outcome, Step
from pomona.services.diagnose.checkers.enrollment import ABANDON_AFTER

_FUNNEL = (Step.PORTAL, Step.PROFILE, Step.SCEP, Step.AUTHENTICATE, Step.TOKENUPDATE, Step.COMMAND)


def funnel(events: list[Event], now: datetime) -> list[dict[str, object]]:
    """Enrollment attempts from the event log, oldest first: the steps each reached and where it stopped.

    An attempt starts at a portal or profile event (after the previous attempt got past the profile) and
    runs portal, profile, scep, authenticate, tokenupdate, first command."""
    attempts: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for e in sorted(events, key=lambda x: (x.at, x.id or 0)):
        if e.step not in _FUNNEL:
            continue
        starts = e.step in (Step.PORTAL, Step.PROFILE) and (
            cur is None
            or cur["failed"]
            or any(s not in ("portal", "profile") for s in cur["reached"])
            or (e.step is Step.PROFILE and "profile" in cur["reached"])
        )
        if starts:
            cur = {"started_at": e.at, "reached": [], "failed": None, "last_at": e.at}
            attempts.append(cur)
        if cur is None or (e.step is Step.COMMAND and "command" in cur["reached"]):
            continue
        cur["last_at"] = e.at
        if e.outcome is Outcome.FAILED:
            cur["failed"] = {"step": e.step.value, "reason": e.reason, "event": e.id}
        elif e.step.value not in cur["reached"]:
            cur["reached"].append(e.step.value)
    out = []
    for a in attempts:
        done = "tokenupdate" in a["reached"]
        stalled = not done and not a["failed"] and now - a["last_at"] >= ABANDON_AFTER
        out.append(
            {
                "started_at": a["started_at"].isoformat(),
                "reached": a["reached"],
                "failed": a["failed"],
                "state": "enrolled"
                if done
                else "failed"
                if a["failed"]
                else "stalled"
                if stalled
                else "in_progress",
            }
        )
    return out[-10:]
