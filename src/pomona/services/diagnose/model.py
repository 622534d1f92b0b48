"""What a checker answers: a verdict on one candidate cause, with its evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pomona.domain.models import Event
from pomona.i18n import t


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


@dataclass(frozen=True)
class Note:
    """One line on what a checker saw, in either language: a message id (``diagnose.note.<key>`` in the
    catalogues) with its values. A value that is itself a Note (a step's name, a clause) is rendered in
    the same language; ``a + b`` reads as clauses of one line (joined by "; " or "；")."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)
    more: tuple[Note, ...] = ()

    def text(self, lang: str = "en") -> str:
        values = {k: v.text(lang) if isinstance(v, Note) else v for k, v in self.values.items()}
        parts = [t(f"diagnose.note.{self.key}", lang, **values), *(n.text(lang) for n in self.more)]
        return t("diagnose.note.join", lang).join(parts)

    def __add__(self, other: Note) -> Note:
        return Note(self.key, self.values, (*self.more, other))

    def __str__(self) -> str:
        return self.text("en")


def note(key: str, **values: object) -> Note:
    """A Note: ``note("reached", step=...)``."""
    return Note(key, values)


@dataclass
class Assessment:
    """One candidate cause judged against the live state. Not a health `Finding` (domain/checks.py), which
    states a problem that holds: an assessment may also rule a cause out, or say the server cannot tell."""

    code: str
    verdict: Verdict
    evidence: list[dict[str, object]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    note: Note = field(default_factory=lambda: Note("none"))  # what the checker saw, in either language
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
