"""Automated Device Enrollment: what Apple Business Manager says of the device (its record, its timeline,
the assignment Pomona keeps trying), the tenant's ABM tokens, and the device's steps at Pomona's ADE
endpoint (Step.ADE events).

- DEP_PROFILE_NOT_ASSIGNED: proven from the event the reconciliation leaves after REPORT_AFTER failed
  assignments, or from ABM's record (no profile, ``removed``), the failed assignments as evidence; the
  founding document's "profile made before the token was uploaded" is named when the timeline shows it.
  Ruled out once ABM shows a profile, the device posted its MachineInfo, or it enrolled.
- DEP_PROFILE_NOT_FOUND, DEP_PROFILE_REJECTED: proven from Apple's answer (a Step.DEP event, or a failed
  assignment in the timeline) while ABM shows the device no profile; ruled out when it shows one.
- The token codes (tenant-level): the tokens' expiry and the reason code of their last sync.
- DEP_DEVICE_ASSIGNED_ELSEWHERE (and ENROLLED_WITH_OTHER_MDM, enrollment.py): ABM's own answer, an event
  naming the serial or a timeline entry (NOT_ACCESSIBLE to an assignment).
- DEP_MFA_WITH_LEGACY_AUTH: proven from the endpoint's refusal; likely from the configuration (the device's
  profile uses legacy authentication and the user must pass MFA).
- DEP_NETWORK_ERROR: likely when ABM shows the device our profile yet no ADE step of it ever reached
  Pomona (only the device can prove it); ruled out once one did.
"""

from __future__ import annotations

from datetime import datetime

from pomona.domain.ade_profile import AuthMode
from pomona.domain.models import Event, Outcome, Step
from pomona.domain.reasons import ReasonCode as R
from pomona.ports import AbmHistoryEntry, AbmProfileRecord, AbmTokenInfo
from pomona.services.diagnose.checkers.base import Checker
from pomona.services.diagnose.context import WINDOW, AdeFacts, Context
from pomona.services.diagnose.model import Assessment, Note, Verdict, ev, note

EXPIRY_WARNING_DAYS = 30  # services/abm.py's EXPIRY_WARNING: a token this close to expiry is reported
NOT_ACCESSIBLE = "NOT_ACCESSIBLE"  # Apple's answer to assigning a device that is not this server's


def _at(t: datetime | None) -> str:
    return "" if t is None else f"{t:%Y-%m-%d %H:%M} UTC"


def _name(p: AbmProfileRecord | None, uuid: str = "") -> str:
    return p.name if p is not None else (uuid or "—")


def _auth(p: AbmProfileRecord) -> str:
    return str(p.settings.get("auth", AuthMode.MODERN.value))


def _entry(h: AbmHistoryEntry) -> dict[str, object]:
    return {"kind": "abm_history", **h.to_json()}


def _device(f: AdeFacts) -> list[dict[str, object]]:
    if f.record is None:
        return []
    d = f.record.device
    uuid, status = f.state
    return [
        {
            "kind": "abm_device",
            "serial": d.serial_number,
            "profile_status": status or d.profile_status,
            "profile_uuid": uuid or d.profile_uuid or None,
            "profile_assign_time": None
            if d.profile_assign_time is None
            else d.profile_assign_time.isoformat(),
            "profile_push_time": None if d.profile_push_time is None else d.profile_push_time.isoformat(),
            "deleted": f.record.deleted,
            "token": f.token.name if f.token is not None else f.record.token_id,
        }
    ]


def _reached(f: AdeFacts, code: str) -> Assessment | None:
    """Ruled out: the device got past Apple's side of ADE (its MachineInfo reached Pomona, or it enrolled)."""
    mi = f.machine_info()
    if mi is not None:
        return Assessment(code, Verdict.RULED_OUT, [ev(mi)], {}, note("ade_machineinfo", at=_at(mi.at)))
    if f.enrolled:
        return Assessment(code, Verdict.RULED_OUT, [], {}, note("ade_enrolled"))
    return None


def _held(f: AdeFacts, code: str, was: list[Event]) -> Assessment:
    """Ruled out: ABM shows a profile on the device (an earlier refusal, if any, no longer holds)."""
    uuid, status = f.state
    n = note("ade_profile_held", profile=_name(f.shown, uuid), serial=f.serial, status=status)
    if was:
        n += note("no_longer_holds")
    return Assessment(
        code,
        Verdict.RULED_OUT,
        _device(f) + [ev(e) for e in was[:3]],
        {"profile": _name(f.shown, uuid), "status": status},
        n,
    )


