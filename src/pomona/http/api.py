"""The admin API under /api/v1 (JSON, OpenAPI at /api/v1/openapi.json). Errors: {reason, message, request_id}.

Every tenant route checks that the bearer token belongs to that tenant (or is a server-wide token);
another tenant's objects answer NOT_FOUND, exactly like objects that do not exist.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, model_validator

from pomona.domain.errors import ForbiddenError, InvalidInputError, NotFoundError, PomonaError, describe
from pomona.domain.models import ApiToken
from pomona.domain.reasons import ReasonCode
from pomona.http.middleware import RequestId
from pomona.presenters import (
    api_token_json,
    command_json,
    corporate_json,
    device_json,
    enrollment_json,
    enrollment_token_json,
    event_json,
    iso,
    restriction_json,
    tenant_json,
    user_json,
)
from pomona.protocol.errors import ProtocolError
from pomona.services.container import Services
from pomona.services.context import request_id_var


def _rid(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex[:16]
    return str(rid)


def api_error(exc: BaseException, request_id: str) -> JSONResponse:
    """The admin API's answer to an error (built on ``domain.errors.describe``): ``{reason, message,
    request_id}`` with the status the error's class says. An internal error is logged, not shown."""
    if isinstance(exc, RequestValidationError):
        problems = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        exc = InvalidInputError("; ".join(problems))
    e = describe(exc)
    if e.internal:
        logging.getLogger("pomona.http").error("internal error, request %s", request_id, exc_info=exc)
    return JSONResponse(
        {"reason": e.reason.value, "message": e.message, "request_id": request_id}, status_code=e.status
    )


def _auth(request: Request, authorization: Annotated[str | None, Header()] = None) -> ApiToken:
    secret = None
    if authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    p: Services = request.app.state.pomona
    return p.admin.authenticate_api_token(secret)


Auth = Annotated[ApiToken, Depends(_auth)]


# --- bounds of the inputs: out of range is INVALID_INPUT (422), never an overflow deeper down -------------
INT_MAX = 2**31 - 1  # what every integer column of ours holds, on SQLite and PostgreSQL alike
MAX_OFFSET = 10**9
MIN_YEAR, MAX_YEAR = 2000, 2200  # an instant of an enrollment; far enough out that arithmetic cannot overflow


def _as_utc(value: datetime) -> datetime:
    """A time without a zone is UTC (the events are kept in UTC); the year must be plausible."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


Int = Annotated[int, Field(ge=-INT_MAX, le=INT_MAX)]
Count = Annotated[int, Field(ge=0, le=INT_MAX)]
Instant = Annotated[datetime, AfterValidator(_as_utc)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class ApiModel(BaseModel):
    """A request body: no string in it may hold a NUL character (no name of ours does, and PostgreSQL
    cannot store one)."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        if _has_nul(data):
            raise ValueError("a NUL character in a string")
        return data


class TenantIn(ApiModel):
    name: str
    domain: str
    key_type: str = "rsa"


class UserIn(ApiModel):
    upn: str
    display_name: str | None = None
    email: str | None = None
    password: str | None = None
    enabled: bool = True
    dem: bool = False
    mfa_required: bool = False
    licensed: bool = False


class UserPatch(ApiModel):
    enabled: bool | None = None
    dem: bool | None = None
    mfa_required: bool | None = None
    licensed: bool | None = None


class SeatsIn(ApiModel):
    seats: Count


class GroupIn(ApiModel):
    name: str


class MemberIn(ApiModel):
    upn: str


class RestrictionSettings(ApiModel):
    """What a restriction sets: platform (allow/block), ownership, OS range, or the device limit."""

    ios: str | None = None
    ipados: str | None = None
    personal: str | None = None
    min_os: str | None = None
    max_os: str | None = None
    limit: Count | None = None

    def settings(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in RestrictionSettings.model_fields}


class RestrictionIn(RestrictionSettings):
    type: str
    priority: Int
    groups: list[str]
    name: str | None = None


