"""The JSON shapes Pomona shows: one function per object, used by the admin API, the CLI's ``--json``
and (later) the console, so the three never disagree.

Adapters import this module; it imports only the domain, the catalogues (pomona.i18n) and stdlib codecs.
Times are ISO 8601 in UTC, bytes are base64, absent values are ``null``.

Text for people is rendered here, at the edge, in the reader's language: the names Pomona gives objects
itself (``display_name``: stored as stable English names, shown translated) and catalogue messages carried
by errors and decisions (``render``, ``error_text``).
"""

from __future__ import annotations

import base64
import plistlib
from collections.abc import Mapping
from datetime import datetime

from pomona.domain.errors import ErrorResponse
from pomona.domain.models import (
    ApiToken,
    CorporateIdentifier,
    Device,
    Enrollment,
    EnrollmentToken,
    Event,
    QueuedCommand,
    Tenant,
    User,
)
from pomona.domain.policy import (
    Access,
    Decision,
    DeviceTypeRestriction,
    Restriction,
    builtin_name_key,
)
from pomona.i18n import Msg, t
from pomona.protocol.dep import AbmDevice


def display_name(name: str, lang: str | None = None) -> str:
    """An object's name as the reader sees it: a name Pomona gave (the built-in Default restrictions, a
    restriction created without a name) in the reader's language; a name an admin gave, as it is."""
    builtin = builtin_name_key(name)
    return name if builtin is None else t(builtin[0], lang, **builtin[1])


PLATFORM_NAMES = {"ios": "iOS", "ipados": "iPadOS"}  # Platform values as people write them


def _value(value: object, lang: str | None) -> object:
    """One value a message names, for the reader: a nested message in their language, a name Pomona
    gave translated, anything else as it is."""
    if isinstance(value, Msg):
        return render(value, lang)
    if isinstance(value, str):
        return display_name(value, lang)
    return value


def _localized(params: Mapping[str, object], lang: str | None) -> dict[str, object]:
    out = {k: _value(v, lang) for k, v in params.items()}
    if isinstance(out.get("platform"), str):
        out["platform"] = PLATFORM_NAMES.get(str(out["platform"]), out["platform"])
    return out


def render(text: str, lang: str | None = None) -> str:
    """A catalogue message (``pomona.i18n.Msg``) in the reader's language, names included; plain text as
    it is."""
    if isinstance(text, Msg):
        return t(text.key, lang, **_localized(text.params, lang))
    return text


def error_text(e: ErrorResponse, lang: str | None = None) -> str:
    """An error's message for the person who caused it (the operator: the cause), in their language
    when the raise site gave a catalogue key; the English detail otherwise."""
    if e.key is not None and not e.internal:
        return t(e.key, lang, **_localized(e.params, lang))
    return e.detail or e.message


def decision_json(d: Decision, lang: str | None = None) -> dict[str, object]:
    """A policy decision (``policy explain``, the API's explain): the stable fields, plus each applied
    restriction's ``display_name`` and the verdict's ``text`` in the reader's language."""
    out = d.to_dict()
    for field in ("platform_restriction", "limit_restriction"):
        applied = out.get(field)
        if isinstance(applied, dict):
            applied["display_name"] = display_name(str(applied["name"]), lang)
    out["text"] = decision_text(d, lang)
    return out


def decision_text(d: Decision, lang: str | None = None) -> str:
    """What a decision says, in the reader's language (``decision.<CODE>``; the English is the
    decision's own message, the same words)."""
    key, facts = d.text_key
    return t(key, lang, **_localized(facts, lang))


