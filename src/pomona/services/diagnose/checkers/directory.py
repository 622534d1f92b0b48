"""The directory: the user exists, is enabled, holds a licence seat (or none is left)."""

from __future__ import annotations

from pomona.domain.reasons import ReasonCode as R
from pomona.services.diagnose.checkers.base import Checker, table
from pomona.services.diagnose.context import Context
from pomona.services.diagnose.model import Assessment, Verdict, ev, note


def _directory(code: R) -> Checker:
    def run(ctx: Context) -> Assessment:
        if ctx.upn is None:
            return Assessment(code, Verdict.UNKNOWN, [], {}, note("no_user"))
        u = ctx.user
        seats = ctx.tenant.licence_seats
        # Counting licensed users reads the whole directory: only when it decides between the two codes.
        free = (
            max(0, seats - ctx.uow.users.licensed_count(ctx.tenant.id))
            if u is not None and not u.licensed
            else 0
        )
        facts: dict[str, object] = {"seats": seats, "free": free}
        evidence: list[dict[str, object]] = (
            []
            if u is None
            else [{"kind": "user", "id": u.id, "upn": u.upn, "enabled": u.enabled, "licensed": u.licensed}]
        )
        holds = {
            R.USER_NOT_FOUND: u is None,
            R.USER_DISABLED: u is not None and not u.enabled,
            R.USER_NOT_LICENSED: u is not None and u.enabled and not u.licensed and free > 0,
            R.LICENSES_EXHAUSTED: u is not None and not u.licensed and free == 0,
        }[code]
        evidence += [ev(e) for e in ctx.refusals(code.value)[:3]]
        return Assessment(
            code,
            Verdict.PROVEN if holds else Verdict.RULED_OUT,
            evidence,
            facts,
            note("holds" if holds else "does_not_hold", code=code.value, upn=ctx.upn),
        )

    return run


CHECKERS: dict[str, Checker] = table(
    (R.USER_NOT_FOUND, R.USER_DISABLED, R.USER_NOT_LICENSED, R.LICENSES_EXHAUSTED), _directory
)
