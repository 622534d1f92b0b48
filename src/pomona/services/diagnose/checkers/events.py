"""Codes only the event log shows (the server's own refusals), and push reachability."""

from __future__ import annotations

from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, by_events, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, note


def _refused(code: R) -> Checker:
    return lambda ctx: by_events(ctx, code.value)


def _push(code: R) -> Checker:
    """A push that failed for this device: its refusal event (a dead token, a refused push), else the
    last answer APNs gave for the device's enrollment (an unreachable APNs is retried, not an event)."""

    def run(ctx: Context) -> Assessment:
        found = by_events(ctx, code.value)
        if found.verdict is Verdict.PROVEN or not ctx.enrollments:
            return found
        last = ctx.uow.reachability.last_pushes([e.id for e in ctx.enrollments])
        hits = [(eid, at) for eid, (at, status) in last.items() if status == code.value]
        if not hits:
            return found
        eid, at = hits[0]
        return Assessment(
            code,
            Verdict.PROVEN,
            [
                {
                    "kind": "push",
                    "enrollment_id": eid,
                    "at": None if at is None else at.isoformat(),
                    "status": code.value,
                }
            ],
            {"last_push": "" if at is None else f"{at:%Y-%m-%d %H:%M}"},
            note("push_failed", code=code.value)
            if at is None
            else note("push_failed_at", code=code.value, at=f"{at:%Y-%m-%d %H:%M} UTC"),
        )

    return run


def _unresponsive(ctx: Context) -> Assessment:
    """Pushes APNs accepted and the device silent since (the push service keeps the reachability)."""
    if not ctx.devices:
        return by_events(ctx, R.DEVICE_UNRESPONSIVE.value)
    udids = {d.udid for d in ctx.devices}
    mine = [e.id for e in ctx.enrollments]
    silent = [f for f in ctx.unresponsive(ctx.tenant.id, ctx.now, mine) if f.facts.get("udid") in udids]
    if silent:
        f = silent[0]
        return Assessment(
            R.DEVICE_UNRESPONSIVE,
            Verdict.LIKELY,
            [{"kind": "reachability", "code": f.code.value, **f.facts}],
            {"last_push": f.facts.get("last_push_at"), "last_seen": f.facts.get("last_seen_at")},
            note("silent"),
        )
    return Assessment(R.DEVICE_UNRESPONSIVE, Verdict.RULED_OUT, [], {}, note("answers_pushes"))


CHECKERS: dict[str, Checker] = {
    **table(
        (
            R.ENROLLMENT_TOKEN_INVALID,
            R.ENROLLMENT_TOKEN_EXPIRED,
            R.MALFORMED_REQUEST,
            R.SIGNATURE_INVALID,
            R.CERT_NOT_TRUSTED,
            R.CERT_DEVICE_MISMATCH,
            R.TOPIC_MISMATCH,
            R.UNKNOWN_ENROLLMENT,
            R.IDENTITY_ENDED,
            R.MESSAGE_TYPE_UNSUPPORTED,
        ),
        _refused,
    ),
    **table((R.PUSH_TOKEN_UNREGISTERED, R.PUSH_REJECTED, R.PUSH_UNREACHABLE), _push),
    R.DEVICE_UNRESPONSIVE.value: _unresponsive,
}