def _before_token(f: AdeFacts) -> tuple[Note | None, dict[str, object]]:
    """The founding document's case: the device's profile was made before its token was uploaded."""
    p, t = f.profile, f.token
    if p is None or t is None or p.created_at >= t.created_at:
        return None, {}
    facts: dict[str, object] = {
        "profile": p.name,
        "profile_created": _at(p.created_at),
        "token": t.name,
        "token_uploaded": _at(t.created_at),
    }
    return (
        note(
            "ade_before_token",
            profile=p.name,
            made=_at(p.created_at),
            token=t.name,
            uploaded=_at(t.created_at),
        ),
        facts,
    )


# --- the device's profile --------------------------------------------------------------------------------
def _not_assigned(ctx: Context) -> Assessment:
    code = R.DEP_PROFILE_NOT_ASSIGNED.value
    f = ctx.ade()
    reported = [
        e
        for e in ctx.events
        if e.step is Step.DEP and e.reason == code and e.outcome is Outcome.FAILED and e.serial == f.serial
    ]
    if f.serial is None:
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_no_serial"))
    if (done := _reached(f, code)) is not None:
        return done
    if f.held:
        return _held(f, code, reported)
    tries = [h for h in f.history if h.op_type == "assign-failed"]
    evidence = _device(f) + [ev(e) for e in reported[:3]] + [_entry(h) for h in tries[-5:]]
    if f.record is not None and tries and tries[-1].reason == NOT_ACCESSIBLE:
        if tries[-1].at >= f.record.updated_at:  # ABM no longer gives Pomona the device at all
            h = tries[-1]
            n = note("ade_not_accessible", serial=f.serial, at=_at(h.at), answer=h.reason)
            return Assessment(code, Verdict.UNKNOWN, evidence, {}, n)
    before, facts = _before_token(f)
    if f.record is None or f.record.deleted:
        if not reported:
            key = "ade_not_in_abm" if f.record is None else "ade_deleted"
            at = _at(f.record.updated_at) if f.record is not None else ""
            return Assessment(code, Verdict.UNKNOWN, evidence, {}, note(key, serial=f.serial, at=at))
    profile = f.profile
    facts = {**facts, "profile": _name(profile), "attempts": len(tries)}
    if f.record is not None and not f.record.deleted:
        n = note("ade_no_profile", serial=f.serial, status=f.state[1] or "empty")
    else:
        e = reported[0]
        n = note(
            "ade_reported",
            attempts=e.detail.get("attempts", len(tries)),
            profile=e.detail.get("profile", _name(profile)),
            answer=e.detail.get("answer", "—"),
            at=_at(e.at),
        )
    if tries:
        n += note("ade_tries", count=len(tries), at=_at(tries[-1].at), answer=tries[-1].reason or "FAILED")
    elif profile is None:
        n += note("ade_no_profile_known")
    if before is not None:
        n += before
    return Assessment(code, Verdict.PROVEN, evidence, facts, n)


def _apple_refused(code: R) -> Checker:
    """DEP_PROFILE_NOT_FOUND / DEP_PROFILE_REJECTED: Apple's answer about the device's profile."""

    def run(ctx: Context) -> Assessment:
        f = ctx.ade()
        profile = f.profile
        events = [
            e
            for e in ctx.dep_events(code.value)
            if e.outcome is Outcome.FAILED
            and (
                (f.serial is not None and e.serial == f.serial)
                or profile is None
                or e.detail.get("profile") in (None, profile.name)
            )
        ]
        hist = [h for h in f.history if h.reason == code.value]
        if f.held:
            return _held(f, code.value, events)
        if events or hist:
            last_at = max([e.at for e in events[:1]] + [h.at for h in hist[-1:]])
            named = str(events[0].detail.get("profile") or _name(profile)) if events else _name(profile)
            facts: dict[str, object] = {"profile": named, "refused_at": _at(last_at)}
            if events:
                d = events[0].detail
                lint = d.get("lint")
                rules = ", ".join(str(x) for x in lint) if isinstance(lint, list) else ""
                facts["field"] = d.get("code") or rules
            return Assessment(
                code.value,
                Verdict.PROVEN,
                _device(f) + [ev(e) for e in events[:5]] + [_entry(h) for h in hist[-5:]],
                facts,
                note("ade_apple_refused", code=code.value, profile=named, at=_at(last_at)),
            )
        return Assessment(
            code.value,
            Verdict.RULED_OUT,
            _device(f),
            {},
            note("ade_none_recent", code=code.value, days=WINDOW.days),
        )

    return run


