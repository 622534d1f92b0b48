"""Tenant set-up: the MDM authority and the push certificate (the lifecycle's findings decide)."""

from __future__ import annotations

from pomona.domain.checks import authority_findings
from pomona.domain.models import EnrollmentStatus
from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, ev


def _authority(ctx: Context) -> Assessment:
    t = ctx.tenant
    ev_: list[dict[str, object]] = [{"kind": "tenant", "id": t.id, "mdm_authority": t.mdm_authority}]
    if authority_findings(t.mdm_authority):
        return Assessment(R.MDM_AUTHORITY_NOT_SET, Verdict.PROVEN, ev_, {}, "the tenant has no MDM authority")
    return Assessment(R.MDM_AUTHORITY_NOT_SET, Verdict.RULED_OUT, ev_, {}, f"authority is {t.mdm_authority}")


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
                "no push certificate" if missing else "a push certificate is present",
            )
        if missing or t.push_not_after is None:
            return Assessment(
                code, Verdict.RULED_OUT, evidence, facts, "no push certificate at all (see APNS_CERT_MISSING)"
            )
        left = t.push_not_after - ctx.now
        facts["days_left"] = max(0, left.days)
        v = Verdict.PROVEN if held else Verdict.RULED_OUT
        if code is R.APNS_CERT_EXPIRED:
            return Assessment(code, v, evidence, facts, f"expires {t.push_not_after:%Y-%m-%d}")
        if code is R.APNS_CERT_EXPIRING:
            return Assessment(code, v, evidence, facts, f"{left.days} days left")
        hits = ctx.refusals(code.value)
        if hits or held:
            state = [] if held is None else [{"kind": "push_certificate_state", **held.facts}]
            return Assessment(
                code,
                Verdict.PROVEN,
                evidence + state + [ev(e) for e in hits[:5]],
                facts,
                "APNs rejected the certificate: the tenant's pushes are held until a renewed certificate is uploaded",
            )
        return Assessment(
            code, Verdict.RULED_OUT, evidence, facts, "the topic is an MDM topic and APNs has not rejected it"
        )

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
            "the device enrolled under another push topic",
        )
    return Assessment(
        R.APNS_TOPIC_CHANGED, Verdict.RULED_OUT, [], {}, "the device's topic is the tenant's topic"
    )


CHECKERS: dict[str, Checker] = {
    R.MDM_AUTHORITY_NOT_SET.value: _authority,
    **table((R.APNS_CERT_MISSING, R.APNS_CERT_EXPIRED, R.APNS_CERT_EXPIRING, R.APNS_CERT_INVALID), _push),
    R.APNS_TOPIC_CHANGED.value: _topic_changed,
}
