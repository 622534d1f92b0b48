"""The stable, documented JSON shape of a diagnosis (docs/diagnose.md), in the user's language."""

from __future__ import annotations

from pomona import knowledge
from pomona.domain.reasons import ReasonCode as R
from pomona.i18n import t
from pomona.services.diagnose.model import Assessment
from pomona.services.diagnose.service import Diagnosis


def _finding(f: Assessment, lang: str) -> dict[str, object]:
    text = knowledge.text_for(f.code, lang, **f.facts)
    return {
        "code": f.code,
        "verdict": f.verdict.value,
        "title": text.title,
        "cause": text.cause,
        "device_only": knowledge.device_only(f.code),
        "breaks": knowledge.cause(f.code).breaks,
        "basis": f.basis,
        "observed": f.note.text(lang),
        "evidence": f.evidence,
        "resolution": list(text.resolution),
        "device_checks": list(text.device_checks) if f.basis == "device" else [],
    }


def to_json(d: Diagnosis, lang: str) -> dict[str, object]:
    """The stable, documented JSON shape (docs/diagnose.md): findings ranked, the first is the answer;
    tenant faults that did not stop this attempt under `also_wrong`; `explain` is the reasoning."""
    out = [_finding(f, lang) for f in d.findings]
    also = [_finding(f, lang) for f in d.also_wrong]
    top = out[0]
    first_steps: list[str] = top["resolution"]  # type: ignore[assignment]
    unknown = top["code"] == R.UNKNOWN
    return {
        "tenant": d.tenant,
        "upn": d.upn,
        "device": d.device,
        "lang": lang,
        "matched_messages": d.matched_messages,
        "answer": {
            "code": top["code"],
            "verdict": top["verdict"],
            "title": top["title"],
            "first_step": first_steps[0] if first_steps else "",
        },
        "findings": out,
        "also_wrong": also,
        "attempt": d.attempt,
        "funnel": d.funnel,
        "checked": d.checked,
        "explain": [
            {
                "code": f.code,
                "verdict": f.verdict.value,
                "basis": f.basis,
                "why": f.note.text(lang),
                "section": section,
            }
            for section, group in (("findings", d.findings), ("also_wrong", d.also_wrong))
            for f in group
        ],
        "ask": _questions(lang) if unknown else [],
    }


def _questions(lang: str) -> list[str]:
    return [t(f"diagnose.ask.{i}", lang) for i in range(1, 6)]