# --- the tenant's tokens -----------------------------------------------------------------------------------
def _tokens(f: AdeFacts) -> list[AbmTokenInfo]:
    """The tenant's tokens, the one listing the device first."""
    first = f.token
    return ([first] if first else []) + [t for t in f.tokens if first is None or t.id != first.id]


def _token_evidence(ts: list[AbmTokenInfo]) -> list[dict[str, object]]:
    return [
        {
            "kind": "abm_token",
            "name": t.name,
            "expires": t.access_token_expiry.isoformat(),
            "last_sync_at": None if t.last_sync_at is None else t.last_sync_at.isoformat(),
            "last_error": t.last_error,
            "last_error_at": None if t.last_error_at is None else t.last_error_at.isoformat(),
        }
        for t in ts
    ]


def _token_missing(ctx: Context) -> Assessment:
    code = R.DEP_TOKEN_MISSING.value
    f = ctx.ade()
    ts = _tokens(f)
    if not ts:
        # Only a tenant that set ADE up (a profile, a device at the ADE endpoint, a refused upload) misses
        # its token: a tenant that does not use ADE is not told so on every diagnosis.
        refused = ctx.dep_events(R.DEP_TOKEN_INVALID.value) + ctx.dep_events(R.DEP_TOKEN_EXPIRED.value)
        if f.profiles or f.ade_events or refused:
            evidence: list[dict[str, object]] = [
                {"kind": "ade_profile", "name": p.name} for p in f.profiles[:3]
            ]
            return Assessment(
                code, Verdict.PROVEN, evidence + [ev(e) for e in refused[:3]], {}, note("ade_no_tokens")
            )
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_not_set_up"))
    return Assessment(
        code,
        Verdict.RULED_OUT,
        _token_evidence(ts),
        {},
        note("ade_tokens", count=len(ts), names=", ".join(t.name for t in ts)),
    )


def _failed_sync(ctx: Context, code: str, ts: list[AbmTokenInfo]) -> Assessment | None:
    """Proven: a token's last sync failed with `code` (kept on the token until a sync succeeds)."""
    bad = [t for t in ts if t.last_error == code]
    if not bad:
        return None
    t = bad[0]
    return Assessment(
        code,
        Verdict.PROVEN,
        _token_evidence(bad),
        {"token": t.name, "since": _at(t.last_error_at), "last_sync": _at(t.last_sync_at)},
        note("ade_last_sync_failed", token=t.name, code=code, at=_at(t.last_error_at)),
    )


def _upload_refused(ctx: Context, code: str) -> Assessment | None:
    """Proven: an upload of a token was refused with `code` and no token was kept."""
    refused = [e for e in ctx.dep_events(code) if e.outcome is Outcome.FAILED and "token" not in e.detail]
    if not refused:
        return None
    return Assessment(
        code,
        Verdict.PROVEN,
        [ev(e) for e in refused[:3]],
        {"refused_at": _at(refused[0].at)},
        note("ade_token_refused", code=code, at=_at(refused[0].at)),
    )


def _token_expired(ctx: Context) -> Assessment:
    code = R.DEP_TOKEN_EXPIRED.value
    ts = _tokens(ctx.ade())
    if not ts:
        return _upload_refused(ctx, code) or Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_no_tokens"))
    for t in ts:
        left = t.access_token_expiry - ctx.now
        facts: dict[str, object] = {"token": t.name, "expires": f"{t.access_token_expiry:%Y-%m-%d}"}
        if left.total_seconds() <= 0:
            return Assessment(
                code,
                Verdict.PROVEN,
                _token_evidence([t]),
                facts,
                note("ade_token_expired", token=t.name, date=facts["expires"]),
            )
        if left.days < EXPIRY_WARNING_DAYS:
            return Assessment(
                code,
                Verdict.PROVEN,
                _token_evidence([t]),
                {**facts, "days_left": left.days},
                note("ade_token_expires", token=t.name, date=facts["expires"], days=left.days),
            )
    if (failed := _failed_sync(ctx, code, ts)) is not None:  # Apple says so before the date we know
        return failed
    return Assessment(
        code, Verdict.RULED_OUT, _token_evidence(ts), {}, note("ade_token_ok", days=EXPIRY_WARNING_DAYS)
    )


