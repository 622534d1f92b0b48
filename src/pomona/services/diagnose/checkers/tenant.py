"""Tenant set-up: the MDM authority and the push certificate (the lifecycle's findings decide)."""

from __future__ import annotations

from pomona.domain.checks import authority_findings
from pomona.domain.models import EnrollmentStatus
from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, ev, note


def _authority(ctx: Context) -> Assessment:
    t = ctx.tenant
    ev_: list[dict[str, object]] = [{"kind": "tenant", "id": t.id, "mdm_authority": t.mdm_authority}]
    if authority_findings(t.mdm_authority):
        return Assessment(R.MDM_AUTHORITY_NOT_SET, Verdict.PROVEN, ev_, {}, note("no_authority"))
    return Assessment(
        R.MDM_AUTHORITY_NOT_SET, Verdict.RULED_OUT, ev_, {}, note("authority", authority=t.mdm_authority)
    )


def _push(code: R) -> Checker:
    """Proven when the certificate lifecycle's findings hold `code` now (the one expiry table decides
    APNS_CERT_EXPIRING); APNS_CERT_INVALID is proven by the server's refusals too."""

    def run(ctx: Context) -> Assessment:
        t = ctx.tenant
        evidence: list[dict[str, object]] = [
            {
                "kind": "push_certificate",
                "topic": t.push_topic,
                "not_after": None if t.push_not_after is None else t.push_not_after.isoformat(),
            }
        ]
        facts: dict[str, object] = {
            "topic": t.push_topic or "",
            "expires": "" if t.push_not_after is None else f"{t.push_not_after:%Y-%m-%d}",
        }
        held = ctx.cert_finding(code)
        missing = ctx.cert_finding(R.APNS_CERT_MISSING) is not None
        if code is R.APNS_CERT_MISSING:
            v = Verdict.PROVEN if missing else Verdict.RULED_OUT
            return Assessment(
                code,
                v,
                evidence,
                facts,
                note("no_push_cert") if missing else note("push_cert_present"),
            )
        if missing or t.push_not_after is None:
            return Assessment(code, Verdict.RULED_OUT, evidence, facts, note("no_push_cert_at_all"))
        left = t.push_not_after - ctx.now
        facts["days_left"] = max(0, left.days)
        v = Verdict.PROVEN if held else Verdict.RULED_OUT
        if code is R.APNS_CERT_EXPIRED:
            return Assessment(code, v, evidence, facts, note("expires", date=f"{t.push_not_after:%Y-%m-%d}"))
        if code is R.APNS_CERT_EXPIRING:
            return Assessment(code, v, evidence, facts, note("days_left", days=left.days))
        hits = ctx.refusals(code.value)
        if hits or held:
            state = [] if held is None else [{"kind": "push_certificate_state", **held.facts}]
            return Assessment(
                code,
                Verdict.PROVEN,
                evidence + state + [ev(e) for e in hits[:5]],
                facts,
                note("apns_rejected"),
            )
        return Assessment(code, Verdict.RULED_OUT, evidence, facts, note("topic_ok"))

    return run


def _topic_changed(ctx: Context) -> Assessment:
    t = ctx.tenant
    orphaned = [
        e
        for e in ctx.enrollments
        if e.status is EnrollmentStatus.ACTIVE and t.push_topic and e.topic != t.push_topic
    ]
    if orphaned:
        return Assessment(
            R.APNS_TOPIC_CHANGED,
            Verdict.PROVEN,
            [{"kind": "enrollment", "id": e.id, "topic": e.topic} for e in orphaned],
            {"old_topic": orphaned[0].topic, "topic": t.push_topic or ""},
            note("other_topic"),
        )
    return Assessment(R.APNS_TOPIC_CHANGED, Verdict.RULED_OUT, [], {}, note("same_topic"))


CHECKERS: dict[str, Checker] = {
    R.MDM_AUTHORITY_NOT_SET.value: _authority,
    **table((R.APNS_CERT_MISSING, R.APNS_CERT_EXPIRED, R.APNS_CERT_EXPIRING, R.APNS_CERT_INVALID), _push),
    R.APNS_TOPIC_CHANGED.value: _topic_changed,
}
