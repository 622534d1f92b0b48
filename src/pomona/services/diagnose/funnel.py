"""The enrollment funnel: the attempts the event log shows, the steps each reached, where it stopped, and
the refusals it met.

The steps, in order (knowledge/causes.yaml names the one each cause breaks):

    discovery  portal  profile  install  scep  authenticate  tokenupdate  command

`install` happens on the device and leaves no event: a device that reached SCEP installed the profile far
enough to ask for its certificate. `discovery` leaves none either: any request of the attempt that reached
the server shows the device found it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pomona.domain.models import Event, Outcome, Step

STEPS = ("discovery", "portal", "profile", "install", "scep", "authenticate", "tokenupdate", "command")
_ORDER = {s: i for i, s in enumerate(STEPS)}
_FUNNEL = (Step.PORTAL, Step.PROFILE, Step.SCEP, Step.AUTHENTICATE, Step.TOKENUPDATE, Step.COMMAND)
# Steps whose refusals belong to an attempt although they are not funnel steps (a check-in message of
# another type, a CheckOut, a push that failed for this device, the ADE endpoint's refusal of a device in
# Setup Assistant).
_ALSO_REFUSED = (Step.CHECKIN, Step.CHECKOUT, Step.PUSH, Step.ADE)

ABANDON_AFTER = timedelta(minutes=30)  # an attempt with no event for this long, not enrolled, has stalled
EPISODE_GAP = timedelta(minutes=30)  # refusals further apart than this are separate episodes
REPORT_SLACK = timedelta(hours=1)  # a report may come a little after the attempt it is about


def step_index(step: str) -> int:
    """The step's place in the funnel (a step outside it, such as 'ade' or 'none', comes after)."""
    return _ORDER.get(step, len(STEPS))


@dataclass
class Attempt:
    """One enrollment attempt: from a portal sign-in or profile download to where it stopped."""

    started_at: datetime
    last_at: datetime
    reached: dict[str, Event] = field(default_factory=dict)  # step -> the first event at it
    ok: dict[str, Event] = field(default_factory=dict)  # step -> the first successful event at it
    refusals: list[Event] = field(default_factory=list)  # failed events, oldest first
    state: str = "in_progress"  # enrolled, failed, stalled, in_progress

    @property
    def failed_step(self) -> str | None:
        funnel = [e for e in self.refusals if e.step in _FUNNEL]
        return funnel[0].step.value if funnel else None

    def furthest(self) -> Event | None:
        """The event at the furthest step the device reached."""
        if not self.reached:
            return None
        return self.reached[max(self.reached, key=step_index)]

    def passed(self, step: str) -> Event | None:
        """The event showing the device got past `step` (it succeeded there, or reached a later step)."""
        if step == "discovery":
            return self.furthest()
        if step in self.ok:
            return self.ok[step]
        later = [s for s in self.reached if step_index(s) > step_index(step)]
        return self.reached[min(later, key=step_index)] if later else None

    def never_reached(self, step: str) -> bool:
        """The attempt is over and the device stopped before `step` (so nothing `step` does stopped it)."""
        if self.state not in ("failed", "stalled") or step not in _ORDER or step == "install":
            return False
        return all(step_index(s) < step_index(step) for s in self.reached)

    def episode(self, at: datetime) -> list[Event]:
        """The refusals of the last episode at or before `at` (refusals close together), oldest first."""
        refusals = [e for e in self.refusals if e.at <= at + REPORT_SLACK] or self.refusals
        if not refusals:
            return []
        out = [refusals[-1]]
        for e in reversed(refusals[:-1]):
            if out[0].at - e.at > EPISODE_GAP:
                break
            out.insert(0, e)
        return out

    def to_dict(self) -> dict[str, object]:
        refusal = next((e for e in self.refusals if e.step in _FUNNEL), None)
        return {
            "started_at": self.started_at.isoformat(),
            "reached": sorted(self.reached, key=step_index),
            "reached_at": {s: self.reached[s].at.isoformat() for s in sorted(self.reached, key=step_index)},
            "failed": None
            if refusal is None
            else {"step": refusal.step.value, "reason": refusal.reason, "event": refusal.id},
            "refusals": len(self.refusals),
            "state": self.state,
        }


def attempts(events: list[Event], now: datetime) -> list[Attempt]:
    """Enrollment attempts from the event log, oldest first.

    An attempt starts at a portal or profile event (after the previous attempt got past the profile, or
    failed) and runs portal, profile, scep, authenticate, tokenupdate, command. Refusals at other steps
    (another check-in message, a push for this device) belong to the attempt they happen in; such a
    refusal with no attempt before it in the window starts one of its own."""
    out: list[Attempt] = []
    cur: Attempt | None = None
    for e in sorted(events, key=lambda x: (x.at, x.id or 0)):
        funnel_step = e.step in _FUNNEL
        if not funnel_step and not (e.step in _ALSO_REFUSED and e.outcome is Outcome.FAILED):
            continue
        starts = funnel_step and e.step in (Step.PORTAL, Step.PROFILE)
        if starts and cur is not None:
            later = any(s not in ("portal", "profile") for s in cur.reached)
            again = e.step is Step.PROFILE and "profile" in cur.reached
            starts = bool(cur.refusals) or later or again
        if cur is None or starts:
            cur = Attempt(e.at, e.at)
            out.append(cur)
        cur.last_at = e.at
        if e.outcome is Outcome.FAILED:
            if e.reason:
                cur.refusals.append(e)
            if funnel_step:
                cur.reached.setdefault(e.step.value, e)
            continue
        if funnel_step:
            cur.reached.setdefault(e.step.value, e)
            cur.ok.setdefault(e.step.value, e)
    for a in out:
        if "tokenupdate" in a.ok or "command" in a.ok:
            a.state = "enrolled"
        elif a.failed_step:
            a.state = "failed"
        elif now - a.last_at >= ABANDON_AFTER:
            a.state = "stalled"
    return out


def attempt_at(found: list[Attempt], at: datetime) -> Attempt | None:
    """The attempt a report at `at` is about: the latest one started by then (the earliest otherwise)."""
    before = [a for a in found if a.started_at <= at + REPORT_SLACK]
    if before:
        return before[-1]
    return found[0] if found else None


def funnel(events: list[Event], now: datetime) -> list[dict[str, object]]:
    """The attempts as the diagnosis shows them (the last ten)."""
    return [a.to_dict() for a in attempts(events, now)[-10:]]