def _sync_error(code: R) -> Checker:
    """DEP_TOKEN_INVALID, DEP_TERMS_NOT_ACCEPTED: the reason code of a token's last sync (or a refused
    upload, for an invalid token)."""

    def run(ctx: Context) -> Assessment:
        ts = _tokens(ctx.ade())
        found = _failed_sync(ctx, code.value, ts)
        if found is None and code is R.DEP_TOKEN_INVALID and not ts:
            found = _upload_refused(ctx, code.value)
        if found is not None:
            return found
        if not ts:
            return Assessment(code.value, Verdict.UNKNOWN, [], {}, note("ade_no_tokens"))
        return Assessment(code.value, Verdict.RULED_OUT, _token_evidence(ts), {}, note("ade_syncs_ok"))

    return run


def _cursor_expired(ctx: Context) -> Assessment:
    """Healed by the sync itself (a full fetch), but recorded: proven while it happened in the window."""
    code = R.DEP_CURSOR_EXPIRED.value
    ts = _tokens(ctx.ade())
    if (failed := _failed_sync(ctx, code, ts)) is not None:
        return failed
    seen = [e for e in ctx.dep_events(code) if e.outcome is Outcome.FAILED]
    if seen:
        e = seen[0]
        n = note("ade_cursor_healed", at=_at(e.at))
        token = next((t for t in ts if t.name == e.detail.get("token")), None)
        if token is not None and token.last_sync_at is not None and token.last_sync_at >= e.at:
            n += note("ade_synced_since", at=_at(token.last_sync_at))
        return Assessment(
            code,
            Verdict.PROVEN,
            [ev(x) for x in seen[:3]] + _token_evidence(ts),
            {"refused_at": _at(e.at)},
            n,
        )
    if not ts:
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_no_tokens"))
    return Assessment(
        code, Verdict.RULED_OUT, _token_evidence(ts), {}, note("ade_none_recent", code=code, days=WINDOW.days)
    )


# --- another MDM server --------------------------------------------------------------------------------------
def elsewhere(ctx: Context) -> Assessment:
    """ABM's own answer that the device is another MDM server's (also ENROLLED_WITH_OTHER_MDM's evidence)."""
    code = R.DEP_DEVICE_ASSIGNED_ELSEWHERE.value
    f = ctx.ade()
    if f.serial is None:
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_no_serial"))
    said = [e for e in ctx.events if e.reason == code and e.serial == f.serial]
    hist = [h for h in f.history if h.reason in (code, NOT_ACCESSIBLE)]
    if f.listed and f.record is not None:
        newest = max([e.at for e in said[:1]] + [h.at for h in hist[-1:]], default=None)
        if newest is None or f.record.updated_at >= newest:
            n = note("ade_listed", serial=f.serial)
            if newest is not None:
                n += note("no_longer_holds")
            return Assessment(code, Verdict.RULED_OUT, _device(f), {}, n)
    if said:
        e = said[0]
        return Assessment(
            code,
            Verdict.PROVEN,
            [ev(x) for x in said[:3]] + _device(f),
            {"refused_at": _at(e.at)},
            note("ade_elsewhere_event", serial=f.serial, at=_at(e.at)),
        )
    if hist:
        h = hist[-1]
        return Assessment(
            code,
            Verdict.PROVEN,
            [_entry(x) for x in hist[-3:]] + _device(f),
            {"refused_at": _at(h.at)},
            note("ade_not_accessible", serial=f.serial, at=_at(h.at), answer=h.reason),
        )
    if f.record is not None and f.record.deleted:
        return Assessment(
            code,
            Verdict.LIKELY,
            _device(f) + [_entry(h) for h in f.history[-3:]],
            {},
            note("ade_deleted", serial=f.serial, at=_at(f.record.updated_at)),
        )
    return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_not_in_abm", serial=f.serial))