class RestrictionPatch(RestrictionSettings):
    new_priority: Int | None = None
    groups: list[str] = Field(default_factory=list)


class CorporateIn(ApiModel):
    csv: str


class DeviceRefIn(ApiModel):
    serial: str | None = None
    udid: str | None = None
    note: str | None = None


class DiagnoseIn(ApiModel):
    tenant: str | None = None
    upn: str | None = None
    serial: str | None = None
    udid: str | None = None
    imei: str | None = None
    message: str | None = None
    at: Instant | None = None
    lang: str = "en"


class ExplainIn(ApiModel):
    upn: str
    serial: str | None = None
    udid: str | None = None
    os_version: str | None = None
    platform: str | None = None


class ApiTokenIn(ApiModel):
    name: str = "admin"
    expires_in_seconds: Int | None = None  # None: valid until revoked


class EnrollTokenIn(ApiModel):
    upn: str
    uses: Int = 1
    expires_in_seconds: Int = 24 * 3600


class ApnsIn(ApiModel):
    cert_pem: str | None = None  # PEM certificate (and key, or key_pem)
    key_pem: str | None = None  # omitted: the key of the tenant's pending CSR
    p12_base64: str | None = None  # or a .p12, base64
    password: str | None = None
    apple_id: str | None = None
    replace: bool = False
    confirm: str | None = None  # "devices-must-re-enroll" with replace
    canary: bool = True


class ApnsCsrIn(ApiModel):
    email: str | None = None
    vendor_cert_pem: str | None = None
    vendor_key_pem: str | None = None


class WebhookIn(ApiModel):
    url: str
    secret: str


class CommandIn(ApiModel):
    request_type: str
    params: dict[str, Any] = Field(default_factory=dict)
    devices: list[str]
    push: bool = True


