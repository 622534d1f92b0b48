"""Which causes to check, and how the verdicts become one answer: evidence about this attempt first.

The order of authority, highest first:

1. Evidence: a refusal the server recorded in the attempt the report is about proves its code. The
   answer is the first refusal of the attempt's last episode; its other refusals follow, proven.
2. The funnel: a cause that breaks a step the attempt got past is ruled out for this attempt, whatever
   the live state says ("the device reached Authenticate at 10:42, so DNS discovery worked"); a cause the
   server always records when it stops a step is ruled out when the attempt ended before that step.
3. The live state of this user and device (the directory, the policy's dry run, the device's state).
4. Tenant faults (certificate, authority, DNS) not tied to this attempt go to "also wrong in this
   tenant"; one is the answer only when nothing else fits and the reported message can mean it.
5. Device-side causes: when the message matches a row whose cause is on the device and every
   server-side cause the message could mean is ruled out, that cause is likely.
6. Nothing found: UNKNOWN first. A cause is never called proven on a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pomona import knowledge
from pomona.domain.models import Event
from pomona.domain.reasons import ReasonCode as R
from pomona.knowledge import MessageMatch
from pomona.services.diagnose.funnel import Attempt
from pomona.services.diagnose.model import Assessment, Note, Verdict, ev, note

# Checked only when a report names them: the well-known document matters for account-driven enrollment
# only (and costs an HTTP request).
ONLY_WHEN_REPORTED = frozenset({R.WELL_KNOWN_DISCOVERY_FAILED.value})
# Checked on every diagnosis, for "also wrong in this tenant".
TENANT_CHECKS = (
    R.MDM_AUTHORITY_NOT_SET.value,
    R.APNS_CERT_MISSING.value,
    R.APNS_CERT_EXPIRED.value,
    R.APNS_CERT_INVALID.value,
    R.APNS_CERT_EXPIRING.value,
    R.DNS_ENROLLMENT_CNAME_MISSING.value,
    R.DNS_ENROLLMENT_CNAME_WRONG.value,
    R.DNS_REGISTRATION_CNAME_MISSING.value,
)
# The steps a note names in words (diagnose.note.step.<step> in the catalogues); others by their id.
_STEP_NAMES = frozenset(
    {"discovery", "portal", "profile", "install", "scep", "authenticate", "tokenupdate", "command"}
)


def _step(step: str) -> Note | str:
    return note(f"step.{step}") if step in _STEP_NAMES else step


def candidates(message: str | None, matches: Sequence[MessageMatch], checkable: Iterable[str]) -> list[str]:
    """The causes the message can mean (the document's causes first, in its order, then what Pomona
    adds); none for a message nobody knows; every checkable one without a message. The tenant checks are
    added by the service for every diagnosis."""
    if message and not matches:
        return []
    if matches:
        out: list[str] = []
        for m in matches:
            out += [c for c in m.codes if c not in out]
        for m in matches:
            out += [c for c in m.also if c not in out]
        return out
    return [c for c in checkable if c not in ONLY_WHEN_REPORTED]


@dataclass
class Ranked:
    findings: list[Assessment]  # the answer first
    also_wrong: list[Assessment] = field(default_factory=list)  # tenant faults not tied to this attempt


def _when(e: Event) -> str:
    return f"{e.at:%Y-%m-%d %H:%M} UTC"


def apply_evidence(a: Assessment, refusals: list[Event], first: bool) -> None:
    """A refusal in this attempt proves its code, whatever the state says now."""
    e = refusals[0]
    was = a.verdict
    a.verdict = Verdict.PROVEN
    a.basis = "evidence"
    a.evidence = [ev(r) for r in refusals[:5]] + [x for x in a.evidence if x.get("kind") != "event"]
    a.facts = {**e.detail, **a.facts, "refused_at": _when(e), "step": e.step.value}
    a.note = note("refused_first" if first else "refused_also", step=e.step.value, code=a.code, at=_when(e))
    if was is Verdict.RULED_OUT:
        a.note += note("no_longer_holds")
        a.facts["still_holds"] = False


def apply_funnel(a: Assessment, attempt: Attempt | None) -> bool:
    """Rule the cause out for this attempt when the funnel shows it did not stop it; True if it did."""
    if attempt is None or a.verdict is Verdict.RULED_OUT:  # the live state already rules it out
        return False
    c = knowledge.cause(a.code)
    if c.breaks in ("none", "ade"):
        return False
    past = attempt.passed(c.breaks)
    if past is not None:
        a.verdict = Verdict.RULED_OUT
        a.basis = "funnel"
        a.facts = {**a.facts, "reached": past.step.value, "reached_at": _when(past)}
        a.note = note("reached", step=_step(past.step.value), at=_when(past), worked=_step(c.breaks))
        return True
    if c.seen and attempt.never_reached(c.breaks):
        furthest = attempt.furthest()
        first = attempt.refusals[0] if attempt.refusals else None
        if first is not None:
            why = note("stopped_by", code=first.reason, step=first.step.value, at=_when(first))
        elif furthest is not None:
            why = note("stopped_after", step=furthest.step.value, at=_when(furthest), before=_step(c.breaks))
        else:
            why = note("stopped_before", before=_step(c.breaks))
        a.verdict = Verdict.RULED_OUT
        a.basis = "funnel"
        a.note = why + note("would_have_left", code=a.code)
        return True
    return False


def rank(
    assessments: list[Assessment],
    *,
    attempt: Attempt | None,
    episode: list[Event],
    message_codes: Sequence[str],
    matches: Sequence[MessageMatch],
    device_named: bool = True,
) -> Ranked:
    """Apply the order of authority (module doc) and sort: the answer first.

    A user's latest attempt that enrolled says nothing about a failure they report on another device:
    the funnel rules causes out for it only when the report names the device."""
    if attempt is not None and attempt.state == "enrolled" and not device_named:
        attempt = None
    by_code = {a.code: a for a in assessments}
    refused: dict[str, list[Event]] = {}
    for e in episode:
        if e.reason:
            refused.setdefault(e.reason, []).append(e)
    for i, (code, events) in enumerate(refused.items()):
        apply_evidence(by_code[code], events, first=i == 0)
    also: list[Assessment] = []
    untied: set[str] = set()  # tenant faults the funnel shows did not stop this attempt
    for a in assessments:
        if a.code in refused:
            continue
        tenant = knowledge.cause(a.code).scope == "tenant"
        held, seen = a.verdict.found, a.note
        ruled = apply_funnel(a, attempt)
        if tenant and held:
            if ruled:  # wrong in the tenant, but it did not stop this attempt
                untied.add(a.code)
                a.verdict = Verdict.PROVEN
                a.note = seen + note("did_not_stop", why=a.note)
            also.append(a)
    aside = {id(a) for a in also}
    found_elsewhere = bool(refused) or any(a.verdict.found and id(a) not in aside for a in assessments)
    # A tenant fault is the answer only when nothing else fits and the reported message can mean it.
    fallback = None
    if not found_elsewhere:
        fallback = next((a for c in message_codes for a in also if a.code == c and c not in untied), None)
        if fallback is not None:
            also = [a for a in also if a is not fallback]
            aside.discard(id(fallback))
            fallback.basis = "fallback"
            fallback.note += note("fallback")
    device_side(assessments, aside, matches, found_elsewhere or fallback is not None)
    order = {c: i for i, c in enumerate(message_codes)}
    refused_order = {c: i for i, c in enumerate(refused)}
    primary = {c for m in matches for c in m.codes} or set(message_codes)

    def key(a: Assessment) -> tuple[int, int, int, int, int]:
        return (
            0 if a.code in refused else 1,
            refused_order.get(a.code, 0),
            0 if a.verdict.found else a.verdict.rank,
            0 if a.code in primary else 1,
            a.verdict.rank * 1000 + order.get(a.code, 999),
        )

    findings = sorted((a for a in assessments if id(a) not in aside), key=key)
    if not any(a.verdict.found for a in findings):
        findings.insert(
            0,
            Assessment(
                R.UNKNOWN,
                Verdict.UNKNOWN,
                [],
                {},
                note("nothing_proven"),
                basis="state",
            ),
        )
    return Ranked(
        findings, sorted(also, key=lambda a: TENANT_CHECKS.index(a.code) if a.code in TENANT_CHECKS else 99)
    )


def device_side(
    assessments: list[Assessment], aside: set[int], matches: Sequence[MessageMatch], found: bool
) -> None:
    """A document row whose cause is on the device: likely when the server side it could mean is clean
    (each server-side cause ruled out, or a tenant fault set aside, `aside` holding their ids)."""
    if found:
        return
    by_code = {a.code: a for a in assessments}
    for m in matches:
        codes = [c for c in (*m.codes, *m.also) if c in by_code]
        device = [c for c in codes if knowledge.device_only(c)]
        server = [c for c in codes if not knowledge.device_only(c)]
        if not device:
            continue
        clean = all(by_code[c].verdict is Verdict.RULED_OUT or id(by_code[c]) in aside for c in server)
        if not clean:
            continue
        for c in device:
            a = by_code[c]
            if a.verdict is Verdict.RULED_OUT:
                continue
            a.verdict, a.basis = Verdict.LIKELY, "device"
            a.note = note("device_side", ruled=", ".join(server) or "—")
        return