# --- sign-in in Setup Assistant -------------------------------------------------------------------------------
def _mfa_legacy(ctx: Context) -> Assessment:
    code = R.DEP_MFA_WITH_LEGACY_AUTH.value
    refused = [
        e for e in ctx.events if e.step is Step.ADE and e.reason == code and e.outcome is Outcome.FAILED
    ]
    if refused:
        e = refused[0]
        upn = str(e.detail.get("upn") or e.upn or ctx.upn or "")
        return Assessment(
            code,
            Verdict.PROVEN,
            [ev(x) for x in refused[:5]],
            {"upn": upn, "profile": e.detail.get("profile"), "refused_at": _at(e.at)},
            note("ade_mfa_refused", upn=upn, at=_at(e.at)),
        )
    f = ctx.ade()
    profile = f.profile
    if profile is None and f.serial is None and ctx.user is not None:
        profile = next((p for p in f.profiles if _auth(p) == AuthMode.LEGACY.value), None)
    if profile is None:
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("ade_no_profile_known"))
    pe: list[dict[str, object]] = [{"kind": "ade_profile", "name": profile.name, "auth": _auth(profile)}]
    if _auth(profile) != AuthMode.LEGACY.value:
        return Assessment(
            code,
            Verdict.RULED_OUT,
            pe,
            {"profile": profile.name},
            note("ade_modern", profile=profile.name, auth=_auth(profile)),
        )
    if ctx.user is None:
        return Assessment(
            code, Verdict.UNKNOWN, pe, {"profile": profile.name}, note("ade_need_user", profile=profile.name)
        )
    pe.append({"kind": "user", "upn": ctx.user.upn, "mfa_required": ctx.user.mfa_required})
    if ctx.user.mfa_required:
        return Assessment(
            code,
            Verdict.LIKELY,
            pe,
            {"profile": profile.name, "upn": ctx.user.upn},
            note("ade_mfa_config", profile=profile.name, upn=ctx.user.upn),
        )
    return Assessment(
        code, Verdict.RULED_OUT, pe, {"profile": profile.name}, note("ade_no_mfa", upn=ctx.user.upn)
    )


# --- the device and Apple ---------------------------------------------------------------------------------------
def _network(ctx: Context) -> Assessment:
    """XPC_TYPE_ERROR Connection invalid: only the device sees it. Likely when ABM shows the device our
    profile yet none of its ADE steps ever reached Pomona; ruled out once one did."""
    code = R.DEP_NETWORK_ERROR.value
    f = ctx.ade()
    if f.serial is None:
        return Assessment(code, Verdict.UNKNOWN, [], {}, note("device_only"))
    if f.ade_events:
        e = f.ade_events[0]
        return Assessment(code, Verdict.RULED_OUT, [ev(e)], {}, note("ade_reached", at=_at(e.at)))
    if f.enrolled:
        return Assessment(code, Verdict.RULED_OUT, [], {}, note("ade_enrolled"))
    if f.held and f.shown is not None and f.record is not None:
        d, status = f.record.device, f.state[1]
        since = d.profile_push_time or d.profile_assign_time or f.record.updated_at
        return Assessment(
            code,
            Verdict.LIKELY,
            _device(f),
            {"profile": f.shown.name, "status": status, "since": _at(since)},
            note("ade_silent", profile=f.shown.name, serial=f.serial, status=status, since=_at(since)),
            basis="device",  # the fault is the device's: the answer carries what to check on it
        )
    return Assessment(code, Verdict.UNKNOWN, _device(f), {}, note("device_only"))


CHECKERS: dict[str, Checker] = {
    R.DEP_PROFILE_NOT_ASSIGNED.value: _not_assigned,
    R.DEP_PROFILE_NOT_FOUND.value: _apple_refused(R.DEP_PROFILE_NOT_FOUND),
    R.DEP_PROFILE_REJECTED.value: _apple_refused(R.DEP_PROFILE_REJECTED),
    R.DEP_DEVICE_ASSIGNED_ELSEWHERE.value: elsewhere,
    R.DEP_MFA_WITH_LEGACY_AUTH.value: _mfa_legacy,
    R.DEP_NETWORK_ERROR.value: _network,
    R.DEP_TOKEN_MISSING.value: _token_missing,
    R.DEP_TOKEN_EXPIRED.value: _token_expired,
    R.DEP_TOKEN_INVALID.value: _sync_error(R.DEP_TOKEN_INVALID),
    R.DEP_TERMS_NOT_ACCEPTED.value: _sync_error(R.DEP_TERMS_NOT_ACCEPTED),
    R.DEP_CURSOR_EXPIRED.value: _cursor_expired,
}