def create_api(p: Services) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await p.background.start()
        try:
            yield
        finally:
            await p.background.stop()

    api = FastAPI(
        lifespan=lifespan,
        title="Pomona admin API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    api.state.pomona = p
    api.add_middleware(RequestId)  # binds the request id for services, events and logs

    def _error(request: Request, exc: Exception) -> JSONResponse:
        return api_error(exc, _rid(request))

    # Our errors and bad request bodies are answered by the exception middleware; any other exception by
    # the server-error middleware (Exception), which answers the same way and then re-raises it.
    for kind in (PomonaError, ProtocolError, RequestValidationError, Exception):
        api.add_exception_handler(kind, _error)

    def tenant_scope(token: ApiToken, tenant: str) -> str:
        """Resolve the tenant in the path and check that the token may reach it."""
        try:
            t = p.admin.get_tenant(tenant)
        except NotFoundError:
            raise NotFoundError(f"no tenant {tenant!r}") from None
        if token.tenant_id is not None and token.tenant_id != t.id:
            raise NotFoundError(f"no tenant {tenant!r}")
        return t.id

    @api.post("/api/v1/tenants", status_code=201)
    def create_tenant(body: TenantIn, token: Auth) -> dict[str, object]:
        if token.tenant_id is not None:
            raise ForbiddenError("creating tenants needs a server-wide token")
        t = p.admin.create_tenant(body.name, body.domain, key_type=body.key_type)
        return {"id": t.id, "name": t.name, "domain": t.domain}

    @api.get("/api/v1/tenants")
    def list_tenants(token: Auth) -> dict[str, object]:
        ts = [t for t in p.admin.list_tenants() if token.tenant_id in (None, t.id)]
        return {"tenants": [tenant_json(t) for t in ts]}

    @api.post("/api/v1/tenants/{tenant}/tokens", status_code=201)
    def create_token(tenant: str, token: Auth, body: ApiTokenIn | None = None) -> dict[str, object]:
        if token.tenant_id is not None:
            raise ForbiddenError("creating admin tokens needs a server-wide token")
        tid = tenant_scope(token, tenant)
        body = body or ApiTokenIn()
        expires = None if body.expires_in_seconds is None else timedelta(seconds=body.expires_in_seconds)
        issued = p.admin.create_api_token(tid, body.name, expires_in=expires)
        return {"id": issued.token.id, "token": issued.secret, "expires_at": iso(issued.token.expires_at)}

    @api.get("/api/v1/tenants/{tenant}/tokens")
    def list_tokens(tenant: str, token: Auth) -> dict[str, object]:
        """The tenant's admin tokens (never their secrets)."""
        now = p.clock.now()
        return {
            "tokens": [api_token_json(x, now) for x in p.admin.list_api_tokens(tenant_scope(token, tenant))]
        }

    @api.post("/api/v1/tenants/{tenant}/tokens/{token_id}/revoke")
    def revoke_token(tenant: str, token_id: str, token: Auth) -> dict[str, object]:
        """Revoke one of the tenant's admin tokens (a tenant token may revoke its tenant's, itself too)."""
        tid = tenant_scope(token, tenant)
        return api_token_json(p.admin.revoke_api_token(token_id, tenant_ref=tid), p.clock.now())

    @api.put("/api/v1/tenants/{tenant}/apns")
    def upload_apns(tenant: str, body: ApnsIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        if body.p12_base64:
            try:
                cert = base64.b64decode(body.p12_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError("p12_base64 is not base64", field="p12_base64") from None
        elif body.cert_pem:
            cert = body.cert_pem.encode()
        else:
            raise InvalidInputError("give cert_pem or p12_base64", field="cert_pem")
        res = p.apns.upload(
            tid,
            cert,
            None if body.key_pem is None else body.key_pem.encode(),
            password=None if body.password is None else body.password.encode(),
            apple_id=body.apple_id,
            replace=body.replace,
            confirm=body.confirm,
            canary=body.canary,
        )
        p.checkin.forget_tenant(tid)
        return res.to_json()

    @api.post("/api/v1/tenants/{tenant}/apns/csr")
    def apns_csr(tenant: str, body: ApnsCsrIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        r = p.apns.csr(
            tid,
            email=body.email,
            vendor_chain_pem=None if body.vendor_cert_pem is None else body.vendor_cert_pem.encode(),
            vendor_key_pem=None if body.vendor_key_pem is None else body.vendor_key_pem.encode(),
        )
        return {"csr_pem": r.csr_pem, "vendor_signed_request": r.vendor_signed}

    @api.get("/api/v1/tenants/{tenant}/apns")
    def apns_status(tenant: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        out = p.apns.status(tid)
        out["findings"] = p.apns.findings(tid, p.clock.now())
        return out

    @api.get("/api/v1/tenants/{tenant}/apns/reenroll")
    def apns_reenroll(tenant: str, token: Auth) -> dict[str, object]:
        return p.apns.reenroll_required(tenant_scope(token, tenant))

    @api.put("/api/v1/tenants/{tenant}/webhook")
    def set_webhook(tenant: str, body: WebhookIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        p.notifier.configure(tid, body.url, body.secret)
        return {"url": body.url}

    @api.get("/api/v1/tenants/{tenant}/push")
    def push_state(tenant: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return {
            "queued": p.push.queue_size(tid),
            "devices": p.push.reachability(tid),
            "unresponsive": p.push.unresponsive(tid, p.clock.now()),
        }

    @api.post("/api/v1/tenants/{tenant}/users", status_code=201)
    def create_user(tenant: str, body: UserIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        u = p.admin.create_user(
            tid,
            body.upn,
            display_name=body.display_name,
            email=body.email,
            password=body.password,
            enabled=body.enabled,
            is_dem=body.dem,
            mfa_required=body.mfa_required,
        )
        if body.licensed:
            p.policy.licence(tid, u.upn, assign=True)
            u = p.policy.set_user_flags(tid, u.upn)
        return user_json(u)

    @api.patch("/api/v1/tenants/{tenant}/users/{upn}")
    def patch_user(tenant: str, upn: str, body: UserPatch, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        if body.licensed is not None:
            p.policy.licence(tid, upn, assign=body.licensed)
        flags = {
            k: v
            for k, v in (("enabled", body.enabled), ("is_dem", body.dem), ("mfa_required", body.mfa_required))
            if v is not None
        }
        return user_json(p.policy.set_user_flags(tid, upn, **flags))

    @api.delete("/api/v1/tenants/{tenant}/users/{upn}", status_code=204)
    def delete_user(tenant: str, upn: str, token: Auth) -> None:
        p.policy.delete_user(tenant_scope(token, tenant), upn)

    @api.put("/api/v1/tenants/{tenant}/licences")
    def set_seats(tenant: str, body: SeatsIn, token: Auth) -> dict[str, int]:
        return p.policy.set_seats(tenant_scope(token, tenant), body.seats)

    @api.put("/api/v1/tenants/{tenant}/authority")
    def set_authority(tenant: str, token: Auth) -> dict[str, object]:
        t = p.admin.set_authority(tenant_scope(token, tenant), "pomona")
        return {"mdm_authority": t.mdm_authority}

    @api.post("/api/v1/tenants/{tenant}/groups", status_code=201)
    def create_group(tenant: str, body: GroupIn, token: Auth) -> dict[str, object]:
        g = p.policy.create_group(tenant_scope(token, tenant), body.name)
        return {"id": g.id, "name": g.name}

    @api.get("/api/v1/tenants/{tenant}/groups")
    def list_groups(tenant: str, token: Auth) -> dict[str, object]:
        rows = p.policy.list_groups(tenant_scope(token, tenant))
        return {"groups": [{"id": g.id, "name": g.name, "members": n} for g, n in rows]}

    @api.post("/api/v1/tenants/{tenant}/groups/{group}/members", status_code=201)
    def add_member(tenant: str, group: str, body: MemberIn, token: Auth) -> dict[str, object]:
        p.policy.add_member(tenant_scope(token, tenant), group, body.upn)
        return {"group": group, "upn": body.upn}

    @api.delete("/api/v1/tenants/{tenant}/groups/{group}/members/{upn}", status_code=204)
    def remove_member(tenant: str, group: str, upn: str, token: Auth) -> None:
        p.policy.add_member(tenant_scope(token, tenant), group, upn, remove=True)

    @api.get("/api/v1/tenants/{tenant}/restrictions")
    def list_restrictions(tenant: str, token: Auth) -> dict[str, object]:
        rs, names = p.policy.list_restrictions(tenant_scope(token, tenant))
        return {"restrictions": [restriction_json(r, names) for r in rs]}

    @api.post("/api/v1/tenants/{tenant}/restrictions", status_code=201)
    def create_restriction(tenant: str, body: RestrictionIn, token: Auth) -> dict[str, object]:
        r = p.policy.create_restriction(
            tenant_scope(token, tenant),
            type_=body.type,
            priority=body.priority,
            groups=body.groups,
            name=body.name,
            **body.settings(),
        )
        return restriction_json(r)

    @api.patch("/api/v1/tenants/{tenant}/restrictions/{type_}/{which}")
    def edit_restriction(
        tenant: str, type_: str, which: str, body: RestrictionPatch, token: Auth
    ) -> dict[str, object]:
        """`which` is `default` or the restriction's priority."""
        default = which == "default"
        if not default and not (which.isascii() and which.isdigit() and len(which) <= 9):
            raise InvalidInputError("which must be 'default' or a priority number")
        r = p.policy.edit_restriction(
            tenant_scope(token, tenant),
            type_=type_,
            default=default,
            priority=None if default else int(which),
            new_priority=body.new_priority,
            groups=body.groups,
            **body.settings(),
        )
        return restriction_json(r)

    @api.delete("/api/v1/tenants/{tenant}/restrictions/{type_}/{priority}", status_code=204)
    def delete_restriction(
        tenant: str, type_: str, priority: Annotated[int, Path(ge=-INT_MAX, le=INT_MAX)], token: Auth
    ) -> None:
        p.policy.delete_restriction(tenant_scope(token, tenant), type_, priority)

    @api.post("/api/v1/tenants/{tenant}/corporate-identifiers")
    def import_corporate(tenant: str, body: CorporateIn, token: Auth) -> JSONResponse:
        r = p.policy.import_corporate(tenant_scope(token, tenant), body.csv)
        data = {"imported": r.imported, "unchanged": r.unchanged, "errors": r.errors}
        if r.errors:
            data.update(
                reason=ReasonCode.INVALID_INPUT.value,
                message="nothing was imported: fix the rows listed",
                request_id=request_id_var.get(),
            )
        return JSONResponse(data, status_code=422 if r.errors else 200)

    @api.get("/api/v1/tenants/{tenant}/corporate-identifiers")
    def list_corporate(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        offset: Offset = 0,
    ) -> dict[str, object]:
        rows = p.policy.list_corporate(tenant_scope(token, tenant), limit=limit, offset=offset)
        return {"identifiers": [corporate_json(c) for c in rows]}

    @api.post("/api/v1/tenants/{tenant}/blocked-devices", status_code=201)
    def block_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        n = p.policy.block(tenant_scope(token, tenant), serial=body.serial, udid=body.udid, note=body.note)
        return {"blocked": body.serial or body.udid, "ended_enrollments": n}

    @api.post("/api/v1/tenants/{tenant}/blocked-devices/remove")
    def unblock_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        p.policy.block(tenant_scope(token, tenant), serial=body.serial, udid=body.udid, unblock=True)
        return {"unblocked": body.serial or body.udid}

    @api.post("/api/v1/tenants/{tenant}/devices/retire")
    def retire_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        n = p.policy.retire(tenant_scope(token, tenant), serial=body.serial, udid=body.udid)
        return {"retired": body.serial or body.udid, "enrollments": n}

    @api.post("/api/v1/tenants/{tenant}/policy/explain")
    def explain(tenant: str, body: ExplainIn, token: Auth) -> dict[str, object]:
        d = p.policy.explain(
            tenant_scope(token, tenant),
            body.upn,
            serial=body.serial,
            udid=body.udid,
            os_version=body.os_version,
            platform=body.platform,
        )
        return d.to_dict()

    @api.get("/api/v1/tenants/{tenant}/users")
    def list_users(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return {"users": [user_json(u) for u in p.admin.list_users(tid, limit=limit, offset=offset)]}

    @api.post("/api/v1/tenants/{tenant}/enrollment-tokens", status_code=201)
    def create_enroll_token(tenant: str, body: EnrollTokenIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        issued = p.admin.create_enrollment_token(
            tid, body.upn, uses=body.uses, expires_in=timedelta(seconds=body.expires_in_seconds)
        )
        return {
            "id": issued.token.id,
            "url": p.enrollment.urls.enroll(issued.secret),
            "uses": issued.token.uses_allowed,
            "expires_at": issued.token.expires_at.isoformat(),
        }

    @api.get("/api/v1/tenants/{tenant}/enrollment-tokens")
    def list_enroll_tokens(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> dict[str, object]:
        """The tenant's enrollment links, newest first (never their secrets)."""
        rows = p.admin.list_enrollment_tokens(tenant_scope(token, tenant), limit=limit, offset=offset)
        now = p.clock.now()
        return {"enrollment_tokens": [enrollment_token_json(x, u, now) for x, u in rows]}

    @api.post("/api/v1/tenants/{tenant}/enrollment-tokens/{token_id}/revoke")
    def revoke_enroll_token(tenant: str, token_id: str, token: Auth) -> dict[str, object]:
        """Revoke an enrollment link: its next use is ENROLLMENT_TOKEN_INVALID."""
        tid = tenant_scope(token, tenant)
        return enrollment_token_json(p.admin.revoke_enrollment_token(tid, token_id), None, p.clock.now())

    @api.get("/api/v1/tenants/{tenant}/devices")
    def list_devices(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        views, total = p.commands.list_devices(tid, limit=limit, offset=offset)
        return {"total": total, "devices": [device_json(v.device, v.enrollment) for v in views]}

    @api.get("/api/v1/tenants/{tenant}/devices/{ref}")
    def get_device(tenant: str, ref: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        v = p.commands.device(tid, ref)
        out = device_json(v.device, v.enrollment)
        out["enrollments"] = [enrollment_json(e) for e in v.history]
        out["commands"] = [command_json(c) for c in v.commands]
        return out

    @api.post("/api/v1/tenants/{tenant}/commands", status_code=201)
    def enqueue(tenant: str, body: CommandIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        queued = p.commands.enqueue(tid, body.request_type, body.params, body.devices, push=body.push)
        return {"commands": [command_json(c) for c in queued]}

    @api.get("/api/v1/tenants/{tenant}/commands/{command_uuid}")
    def get_command(tenant: str, command_uuid: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return command_json(p.commands.command(tid, command_uuid), with_result=True)

    @api.get("/api/v1/tenants/{tenant}/events")
    def events(
        tenant: str,
        token: Auth,
        upn: str | None = None,
        serial: str | None = None,
        udid: str | None = None,
        reason: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        evs = p.commands.events(
            tid, upn=upn, serial=serial, udid=udid, reason=reason, since=since, until=until, limit=limit
        )
        return {"events": [event_json(e) for e in evs]}

    def run_diagnose(tid: str, body: DiagnoseIn) -> dict[str, object]:
        from pomona.services.diagnose import to_json

        if body.lang not in ("en", "zh-CN"):
            raise InvalidInputError("lang must be en or zh-CN")
        d = p.diagnose.diagnose(
            tid,
            upn=body.upn,
            serial=body.serial,
            udid=body.udid,
            imei=body.imei,
            message=body.message,
            at=body.at,
        )
        return to_json(d, body.lang)

    @api.post("/api/v1/tenants/{tenant}/diagnose")
    def diagnose_tenant(tenant: str, body: DiagnoseIn, token: Auth) -> dict[str, object]:
        return run_diagnose(tenant_scope(token, tenant), body)

    @api.post("/api/v1/diagnose")
    def diagnose(body: DiagnoseIn, token: Auth) -> dict[str, object]:
        """The tenant is the token's own, or `tenant` in the body for a server-wide token."""
        tenant = body.tenant or token.tenant_id
        if tenant is None:
            raise InvalidInputError("a server-wide token must name the tenant")
        return run_diagnose(tenant_scope(token, tenant), body)

    @api.get("/api/v1/health/findings")
    def health_findings(token: Auth, tenant: str | None = None, lang: str = "en") -> dict[str, object]:
        """Tenant health, checked now; the tenant is the token's own (or `tenant` for a server-wide token)."""
        from pomona import knowledge

        ref = tenant or token.tenant_id
        if ref is None:
            raise InvalidInputError("a server-wide token must name the tenant")
        data = p.health.run(tenant_scope(token, ref))
        for f in data["findings"]:
            f["title"] = knowledge.text_for(f["code"], lang, **f["facts"]).title
        return data

    @api.get("/api/v1/reports/enrollment-failures", response_model=None)
    def failure_report(
        token: Auth,
        tenant: str | None = None,
        since: Instant | None = None,
        until: Instant | None = None,
        group_by: str = "reason",
        format: str = "json",
    ) -> object:
        from fastapi.responses import Response

        ref = tenant or token.tenant_id
        if ref is None:
            raise InvalidInputError("a server-wide token must name the tenant")
        now = p.clock.now()
        r = p.reports.failures(
            tenant_scope(token, ref),
            since=since or now - timedelta(days=30),
            until=until or now,
            group_by=group_by,
        )
        if format == "csv":
            return Response(
                p.reports.to_csv(r),
                media_type="text/csv",
                headers={"Content-Disposition": 'attachment; filename="enrollment-failures.csv"'},
            )
        return r

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Answered on the event loop itself (no hop to a worker thread): it measures the loop."""
        return {"status": "ok"}

    return api