def jsonable(value: object) -> object:
    """Anything stored in an event detail or a command result, as JSON can carry it."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def api_token_json(tok: ApiToken, now: datetime) -> dict[str, object]:
    """An admin API token (never its secret); ``state``: active, expired or revoked."""
    state = "active"
    if tok.revoked_at is not None:
        state = "revoked"
    elif tok.expires_at is not None and tok.expires_at <= now:
        state = "expired"
    return {
        "id": tok.id,
        "name": tok.name,
        "tenant_id": tok.tenant_id,
        "scope": "server" if tok.tenant_id is None else "tenant",
        "created_at": iso(tok.created_at),
        "expires_at": iso(tok.expires_at),
        "revoked_at": iso(tok.revoked_at),
        "last_used_at": iso(tok.last_used_at),
        "state": state,
    }


def enrollment_token_json(tok: EnrollmentToken, user: User | None, now: datetime) -> dict[str, object]:
    """An enrollment link (never its secret); ``state``: active, used, expired or revoked."""
    state = "active"
    if tok.revoked:
        state = "revoked"
    elif tok.remaining() <= 0:
        state = "used"
    elif tok.expires_at <= now:
        state = "expired"
    return {
        "id": tok.id,
        "upn": None if user is None else user.upn,
        "uses_allowed": tok.uses_allowed,
        "uses_count": tok.uses_count,
        "created_at": iso(tok.created_at),
        "expires_at": iso(tok.expires_at),
        "revoked": tok.revoked,
        "state": state,
    }


def tenant_json(t: Tenant) -> dict[str, object]:
    return {
        "id": t.id,
        "name": t.name,
        "domain": t.domain,
        "push_topic": t.push_topic,
        "push_not_after": iso(t.push_not_after),
    }


def user_json(u: User) -> dict[str, object]:
    return {
        "id": u.id,
        "upn": u.upn,
        "display_name": u.display_name,
        "email": u.email,
        "enabled": u.enabled,
        "licensed": u.licensed,
        "dem": u.is_dem,
        "mfa_required": u.mfa_required,
    }


def device_json(d: Device, active: Enrollment | None) -> dict[str, object]:
    return {
        "id": d.id,
        "udid": d.udid,
        "serial": d.serial,
        "model": d.model,
        "model_name": d.model_name,
        "product_name": d.product_name,
        "device_name": d.device_name,
        "os_version": d.os_version,
        "build_version": d.build_version,
        "imei": d.imei,
        "meid": d.meid,
        "capacity_gb": d.capacity_gb,
        "battery_level": d.battery_level,
        "last_seen_at": iso(d.last_seen_at),
        "enrolled": active is not None,
        "enrollment_id": None if active is None else active.id,
        "user_id": None if active is None else active.user_id,
        "awaiting_configuration": active is not None and active.awaiting_configuration,
    }


def enrollment_json(e: Enrollment) -> dict[str, object]:
    return {
        "id": e.id,
        "status": e.status.value,
        "type": e.type.value,
        "user_id": e.user_id,
        "topic": e.topic,
        "started_at": e.started_at.isoformat(),
        "ended_at": iso(e.ended_at),
        "push_token_present": e.push_token is not None,
        "awaiting_configuration": e.awaiting_configuration,
    }


def command_json(c: QueuedCommand, *, with_result: bool = False) -> dict[str, object]:
    out: dict[str, object] = {
        "command_uuid": c.command_uuid,
        "request_type": c.request_type,
        "status": c.status.value,
        "device_id": c.device_id,
        "enrollment_id": c.enrollment_id,
        "created_at": c.created_at.isoformat(),
        "sent_at": iso(c.sent_at),
        "result_at": iso(c.result_at),
        "error_chain": jsonable(c.error_chain),
    }
    if with_result and c.result:
        try:
            out["result"] = jsonable(plistlib.loads(c.result))
        except Exception:  # a device's result that is not a plist is shown as absent, never an error
            out["result"] = None
    return out


def event_json(e: Event) -> dict[str, object]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "step": e.step.value,
        "outcome": e.outcome.value,
        "reason": e.reason,
        "user_id": e.user_id,
        "upn": e.upn,
        "serial": e.serial,
        "udid": e.udid,
        "enrollment_id": e.enrollment_id,
        "request_id": e.request_id,
        "detail": jsonable(e.detail),
    }


def corporate_json(c: CorporateIdentifier) -> dict[str, object]:
    return {
        "kind": c.kind,
        "value": c.value,
        "description": c.description,
        "state": c.state,
        "last_contact_at": iso(c.last_contact_at),
    }


def restriction_json(
    r: Restriction, names: Mapping[str, str] | None = None, lang: str | None = None
) -> dict[str, object]:
    """A restriction with its group names (ids where a name is not given); ``name`` is the stored one,
    ``display_name`` the one to show a person (in ``lang``)."""
    d: dict[str, object] = {
        "id": r.id,
        "name": r.name,
        "display_name": display_name(r.name, lang),
        "type": r.kind.value,
        "default": r.is_default,
        "priority": None if r.is_default else r.priority,
        "groups": sorted((names or {}).get(g, g) for g in r.group_ids),
    }
    if isinstance(r, DeviceTypeRestriction):
        d.update(
            ios=Access.of(r.ios_allowed).value,
            ipados=Access.of(r.ipados_allowed).value,
            ios_personal=Access.of(r.ios_personal_allowed).value,
            ipados_personal=Access.of(r.ipados_personal_allowed).value,
            ios_min_os=r.ios_min_os,
            ios_max_os=r.ios_max_os,
            ipados_min_os=r.ipados_min_os,
            ipados_max_os=r.ipados_max_os,
        )
    else:
        d["limit"] = r.device_limit
    return d


def abm_device_json(
    device: AbmDevice, *, deleted: bool, token_id: str, first_seen_at: datetime, updated_at: datetime
) -> dict[str, object]:
    """A device as ABM lists it (Apple's field names and values), and what Pomona knows of it."""
    from pomona.protocol.dep import DEVICE_FIELDS

    out: dict[str, object] = {}
    for name in DEVICE_FIELDS:
        v = getattr(device, name)
        out[name] = (v.isoformat() if isinstance(v, datetime) else v) if v not in (None, "") else None
    out.update(
        deleted=deleted,
        token_id=token_id,
        first_seen_at=first_seen_at.isoformat(),
        updated_at=updated_at.isoformat(),
    )
    return out
