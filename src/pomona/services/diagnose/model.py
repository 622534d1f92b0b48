"""What a checker answers: a verdict on one candidate cause, with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pomona.domain.models import Event


class Verdict(StrEnum):
    PROVEN = "proven"
    LIKELY = "likely"
    UNKNOWN = "unknown"
    RULED_OUT = "ruled_out"

    @property
    def rank(self) -> int:
        """Proven first, ruled out last."""
        return _RANK[self]

    @property
    def found(self) -> bool:
        """The evidence points to the cause."""
        return self in (Verdict.PROVEN, Verdict.LIKELY)


_RANK = {Verdict.PROVEN: 0, Verdict.LIKELY: 1, Verdict.UNKNOWN: 2, Verdict.RULED_OUT: 3}


@dataclass
class Assessment:
    """One candidate cause judged against the live state. Not a health `Finding` (domain/checks.py), which
    states a problem that holds: an assessment may also rule a cause out, or say the server cannot tell."""

    code: str
    verdict: Verdict
    evidence: list[dict[str, object]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    note: str = ""  # one English line on what the checker saw (the text comes from the knowledge base)
    # What decided the verdict (`--explain`): evidence (a refusal in this attempt), funnel (the step the
    # attempt reached), state (the live state now), device (a device-side cause, the server side clean),
    # fallback (a tenant fault the message names, nothing else fitting).
    basis: str = "state"


def ev(e: Event) -> dict[str, object]:
    """An event as evidence."""
    return {
        "kind": "event",
        "id": e.id,
        "at": e.at.isoformat(),
        "step": e.step.value,
        "outcome": e.outcome.value,
        "reason": e.reason,
        "upn": e.upn,
        "serial": e.serial,
        "udid": e.udid,
    }
