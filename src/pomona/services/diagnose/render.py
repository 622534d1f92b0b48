"""The stable, documented JSON shape of a diagnosis (docs/diagnose.md), in the user's language."""

from __future__ import annotations

from pomona import knowledge
from pomona.domain.reasons import ReasonCode as R
from pomona.i18n import t
from pomona.services.diagnose.service import Diagnosis


def to_json(d: Diagnosis, lang: str) -> dict[str, object]:
    """The stable, documented JSON shape (docs/diagnose.md): findings ranked, the first is the answer."""
    out = []
    for f in d.findings:
        text = knowledge.text_for(f.code, lang, **f.facts)
        out.append(
            {
                "code": f.code,
                "verdict": f.verdict.value,
                "title": text.title,
                "cause": text.cause,
                "device_only": knowledge.device_only(f.code),
                "observed": f.note,
                "evidence": f.evidence,
                "resolution": list(text.resolution),
            }
        )
    top = out[0]
    first_steps = list(knowledge.text_for(d.findings[0].code, lang, **d.findings[0].facts).resolution)
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
        "funnel": d.funnel,
        "checked": d.checked,
        "ask": _questions(lang) if unknown else [],
    }


def _questions(lang: str) -> list[str]:
    return [t(f"diagnose.ask.{i}", lang) for i in range(1, 6)]
