"""Restrictions and re-enrollment: the policy engine's dry run for this user and device."""

from __future__ import annotations

from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, ev, note

_NEEDS_PLATFORM = {R.PLATFORM_BLOCKED, R.OS_VERSION_TOO_LOW, R.OS_VERSION_TOO_HIGH, R.PERSONAL_DEVICE_BLOCKED}
_NEEDS_DEVICE = {R.DEVICE_BLOCKED, R.DEVICE_ENROLLED_TO_OTHER_USER}


def _policy(code: R) -> Checker:
    def run(ctx: Context) -> Assessment:
        refusals = ctx.refusals(code.value)
        d = ctx.decision()
        platform, os_version, serial, udid = ctx.device_facts()
        facts: dict[str, object] = {}
        evidence: list[dict[str, object]] = [ev(e) for e in refusals[:5]]
        if d is not None:
            facts.update(d.facts)
            facts.update(
                count=d.device_count,
                limit=d.device_limit,
                restriction=(
                    d.limit_restriction.name
                    if code is R.DEVICE_LIMIT_REACHED and d.limit_restriction
                    else d.platform_restriction.name
                    if d.platform_restriction
                    else ""
                ),
                group=(d.platform_restriction.via_group if d.platform_restriction else None) or "",
            )
            evidence.append({"kind": "policy", "decision": d.to_dict()})
            if code is R.DEVICE_LIMIT_REACHED and ctx.user is not None:
                evidence += [
                    {"kind": "enrollment", "id": e.id, "udid": e.udid, "since": e.started_at.isoformat()}
                    for e in ctx.uow.enrollments.active_for_user(ctx.user.id)
                ]
        if d is not None and d.reason == code:
            return Assessment(code, Verdict.PROVEN, evidence, facts, note("policy_refuses", code=code.value))
        missing_facts = (code in _NEEDS_PLATFORM and platform is None) or (
            code in _NEEDS_DEVICE and not (serial or udid)
        )
        if refusals and (d is None or missing_facts):
            return Assessment(
                code,
                Verdict.PROVEN,
                evidence,
                {**refusals[0].detail, **facts},
                note("refused_at", code=code.value, at=f"{refusals[0].at:%Y-%m-%d %H:%M} UTC"),
            )
        if d is None or missing_facts:
            return Assessment(
                code,
                Verdict.UNKNOWN,
                evidence,
                facts,
                note("need_device"),
            )
        if refusals:
            return Assessment(
                code,
                Verdict.RULED_OUT,
                evidence,
                facts,
                note("no_longer_cause", at=f"{refusals[0].at:%Y-%m-%d %H:%M} UTC"),
            )
        return Assessment(code, Verdict.RULED_OUT, evidence, facts, note("policy_allows", code=code.value))

    return run


CHECKERS: dict[str, Checker] = table(
    (
        R.PLATFORM_BLOCKED,
        R.PERSONAL_DEVICE_BLOCKED,
        R.OS_VERSION_TOO_LOW,
        R.OS_VERSION_TOO_HIGH,
        R.DEVICE_LIMIT_REACHED,
        R.DEVICE_BLOCKED,
        R.DEVICE_ENROLLED_TO_OTHER_USER,
    ),
    _policy,
)
