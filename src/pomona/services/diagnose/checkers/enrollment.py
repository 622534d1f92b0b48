"""The enrollment's course on the device: profile installed or not, abandoned, held at Setup Assistant."""

from __future__ import annotations

from datetime import timedelta

from pomona.domain.checks import AWAITING_STUCK_AFTER
from pomona.domain.models import Enrollment, EnrollmentStatus, Step
from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, ev, note

RECENT_CHECKIN = timedelta(days=7)


def _already_installed(ctx: Context) -> Assessment:
    active = [e for e in ctx.enrollments if e.status is EnrollmentStatus.ACTIVE]
    repeats = [e for e in ctx.events if e.step is Step.PROFILE and e.detail.get("repeat_download")]
    seen = [d for d in ctx.devices if d.last_seen_at and ctx.now - d.last_seen_at <= RECENT_CHECKIN]
    evidence = [ev(e) for e in repeats[:5]] + [
        {"kind": "enrollment", "id": e.id, "udid": e.udid} for e in active
    ]
    if active and seen:
        return Assessment(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.LIKELY,
            evidence,
            {"last_seen": f"{seen[0].last_seen_at:%Y-%m-%d %H:%M}"},
            note("enrolled_recently"),
        )
    if repeats:
        return Assessment(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.LIKELY,
            evidence,
            {"downloads": len(repeats)},
            note("repeat_download"),
        )
    if ctx.user is not None or ctx.devices:
        return Assessment(
            R.MDM_PROFILE_ALREADY_INSTALLED,
            Verdict.RULED_OUT,
            evidence,
            {},
            note("no_active_enrollment"),
        )
    return Assessment(R.MDM_PROFILE_ALREADY_INSTALLED, Verdict.UNKNOWN, evidence, {}, note("no_subject"))


def _other_mdm(ctx: Context) -> Assessment:
    return Assessment(
        R.ENROLLED_WITH_OTHER_MDM,
        Verdict.UNKNOWN,
        [],
        {},
        note("other_mdm_device_only"),
    )


def _abandoned(ctx: Context) -> Assessment:
    """The attempt's stuck step: a profile served (or an Authenticate accepted) and nothing after it."""
    a = ctx.attempt
    if a is None or "profile" not in a.ok:
        return Assessment(R.ENROLLMENT_ABANDONED, Verdict.RULED_OUT, [], {}, note("no_profile_served"))
    last = a.furthest() or a.ok["profile"]
    if a.state == "stalled":
        quiet = int((ctx.now - a.last_at).total_seconds() // 60)
        return Assessment(
            R.ENROLLMENT_ABANDONED,
            Verdict.LIKELY,
            [ev(last)],
            {"served_at": f"{a.ok['profile'].at:%Y-%m-%d %H:%M}", "step": last.step.value},
            note("stalled", step=last.step.value, at=f"{last.at:%Y-%m-%d %H:%M} UTC", minutes=quiet),
        )
    if a.state == "in_progress":
        return Assessment(
            R.ENROLLMENT_ABANDONED,
            Verdict.UNKNOWN,
            [ev(last)],
            {},
            note("in_progress", step=last.step.value, at=f"{last.at:%H:%M} UTC"),
        )
    return Assessment(
        R.ENROLLMENT_ABANDONED,
        Verdict.RULED_OUT,
        [ev(last)],
        {},
        note("completed" if a.state == "enrolled" else "refused_attempt"),
    )


def _install_failed(ctx: Context) -> Assessment:
    """Only the device sees it; the server sees a profile served and the device never coming back."""
    a = ctx.attempt
    if a is not None and "profile" in a.ok and a.state == "stalled" and not a.refusals:
        if a.passed("install") is None:
            return Assessment(
                R.PROFILE_INSTALL_FAILED,
                Verdict.LIKELY,
                [ev(a.ok["profile"])],
                {},
                note("never_came_back"),
            )
    return Assessment(R.PROFILE_INSTALL_FAILED, Verdict.UNKNOWN, [], {}, note("device_only"))


def _held_facts(ctx: Context, e: Enrollment) -> dict[str, object]:
    """The held device's serial, UDID and since when: the resolution's `pomona abm release --serial`."""
    device = next((d for d in ctx.devices if d.id == e.device_id), None)
    since = e.token_updated_at.isoformat() if e.token_updated_at else None
    return {"serial": None if device is None else device.serial, "udid": e.udid, "since": since}


def _stuck(ctx: Context) -> Assessment:
    stuck = [
        e
        for e in ctx.enrollments
        if e.status is EnrollmentStatus.ACTIVE
        and e.awaiting_configuration
        and e.token_updated_at
        and ctx.now - e.token_updated_at > AWAITING_STUCK_AFTER
    ]
    if stuck:
        return Assessment(
            R.AWAITING_CONFIGURATION_STUCK,
            Verdict.PROVEN,
            [
                {
                    "kind": "enrollment",
                    "id": e.id,
                    "since": e.token_updated_at.isoformat() if e.token_updated_at else None,
                }
                for e in stuck
            ],
            _held_facts(ctx, stuck[0]),
            note("held_at_setup"),
        )
    return Assessment(R.AWAITING_CONFIGURATION_STUCK, Verdict.RULED_OUT, [], {}, note("none_waiting"))


CHECKERS: dict[str, Checker] = {
    R.MDM_PROFILE_ALREADY_INSTALLED.value: _already_installed,
    R.ENROLLED_WITH_OTHER_MDM.value: _other_mdm,
    R.ENROLLMENT_ABANDONED.value: _abandoned,
    R.PROFILE_INSTALL_FAILED.value: _install_failed,
    R.AWAITING_CONFIGURATION_STUCK.value: _stuck,
}
