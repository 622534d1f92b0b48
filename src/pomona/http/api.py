"""The admin API under /api/v1 (JSON, OpenAPI at /api/v1/openapi.json). Errors: {reason, message, request_id}.

Every tenant route checks that the bearer token belongs to that tenant (or is a server-wide token);
another tenant's objects answer NOT_FOUND, exactly like objects that do not exist.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from pomona.domain.checks import device_subjects
from pomona.domain.errors import ForbiddenError, InvalidInputError, NotFoundError, PomonaError, describe
from pomona.domain.models import ApiToken
from pomona.domain.reasons import ReasonCode
from pomona.http.middleware import RequestId, log_internal
from pomona.http.portal import pick_lang
from pomona.i18n import msg
from pomona.presenters import (
    abm_device_json,
    api_token_json,
    command_json,
    corporate_json,
    decision_json,
    device_json,
    enrollment_json,
    enrollment_token_json,
    error_text,
    event_json,
    iso,
    restriction_json,
    tenant_json,
    user_json,
)
from pomona.protocol.command import COMMAND_TYPES
from pomona.protocol.errors import ProtocolError
from pomona.services.admin import DAY_ONE_AUTHORITY, DAY_ONE_SEATS
from pomona.services.container import Services
from pomona.services.context import request_id_var


def _rid(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex[:16]
    return str(rid)


def request_lang(request: Request) -> str:
    """The language of the text in an answer: the request's Accept-Language (en unless it asks for zh)."""
    return pick_lang(None, request.headers.get("accept-language"))


Lang = Annotated[str, Depends(request_lang)]


def api_error(exc: BaseException, request_id: str, lang: str = "en") -> JSONResponse:
    """The admin API's answer to an error (built on ``domain.errors.describe``): ``{reason, message,
    request_id}`` with the status the error's class says; the message in the request's language when the
    error has a catalogue key. An internal error is logged, not shown."""
    if isinstance(exc, RequestValidationError):
        problems = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        exc = InvalidInputError("; ".join(problems))
    e = describe(exc)
    if e.internal:
        log_internal(logging.getLogger("pomona.http"), exc, request_id)
    message = e.message if e.internal else error_text(e, lang)
    return JSONResponse(
        {"reason": e.reason.value, "message": message, "request_id": request_id}, status_code=e.status
    )


# Declares the bearer scheme in the OpenAPI document (Swagger UI's "Authorize" button). It never refuses
# by itself (auto_error=False): _auth below reads the header and decides, as before.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="An admin API token: `pomona token create --server` (server-wide) or `--tenant NAME`, or POST /api/v1/tenants/{tenant}/tokens.",
)


def _auth(
    request: Request, _doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None
) -> ApiToken:
    authorization = request.headers.get("authorization")
    secret = None
    if authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    p: Services = request.app.state.pomona
    return p.admin.authenticate_api_token(secret)


Auth = Annotated[ApiToken, Depends(_auth)]


class ApiError(BaseModel):
    """Every refusal of the admin API: a reason code (docs/REASONS.md), a message, and the request id that
    finds the matching event and log line."""

    reason: str = Field(description="The reason code, e.g. NOT_FOUND, INVALID_INPUT, API_AUTH_FAILED.")
    message: str = Field(description="What went wrong, for a person.")
    request_id: str = Field(description="The request's id (also in the X-Request-Id header and the events).")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"reason": "NOT_FOUND", "message": "no tenant 'acme'", "request_id": "3f9c0a7e5d2b4c18"}
            ]
        }
    )


def _error_response(what: str) -> dict[str, Any]:
    return {"model": ApiError, "description": what}


ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error_response(
        "No token, an unknown one (API_AUTH_FAILED), an expired or revoked one (API_TOKEN_EXPIRED, "
        "API_TOKEN_REVOKED), or a tenant token asking for what needs a server-wide token (API_AUTH_FAILED)."
    ),
    403: _error_response("Refused by a rule of the tenant's policy; the reason code names the rule."),
    404: _error_response("No such tenant or object, or one of another tenant (NOT_FOUND)."),
    409: _error_response(
        "It conflicts with what exists: a name already taken (ALREADY_EXISTS), no free licence seat "
        "(LICENSES_EXHAUSTED), a push certificate of another topic (APNS_TOPIC_CHANGED)."
    ),
    413: _error_response("The request body is over the operation's size limit (MALFORMED_REQUEST)."),
    422: _error_response("A body or parameter that is not valid (INVALID_INPUT or a more precise code)."),
}
"""The error answers every authenticated operation documents (the body is always ``{reason, message,
request_id}``; the reason code says which case it is)."""
ABM_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    502: _error_response(
        "Apple Business Manager refused or failed, with its DEP_* code: DEP_TOKEN_EXPIRED, DEP_TOKEN_INVALID, "
        "DEP_TERMS_NOT_ACCEPTED, DEP_PROFILE_NOT_FOUND, DEP_PROFILE_REJECTED (ABM's field errors), or ABM "
        "could not be reached."
    ),
    503: _error_response("ABM kept answering THROTTLED after the waits it asked for."),
}


def _ok(status: int, example: Mapping[str, object]) -> dict[int | str, dict[str, Any]]:
    """ERRORS plus an example of the success answer (documentation only)."""
    return {status: {"content": {"application/json": {"example": example}}}, **ERRORS}


TENANT_EXAMPLE = {
    "id": "83213bfd-ce37-4c92-a3b4-d6ada5ddd33a",
    "name": "acme",
    "domain": "acme.example",
    "mdm_authority": "pomona",
    "licence_seats": 25,
}
USER_EXAMPLE = {
    "id": "96596274-e16a-4818-925f-0100da5585b9",
    "upn": "ana@acme.example",
    "display_name": "Ana Silva",
    "email": "ana@acme.example",
    "enabled": True,
    "licensed": True,
    "dem": False,
    "mfa_required": False,
}
LINK_EXAMPLE = {
    "id": "7beafe8b-42de-4148-8acd-2c0994df35da",
    "url": "https://mdm.acme.example/enroll/MO-6B_4NcmxKNYitPWn5stqDT6LizmzN",
    "uses": 1,
    "expires_at": "2026-12-05T09:30:00+00:00",
    "warnings": [
        {
            "reason": "USER_NOT_LICENSED",
            "message": "ana@acme.example cannot enroll now (The user has no device management licence); "
            "the link was created and works once that is fixed with "
            "`pomona licence assign --tenant acme --user ana@acme.example` "
            "(`pomona policy explain --tenant acme --user ana@acme.example` shows every check).",
        }
    ],
}
COMMANDS_EXAMPLE = {
    "commands": [
        {
            "command_uuid": "0b7f8a52-5c1e-4d7e-9a0e-2f4b7c9d1e33",
            "request_type": "DeviceInformation",
            "status": "Queued",
            "device_id": "5e0c2d8b-9f3a-4b61-8c47-1a2b3c4d5e6f",
            "enrollment_id": "c1d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f",
            "created_at": "2026-12-04T09:30:00+00:00",
            "sent_at": None,
            "result_at": None,
            "error_chain": None,
        }
    ]
}
"""Success answers of the common calls, shown in the documentation (tests/flows/test_api_docs.py checks
their keys against real answers)."""


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
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "acme", "domain": "acme.example"}]})

    name: str
    domain: str
    key_type: str = "rsa"
    seats: Annotated[int, Field(ge=0, le=10_000_000)] = DAY_ONE_SEATS


class UserIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upn": "ana@acme.example",
                    "display_name": "Ana Silva",
                    "email": "ana@acme.example",
                    "password": "correct horse battery staple",
                    "licensed": True,
                }
            ]
        }
    )

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
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "upn": "ana@acme.example",
                    "serial": "F2LXK0AAHG7J",
                    "message": "Profile installation failed",
                }
            ]
        }
    )

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
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"upn": "ana@acme.example", "uses": 1, "expires_in_seconds": 86400}]}
    )

    upn: str
    uses: Int = 1
    expires_in_seconds: Int = 24 * 3600
    lang: Literal["en", "zh-CN"] = "en"


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


# --- Apple Business Manager ---------------------------------------------------------------------------
AbmName = Annotated[str, Field(min_length=1, max_length=200)]
AuthModeName = Literal["modern", "legacy", "none"]


class AbmSyncIn(ApiModel):
    full: bool = Field(default=False, description="Fetch every device again instead of following the cursor.")
    token: AbmName | None = Field(default=None, description="Only this ABM server token (name or id).")


class AdeProfileIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "staff", "auth": "modern", "await_configured": True, "default": True}]
        }
    )

    name: AbmName
    auth: AuthModeName = Field(default="modern", description="User sign-in in Setup Assistant.")
    await_configured: bool = Field(
        default=False, description="Hold the device in Setup Assistant until released."
    )
    supervised: bool = True
    removable: bool = False
    skip: list[AbmName] = Field(
        default_factory=list, description="Setup Assistant panes to skip (Apple's SkipKeys)."
    )
    default: bool = Field(
        default=False, description="The default profile of the token(s): every new device gets it."
    )
    token: AbmName | None = Field(
        default=None, description="Only under this ABM server token (default: every token)."
    )


class AdeProfilePatch(ApiModel):
    auth: AuthModeName | None = None
    await_configured: bool | None = None
    supervised: bool | None = None
    removable: bool | None = None
    skip: list[AbmName] | None = Field(default=None, description="Replaces the profile's panes to skip.")
    default: bool | None = None


class AbmAssignIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"profile": "staff", "serials": ["F2LXK0AAHG7J"]}]}
    )

    profile: AbmName
    serials: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=100_000
    )


class AbmReleaseIn(ApiModel):
    serial: Annotated[str, Field(min_length=1, max_length=64)]


class AbmRuleIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"profile": "shared-ipads", "field": "device_family", "value": "iPad"}]
        }
    )

    profile: AbmName
    field: Literal["model", "device_family", "order_number"] = Field(description="The device field to match.")
    value: AbmName = Field(description="What it must match, ignoring case; `*` and `?` are wildcards.")
    priority: Int | None = Field(
        default=None, description="Lower is tried first (default: after the others)."
    )


COMMAND_TYPE_NAMES = sorted(COMMAND_TYPES)
"""The typed commands Pomona builds (``protocol.command.COMMAND_TYPES``), listed in the OpenAPI document."""
_COMMAND_TYPE_ENUM: list[JsonValue] = list(COMMAND_TYPE_NAMES)


class CommandIn(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_type": "DeviceInformation",
                    "params": {},
                    "devices": ["F2LXK0AAHG7J"],
                    "push": True,
                },
                {"request_type": "DeviceLock", "params": {"Message": "Call IT"}, "devices": ["F2LXK0AAHG7J"]},
            ]
        }
    )

    # Documented as an enum; checked by the service (an unknown type is INVALID_INPUT with its message).
    request_type: str = Field(
        description="The command's RequestType, one of: " + ", ".join(COMMAND_TYPE_NAMES) + ".",
        json_schema_extra={"enum": _COMMAND_TYPE_ENUM},
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The command's keys with Apple's names (data as base64 strings)."
    )
    devices: list[str] = Field(description="Serials, UDIDs or device ids.")
    push: bool = Field(default=True, description="Wake the devices with a push now.")


_SWAGGER_UI = FilePath(__file__).parent / "static" / "swagger-ui"
DOCS_STATIC = "/api/v1/docs/static"
API_DESCRIPTION = """Pomona's admin API. Every operation but `/healthz` needs an admin token in
`Authorization: Bearer <token>` (the **Authorize** button): a server-wide token (`pomona token create --server`)
reaches every tenant, a tenant token only its own; another tenant's objects answer 404 like missing ones.

Every refusal is JSON `{reason, message, request_id}`; the reason codes are in docs/REASONS.md, and each
refusal leaves an event (`GET /api/v1/tenants/{tenant}/events`).

A first tenant: create it, upload its push certificate, set the MDM authority and licence seats, create a
user, then an enrollment link to open on the device."""


def docs_html(openapi_url: str) -> str:
    """The API documentation page: Swagger UI from Pomona's own static files, nothing from another host."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Pomona admin API</title>
<link rel="stylesheet" href="{DOCS_STATIC}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(openapi_url)}"></div>
<script src="{DOCS_STATIC}/swagger-ui-bundle.js"></script>
<script src="{DOCS_STATIC}/pomona-init.js"></script>
</body>
</html>
"""


def create_api(p: Services) -> FastAPI:
    # The background tasks run in the server's lifespan, which http/root.py's RootApp answers itself.
    api = FastAPI(
        title="Pomona admin API",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served below, from Pomona's own copy of Swagger UI (no CDN)
        redoc_url=None,
        description=API_DESCRIPTION,
    )
    api.state.pomona = p
    api.mount(DOCS_STATIC, StaticFiles(directory=str(_SWAGGER_UI)), name="docs-static")

    @api.get("/api/v1/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(docs_html("/api/v1/openapi.json"))

    api.add_middleware(RequestId)  # binds the request id for services, events and logs

    def _error(request: Request, exc: Exception) -> JSONResponse:
        return api_error(exc, _rid(request), request_lang(request))

    # Our errors and bad request bodies are answered by the exception middleware; any other exception by
    # the server-error middleware (Exception), which answers the same way and then re-raises it.
    for kind in (PomonaError, ProtocolError, RequestValidationError, Exception):
        api.add_exception_handler(kind, _error)

    def tenant_scope(token: ApiToken, tenant: str) -> str:
        """Resolve the tenant in the path and check that the token may reach it."""
        try:
            t = p.admin.get_tenant(tenant)
        except NotFoundError:
            raise NotFoundError(msg("error.tenant.not_found", tenant=tenant)) from None
        if token.tenant_id is not None and token.tenant_id != t.id:
            raise NotFoundError(msg("error.tenant.not_found", tenant=tenant))
        return t.id

    @api.post(
        "/api/v1/tenants",
        status_code=201,
        summary="Create a tenant",
        description="Create a tenant (an organisation with its own domain, CA and users). Needs a server-wide token. `key_type` is the tenant CA's key: `rsa` or `p256`. Pomona becomes its MDM authority and it gets `seats` licence seats (default 25; `PUT .../licences` changes them), as `pomona tenant create` does. Next: upload its push certificate (`PUT .../apns`).",
        responses=_ok(201, TENANT_EXAMPLE),
    )
    def create_tenant(body: TenantIn, token: Auth) -> dict[str, object]:
        if token.tenant_id is not None:
            raise ForbiddenError(msg("error.api.tenants_need_server"))
        t = p.admin.create_tenant(
            body.name, body.domain, key_type=body.key_type, authority=DAY_ONE_AUTHORITY, seats=body.seats
        )
        return {
            "id": t.id,
            "name": t.name,
            "domain": t.domain,
            "mdm_authority": t.mdm_authority,
            "licence_seats": t.licence_seats,
        }

    @api.get(
        "/api/v1/tenants",
        summary="List tenants",
        description="The tenants this token can reach: every tenant for a server-wide token, its own for a tenant token.",
        responses=ERRORS,
    )
    def list_tenants(token: Auth) -> dict[str, object]:
        ts = [t for t in p.admin.list_tenants() if token.tenant_id in (None, t.id)]
        return {"tenants": [tenant_json(t) for t in ts]}

    @api.post(
        "/api/v1/tenants/{tenant}/tokens",
        status_code=201,
        summary="Create an admin token",
        description="Issue an admin API token for the tenant. Needs a server-wide token. The secret is in the answer once and never again; without `expires_in_seconds` it is valid until revoked.",
        responses=ERRORS,
    )
    def create_token(tenant: str, token: Auth, body: ApiTokenIn | None = None) -> dict[str, object]:
        if token.tenant_id is not None:
            raise ForbiddenError(msg("error.api.tokens_need_server"))
        tid = tenant_scope(token, tenant)
        body = body or ApiTokenIn()
        expires = None if body.expires_in_seconds is None else timedelta(seconds=body.expires_in_seconds)
        issued = p.admin.create_api_token(tid, body.name, expires_in=expires)
        return {"id": issued.token.id, "token": issued.secret, "expires_at": iso(issued.token.expires_at)}

    @api.get(
        "/api/v1/tenants/{tenant}/tokens",
        summary="List admin tokens",
        description="The tenant's admin tokens (never their secrets), with whether each is active, expired or revoked.",
        responses=ERRORS,
    )
    def list_tokens(tenant: str, token: Auth) -> dict[str, object]:
        """The tenant's admin tokens (never their secrets)."""
        now = p.clock.now()
        return {
            "tokens": [api_token_json(x, now) for x in p.admin.list_api_tokens(tenant_scope(token, tenant))]
        }

    @api.post(
        "/api/v1/tenants/{tenant}/tokens/{token_id}/revoke",
        summary="Revoke an admin token",
        description="Revoke one of the tenant's admin tokens at once (a tenant token may revoke its tenant's, itself too).",
        responses=ERRORS,
    )
    def revoke_token(tenant: str, token_id: str, token: Auth) -> dict[str, object]:
        """Revoke one of the tenant's admin tokens (a tenant token may revoke its tenant's, itself too)."""
        tid = tenant_scope(token, tenant)
        return api_token_json(p.admin.revoke_api_token(token_id, tenant_ref=tid), p.clock.now())

    @api.put(
        "/api/v1/tenants/{tenant}/apns",
        summary="Upload the push certificate",
        description="Upload the tenant's APNs push certificate: `cert_pem` (with `key_pem`, or the key of the tenant's pending CSR) or `p12_base64` with its `password`. Replacing a certificate of another topic makes every device re-enroll: it needs `replace` and `confirm: devices-must-re-enroll`. With `canary`, one push checks the certificate with Apple first.",
        responses=ERRORS,
    )
    def upload_apns(tenant: str, body: ApnsIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        if body.p12_base64:
            try:
                cert = base64.b64decode(body.p12_base64, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInputError(msg("error.api.p12_base64"), field="p12_base64") from None
        elif body.cert_pem:
            cert = body.cert_pem.encode()
        else:
            raise InvalidInputError(msg("error.api.cert_missing"), field="cert_pem")
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

    @api.post(
        "/api/v1/tenants/{tenant}/apns/csr",
        summary="Create a push certificate request",
        description="Create the CSR to have signed for Apple's push certificate portal; with `vendor_cert_pem` and `vendor_key_pem` it is signed with the MDM vendor certificate and ready to upload to Apple. The private key stays on the server.",
        responses=ERRORS,
    )
    def apns_csr(tenant: str, body: ApnsCsrIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        r = p.apns.csr(
            tid,
            email=body.email,
            vendor_chain_pem=None if body.vendor_cert_pem is None else body.vendor_cert_pem.encode(),
            vendor_key_pem=None if body.vendor_key_pem is None else body.vendor_key_pem.encode(),
        )
        return {"csr_pem": r.csr_pem, "vendor_signed_request": r.vendor_signed}

    @api.get(
        "/api/v1/tenants/{tenant}/apns",
        summary="Push certificate status",
        description="The tenant's push certificate: topic, expiry, Apple ID, and findings (expiring, expired, mismatched topic).",
        responses=ERRORS,
    )
    def apns_status(tenant: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        out = p.apns.status(tid)
        out["findings"] = p.apns.findings(tid, p.clock.now())
        return out

    @api.get(
        "/api/v1/tenants/{tenant}/apns/reenroll",
        summary="Devices that must re-enroll",
        description="The devices enrolled under a previous push topic, which must re-enroll after the push certificate was replaced.",
        responses=ERRORS,
    )
    def apns_reenroll(tenant: str, token: Auth) -> dict[str, object]:
        return p.apns.reenroll_required(tenant_scope(token, tenant))

    @api.put(
        "/api/v1/tenants/{tenant}/webhook",
        summary="Set the webhook",
        description="Send the tenant's events to `url`, signed with `secret` (HMAC-SHA256, `sha256=` signature).",
        responses=ERRORS,
    )
    def set_webhook(tenant: str, body: WebhookIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        p.notifier.configure(tid, body.url, body.secret)
        return {"url": body.url}

    @api.get(
        "/api/v1/tenants/{tenant}/push",
        summary="Push state",
        description="Pushes queued for the tenant, each device's push reachability, and devices that do not answer pushes.",
        responses=ERRORS,
    )
    def push_state(tenant: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return {
            "queued": p.push.queue_size(tid),
            "devices": p.push.reachability(tid),
            "unresponsive": p.push.unresponsive(tid, p.clock.now()),
        }

    @api.post(
        "/api/v1/tenants/{tenant}/users",
        status_code=201,
        summary="Create a user",
        description="Create a user of the tenant. `licensed: true` also assigns a licence seat (LICENSES_EXHAUSTED if none is free); `dem` marks a device enrollment manager; a user with a password can sign in to the portal.",
        responses=_ok(201, USER_EXAMPLE),
    )
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

    @api.patch(
        "/api/v1/tenants/{tenant}/users/{upn}",
        summary="Change a user",
        description="Change a user's flags: enabled, device enrollment manager, MFA required, licensed (assigns or frees a seat). Only the fields given change.",
        responses=ERRORS,
    )
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

    @api.delete(
        "/api/v1/tenants/{tenant}/users/{upn}",
        status_code=204,
        summary="Delete a user",
        description="Delete a user of the tenant; their licence seat is freed.",
        responses=ERRORS,
    )
    def delete_user(tenant: str, upn: str, token: Auth) -> None:
        p.policy.delete_user(tenant_scope(token, tenant), upn)

    @api.put(
        "/api/v1/tenants/{tenant}/licences",
        summary="Set licence seats",
        description="Set how many licence seats the tenant has; fewer than are assigned is refused.",
        responses=ERRORS,
    )
    def set_seats(tenant: str, body: SeatsIn, token: Auth) -> dict[str, int]:
        return p.policy.set_seats(tenant_scope(token, tenant), body.seats)

    @api.put(
        "/api/v1/tenants/{tenant}/authority",
        summary="Set the MDM authority",
        description="Make Pomona the tenant's MDM authority; without it every enrollment is refused with MDM_AUTHORITY_NOT_SET.",
        responses=ERRORS,
    )
    def set_authority(tenant: str, token: Auth) -> dict[str, object]:
        t = p.admin.set_authority(tenant_scope(token, tenant), "pomona")
        return {"mdm_authority": t.mdm_authority}

    @api.post(
        "/api/v1/tenants/{tenant}/groups",
        status_code=201,
        summary="Create a group",
        description="Create a group of users; restrictions apply to groups.",
        responses=ERRORS,
    )
    def create_group(tenant: str, body: GroupIn, token: Auth) -> dict[str, object]:
        g = p.policy.create_group(tenant_scope(token, tenant), body.name)
        return {"id": g.id, "name": g.name}

    @api.get(
        "/api/v1/tenants/{tenant}/groups",
        summary="List groups",
        description="The tenant's groups with their number of members.",
        responses=ERRORS,
    )
    def list_groups(tenant: str, token: Auth) -> dict[str, object]:
        rows = p.policy.list_groups(tenant_scope(token, tenant))
        return {"groups": [{"id": g.id, "name": g.name, "members": n} for g, n in rows]}

    @api.post(
        "/api/v1/tenants/{tenant}/groups/{group}/members",
        status_code=201,
        summary="Add a group member",
        description="Add a user to a group.",
        responses=ERRORS,
    )
    def add_member(tenant: str, group: str, body: MemberIn, token: Auth) -> dict[str, object]:
        p.policy.add_member(tenant_scope(token, tenant), group, body.upn)
        return {"group": group, "upn": body.upn}

    @api.delete(
        "/api/v1/tenants/{tenant}/groups/{group}/members/{upn}",
        status_code=204,
        summary="Remove a group member",
        description="Remove a user from a group.",
        responses=ERRORS,
    )
    def remove_member(tenant: str, group: str, upn: str, token: Auth) -> None:
        p.policy.add_member(tenant_scope(token, tenant), group, upn, remove=True)

    @api.get(
        "/api/v1/tenants/{tenant}/restrictions",
        summary="List enrollment restrictions",
        description="The tenant's enrollment restrictions (platform and device limit) in priority order, defaults included.",
        responses=ERRORS,
    )
    def list_restrictions(tenant: str, token: Auth, lang: Lang) -> dict[str, object]:
        rs, names = p.policy.list_restrictions(tenant_scope(token, tenant))
        return {"restrictions": [restriction_json(r, names, lang) for r in rs]}

    @api.post(
        "/api/v1/tenants/{tenant}/restrictions",
        status_code=201,
        summary="Create an enrollment restriction",
        description="Create a restriction of `type` (`platform`: platforms, OS range, personally-owned devices; `limit`: how many devices a user may enroll) at `priority` for `groups`, with the settings of its type (e.g. `ios: block`, `min_os`, `limit`).",
        responses=ERRORS,
    )
    def create_restriction(tenant: str, body: RestrictionIn, token: Auth, lang: Lang) -> dict[str, object]:
        r = p.policy.create_restriction(
            tenant_scope(token, tenant),
            type_=body.type,
            priority=body.priority,
            groups=body.groups,
            name=body.name,
            **body.settings(),
        )
        return restriction_json(r, lang=lang)

    @api.patch(
        "/api/v1/tenants/{tenant}/restrictions/{type_}/{which}",
        summary="Change an enrollment restriction",
        description="Change a restriction's settings, groups or priority. `which` is `default` or the restriction's priority.",
        responses=ERRORS,
    )
    def edit_restriction(
        tenant: str, type_: str, which: str, body: RestrictionPatch, token: Auth, lang: Lang
    ) -> dict[str, object]:
        """`which` is `default` or the restriction's priority."""
        default = which == "default"
        if not default and not (which.isascii() and which.isdigit() and len(which) <= 9):
            raise InvalidInputError(msg("error.api.which"))
        r = p.policy.edit_restriction(
            tenant_scope(token, tenant),
            type_=type_,
            default=default,
            priority=None if default else int(which),
            new_priority=body.new_priority,
            groups=body.groups,
            **body.settings(),
        )
        return restriction_json(r, lang=lang)

    @api.delete(
        "/api/v1/tenants/{tenant}/restrictions/{type_}/{priority}",
        status_code=204,
        summary="Delete an enrollment restriction",
        description="Delete the restriction of `type_` at `priority` (a default restriction cannot be deleted).",
        responses=ERRORS,
    )
    def delete_restriction(
        tenant: str, type_: str, priority: Annotated[int, Path(ge=-INT_MAX, le=INT_MAX)], token: Auth
    ) -> None:
        p.policy.delete_restriction(tenant_scope(token, tenant), type_, priority)

    @api.post(
        "/api/v1/tenants/{tenant}/corporate-identifiers",
        summary="Import corporate identifiers",
        description="Import corporate device identifiers (CSV: serial or IMEI, and a description). All or nothing: with any bad row nothing is imported, and the answer is 422 with the rows listed.",
        responses=ERRORS,
    )
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

    @api.get(
        "/api/v1/tenants/{tenant}/corporate-identifiers",
        summary="List corporate identifiers",
        description="The tenant's corporate device identifiers, paged with `limit` and `offset`.",
        responses=ERRORS,
    )
    def list_corporate(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        offset: Offset = 0,
    ) -> dict[str, object]:
        rows = p.policy.list_corporate(tenant_scope(token, tenant), limit=limit, offset=offset)
        return {"identifiers": [corporate_json(c) for c in rows]}

    @api.post(
        "/api/v1/tenants/{tenant}/blocked-devices",
        status_code=201,
        summary="Block a device",
        description="Block a device by serial or UDID: its enrollments end and it cannot enroll again until unblocked.",
        responses=ERRORS,
    )
    def block_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        n = p.policy.block(tenant_scope(token, tenant), serial=body.serial, udid=body.udid, note=body.note)
        return {"blocked": body.serial or body.udid, "ended_enrollments": n}

    @api.post(
        "/api/v1/tenants/{tenant}/blocked-devices/remove",
        summary="Unblock a device",
        description="Remove a device from the tenant's block list.",
        responses=ERRORS,
    )
    def unblock_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        p.policy.block(tenant_scope(token, tenant), serial=body.serial, udid=body.udid, unblock=True)
        return {"unblocked": body.serial or body.udid}

    @api.post(
        "/api/v1/tenants/{tenant}/devices/retire",
        summary="Retire a device",
        description="Retire a device by serial or UDID: its enrollments end (it is removed from management).",
        responses=ERRORS,
    )
    def retire_device(tenant: str, body: DeviceRefIn, token: Auth) -> dict[str, object]:
        n = p.policy.retire(tenant_scope(token, tenant), serial=body.serial, udid=body.udid)
        return {"retired": body.serial or body.udid, "enrollments": n}

    @api.post(
        "/api/v1/tenants/{tenant}/policy/explain",
        summary="Explain the enrollment policy",
        description="Which restrictions would apply to this user (and device, OS version, platform) and whether an enrollment would be allowed, with the reason code if not. Changes nothing.",
        responses=ERRORS,
    )
    def explain(tenant: str, body: ExplainIn, token: Auth, lang: Lang) -> dict[str, object]:
        d = p.policy.explain(
            tenant_scope(token, tenant),
            body.upn,
            serial=body.serial,
            udid=body.udid,
            os_version=body.os_version,
            platform=body.platform,
        )
        return decision_json(d, lang)

    @api.get(
        "/api/v1/tenants/{tenant}/users",
        summary="List users",
        description="The tenant's users, paged with `limit` and `offset`.",
        responses=ERRORS,
    )
    def list_users(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return {"users": [user_json(u) for u in p.admin.list_users(tid, limit=limit, offset=offset)]}

    @api.post(
        "/api/v1/tenants/{tenant}/enrollment-tokens",
        status_code=201,
        summary="Create an enrollment link",
        description="Create an enrollment link for a user: open `url` on the device to enroll. `uses` is how many enrollments it allows, `expires_in_seconds` how long it lives. The secret is only in this answer. The link is created even when the user cannot enroll now: `warnings` then holds the reason code and a message in `lang` naming the command that fixes it (as `pomona enroll-token create` prints), and a plain http:// public URL off this machine is warned about (reason null).",
        responses=_ok(201, LINK_EXAMPLE),
    )
    def create_enroll_token(tenant: str, body: EnrollTokenIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        issued = p.admin.create_enrollment_token(
            tid, body.upn, uses=body.uses, expires_in=timedelta(seconds=body.expires_in_seconds)
        )
        warnings = p.policy.link_warnings(tid, body.upn, p.enrollment.urls.public_url, body.lang)
        return {
            "id": issued.token.id,
            "url": p.enrollment.urls.enroll(issued.secret),
            "uses": issued.token.uses_allowed,
            "expires_at": issued.token.expires_at.isoformat(),
            "warnings": [w.to_dict() for w in warnings],
        }

    @api.get(
        "/api/v1/tenants/{tenant}/enrollment-tokens",
        summary="List enrollment links",
        description="The tenant's enrollment links, newest first (never their secrets).",
        responses=ERRORS,
    )
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

    @api.post(
        "/api/v1/tenants/{tenant}/enrollment-tokens/{token_id}/revoke",
        summary="Revoke an enrollment link",
        description="Revoke an enrollment link: its next use is ENROLLMENT_TOKEN_INVALID.",
        responses=ERRORS,
    )
    def revoke_enroll_token(tenant: str, token_id: str, token: Auth) -> dict[str, object]:
        """Revoke an enrollment link: its next use is ENROLLMENT_TOKEN_INVALID."""
        tid = tenant_scope(token, tenant)
        return enrollment_token_json(p.admin.revoke_enrollment_token(tid, token_id), None, p.clock.now())

    @api.get(
        "/api/v1/tenants/{tenant}/devices",
        summary="List devices",
        description="The tenant's devices with their current enrollment, paged with `limit` and `offset`.",
        responses=ERRORS,
    )
    def list_devices(
        tenant: str,
        token: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Offset = 0,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        views, total = p.commands.list_devices(tid, limit=limit, offset=offset)
        return {"total": total, "devices": [device_json(v.device, v.enrollment) for v in views]}

    @api.get(
        "/api/v1/tenants/{tenant}/devices/{ref}",
        summary="Show a device",
        description="One device (by serial, UDID or id) with its enrollment history, its commands and health's open findings about it (held at Setup Assistant, assigned to another MDM server in ABM).",
        responses=ERRORS,
    )
    def get_device(tenant: str, ref: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        v = p.commands.device(tid, ref)
        out = device_json(v.device, v.enrollment)
        out["enrollments"] = [enrollment_json(e) for e in v.history]
        out["commands"] = [command_json(c) for c in v.commands]
        subjects = device_subjects(v.device.udid, v.device.serial)  # health's, as last recorded
        out["findings"] = [r.to_json() for r in p.health.open_findings(tid) if r.finding.subject in subjects]
        return out

    @api.post(
        "/api/v1/tenants/{tenant}/devices/{ref}/release",
        status_code=201,
        summary="Release a device held at Setup Assistant",
        description="Queue DeviceConfigured for a device (by serial, UDID or id) that waits at Setup Assistant (an ADE profile with `await_device_configured`) and push it. Pomona releases such devices by itself once their initial commands are answered; this is the manual way (health's AWAITING_CONFIGURATION_STUCK).",
        responses=ERRORS,
    )
    def release_device(tenant: str, ref: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return command_json(p.commands.release(tid, ref))

    @api.post(
        "/api/v1/tenants/{tenant}/commands",
        status_code=201,
        summary="Send a command",
        description="Queue an MDM command for one or more devices (serial, UDID or id) and, with `push`, wake them with a push. `request_type` is one of the typed commands (listed in the body's schema); `params` are the command's keys with Apple's names (data as base64 strings). An unknown type or parameter is INVALID_INPUT.",
        responses=_ok(201, COMMANDS_EXAMPLE),
    )
    def enqueue(tenant: str, body: CommandIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        queued = p.commands.enqueue(tid, body.request_type, body.params, body.devices, push=body.push)
        return {"commands": [command_json(c) for c in queued]}

    @api.get(
        "/api/v1/tenants/{tenant}/commands/{command_uuid}",
        summary="Show a command",
        description="One command's status and, once the device answered, its result.",
        responses=ERRORS,
    )
    def get_command(tenant: str, command_uuid: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        return command_json(p.commands.command(tid, command_uuid), with_result=True)

    @api.get(
        "/api/v1/tenants/{tenant}/events",
        summary="List events",
        description="The tenant's events, newest first: every enrollment, check-in, refusal (with its reason code), command and admin change. Filter by user, serial, UDID, reason code and time. To follow the log, pass `after_id` (the greatest `id` seen so far): only newer events come back, oldest first.",
        responses=ERRORS,
    )
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
        after_id: Annotated[
            int | None,
            Query(
                ge=0, le=2**62, description="Only events with a greater id, oldest first (to follow the log)."
            ),
        ] = None,
    ) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        evs = p.commands.events(
            tid,
            upn=upn,
            serial=serial,
            udid=udid,
            reason=reason,
            since=since,
            until=until,
            limit=limit,
            after_id=after_id,
        )
        return {"events": [event_json(e) for e in evs]}

    def run_diagnose(tid: str, body: DiagnoseIn) -> dict[str, object]:
        from pomona.services.diagnose import to_json

        if body.lang not in ("en", "zh-CN"):
            raise InvalidInputError(msg("error.api.lang"))
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

    @api.post(
        "/api/v1/tenants/{tenant}/diagnose",
        summary="Diagnose an enrollment problem",
        description="Why a user or device cannot enroll: the likely causes ranked, each with its evidence (events) and what to do, in `en` or `zh-CN`. Give at least one of `upn`, `serial`, `udid`, `imei` or the `message` the user saw.",
        responses=ERRORS,
    )
    def diagnose_tenant(tenant: str, body: DiagnoseIn, token: Auth) -> dict[str, object]:
        return run_diagnose(tenant_scope(token, tenant), body)

    @api.post(
        "/api/v1/diagnose",
        summary="Diagnose (tenant in the body)",
        description="Like the tenant diagnose: the tenant is the token's own, or `tenant` in the body for a server-wide token.",
        responses=ERRORS,
    )
    def diagnose(body: DiagnoseIn, token: Auth) -> dict[str, object]:
        """The tenant is the token's own, or `tenant` in the body for a server-wide token."""
        tenant = body.tenant or token.tenant_id
        if tenant is None:
            raise InvalidInputError(msg("error.api.name_tenant"))
        return run_diagnose(tenant_scope(token, tenant), body)

    @api.get(
        "/api/v1/health/findings",
        summary="Tenant health findings",
        description="The tenant's health checked now (push certificate, DNS, licences, authority…) with a title per finding in `lang`; the tenant is the token's own, or `tenant` for a server-wide token.",
        responses=ERRORS,
    )
    def health_findings(token: Auth, tenant: str | None = None, lang: str = "en") -> dict[str, object]:
        """Tenant health, checked now; the tenant is the token's own (or `tenant` for a server-wide token)."""
        from pomona import knowledge

        ref = tenant or token.tenant_id
        if ref is None:
            raise InvalidInputError(msg("error.api.name_tenant"))
        data = p.health.run(tenant_scope(token, ref))
        for f in data["findings"]:
            f["title"] = knowledge.text_for(f["code"], lang, **f["facts"]).title
        return data

    @api.get(
        "/api/v1/reports/enrollment-failures",
        response_model=None,
        summary="Enrollment failure report",
        description="Enrollment refusals between `since` and `until` (default: the last 30 days), grouped by `reason`, `platform`, `type`, `step` or `day`; `format=csv` for a CSV file.",
        responses=ERRORS,
    )
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
            raise InvalidInputError(msg("error.api.name_tenant"))
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

    # --- Apple Business Manager: the same operations as `pomona abm ...` --------------------------------
    def abm_device_record(r: Any) -> dict[str, object]:
        return abm_device_json(
            r.device,
            deleted=r.deleted,
            token_id=r.token_id,
            first_seen_at=r.first_seen_at,
            updated_at=r.updated_at,
        )

    @api.post(
        "/api/v1/tenants/{tenant}/abm/keypair",
        summary="Make the ABM certificate",
        description="Make (once) the tenant's ABM key pair and answer its certificate (PEM) to upload in Apple Business Manager; `made` says whether it was made now (its key never leaves the server). As `pomona abm keypair`.",
        responses=ERRORS,
    )
    def abm_make_keypair(tenant: str, token: Auth) -> dict[str, object]:
        cert_pem, made = p.abm.keypair(tenant_scope(token, tenant))
        return {"tenant": tenant, "made": made, "certificate": cert_pem.decode()}

    @api.get(
        "/api/v1/tenants/{tenant}/abm/keypair",
        response_model=None,
        summary="Download the ABM certificate",
        description="The tenant's ABM certificate as a PEM file (`application/x-pem-file`), to upload in Apple Business Manager; NOT_FOUND until `POST .../abm/keypair` made it.",
        responses={200: {"content": {"application/x-pem-file": {}}}, **ERRORS},
    )
    def abm_get_keypair(tenant: str, token: Auth) -> Response:
        cert_pem = p.abm.certificate(tenant_scope(token, tenant))
        if cert_pem is None:
            raise NotFoundError(f"tenant {tenant!r} has no ABM key pair yet (POST .../abm/keypair)")
        return Response(
            cert_pem,
            media_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="abm-cert.pem"'},
        )

    @api.post(
        "/api/v1/tenants/{tenant}/abm/tokens",
        status_code=201,
        summary="Upload an ABM server token",
        description="Upload the server token (`.p7m`) Apple Business Manager gave, as the request body (`application/pkcs7-mime`), optionally named with `name`. A token that does not open with the tenant's ABM key is DEP_TOKEN_INVALID (422), an expired one DEP_TOKEN_EXPIRED. As `pomona abm token upload`.",
        responses=ABM_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/pkcs7-mime": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def abm_upload_token(
        tenant: str,
        request: Request,
        token: Auth,
        name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    ) -> dict[str, object]:
        data = await request.body()

        def upload() -> dict[str, object]:
            return p.abm.upload_token(tenant_scope(token, tenant), data, name).to_json()

        return await run_in_threadpool(upload)

    @api.get(
        "/api/v1/tenants/{tenant}/abm/tokens",
        summary="List ABM server tokens",
        description="The tenant's ABM server tokens (never their secrets): expiry, `state` (ok, expiring within 30 days, expired), last sync and last error. As `pomona abm token list`.",
        responses=ERRORS,
    )
    def abm_list_tokens(tenant: str, token: Auth) -> dict[str, object]:
        return {"tokens": [st.to_json() for st in p.abm.tokens(tenant_scope(token, tenant))]}

    @api.delete(
        "/api/v1/tenants/{tenant}/abm/tokens/{token_ref}",
        status_code=204,
        summary="Remove an ABM server token",
        description="Forget an ABM server token (by id or name); its devices stay listed, as history. As `pomona abm token remove`.",
        responses=ERRORS,
    )
    def abm_remove_token(tenant: str, token_ref: str, token: Auth) -> None:
        p.abm.remove_token(tenant_scope(token, tenant), token_ref)

    @api.post(
        "/api/v1/tenants/{tenant}/abm/sync",
        summary="Sync with ABM now",
        description="Sync the devices ABM assigns to this server, for every token (or `token`), following the cursor or, with `full`, fetching every device again; then reconcile the profile assignments. ABM's refusals answer 502 with their DEP_* code. As `pomona abm sync`.",
        responses=ABM_ERRORS,
    )
    def abm_sync(tenant: str, token: Auth, body: AbmSyncIn | None = None) -> dict[str, object]:
        body = body or AbmSyncIn()
        reports = p.abm.sync(tenant_scope(token, tenant), full=body.full, token=body.token)
        return {"reports": [r.to_json() for r in reports]}

    @api.get(
        "/api/v1/tenants/{tenant}/abm/devices",
        summary="List ABM devices",
        description="The devices ABM assigns to this server as the last sync saw them (Apple's field names; `deleted`: removed from ABM, kept as history), by serial, paged with `limit` and `offset`; `serial` keeps one. As `pomona abm devices`.",
        responses=ERRORS,
    )
    def abm_devices(
        tenant: str,
        token: Auth,
        serial: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
        offset: Offset = 0,
    ) -> dict[str, object]:
        records = p.abm.devices(tenant_scope(token, tenant), serial=serial, limit=limit, offset=offset)
        return {"devices": [abm_device_record(r) for r in records]}

    @api.get(
        "/api/v1/tenants/{tenant}/abm/devices/{serial}",
        summary="Show an ABM device",
        description="One device ABM lists, with its ABM timeline (what each sync saw change, and each assignment try), oldest first. As `pomona abm devices --serial`.",
        responses=ERRORS,
    )
    def abm_device(tenant: str, serial: str, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        records = p.abm.devices(tid, serial=serial, limit=1)
        if not records:
            raise NotFoundError(f"ABM lists no device {serial!r} for this tenant", serial=serial)
        return {
            **abm_device_record(records[0]),
            "history": [h.to_json() for h in p.abm.history(tid, serial)],
        }

    @api.get(
        "/api/v1/tenants/{tenant}/abm/profiles",
        summary="List ADE profiles",
        description="The tenant's ADE enrollment profiles: settings, whether each is a default, and Apple's UUID of it under each token. As `pomona abm profile list`.",
        responses=ERRORS,
    )
    def abm_profiles(tenant: str, token: Auth) -> dict[str, object]:
        return {"profiles": [v.to_json() for v in p.abm.profiles(tenant_scope(token, tenant))]}

    def profile_answer(make: Any, lang: str) -> Any:
        """A linter refusal (DEP_PROFILE_REJECTED, 422) carries its findings beside the usual fields."""
        import json

        from pomona.domain.errors import AdeProfileInvalidError

        try:
            return make().to_json()
        except AdeProfileInvalidError as exc:
            answer = api_error(exc, request_id_var.get() or "", lang)
            data = {**json.loads(bytes(answer.body)), "findings": exc.context.get("findings", [])}
            return JSONResponse(data, status_code=answer.status_code)

    @api.post(
        "/api/v1/tenants/{tenant}/abm/profiles",
        status_code=201,
        response_model=None,
        summary="Create an ADE profile",
        description="Lint an ADE enrollment profile (a blocking finding is DEP_PROFILE_REJECTED, 422, with `findings`, and nothing is sent), define it at ABM under every token (or `token`) and keep it; `default` makes every new device get it. Warnings are in `findings`. As `pomona abm profile create`.",
        responses=ABM_ERRORS,
    )
    def abm_create_profile(tenant: str, body: AdeProfileIn, token: Auth, lang: Lang) -> Any:
        from pomona.domain.ade_profile import AuthMode

        tid = tenant_scope(token, tenant)
        return profile_answer(
            lambda: p.abm.create_profile(
                tid,
                body.name,
                auth=AuthMode(body.auth),
                await_configured=body.await_configured,
                supervised=body.supervised,
                removable=body.removable,
                skip=body.skip,
                default=body.default,
                token=body.token,
            ),
            lang,
        )

    @api.patch(
        "/api/v1/tenants/{tenant}/abm/profiles/{name}",
        response_model=None,
        summary="Change an ADE profile",
        description="Change an ADE profile (only the fields given): it is linted, defined at ABM again and assigned again to its devices. As `pomona abm profile edit`.",
        responses=ABM_ERRORS,
    )
    def abm_edit_profile(tenant: str, name: str, body: AdeProfilePatch, token: Auth, lang: Lang) -> Any:
        from pomona.domain.ade_profile import AuthMode

        tid = tenant_scope(token, tenant)
        return profile_answer(
            lambda: p.abm.edit_profile(
                tid,
                name,
                auth=None if body.auth is None else AuthMode(body.auth),
                await_configured=body.await_configured,
                supervised=body.supervised,
                removable=body.removable,
                skip=body.skip,
                default=body.default,
            ),
            lang,
        )

    @api.post(
        "/api/v1/tenants/{tenant}/abm/assignments",
        summary="Assign an ADE profile",
        description="Want `profile` on these serials (explicit assignments, which beat rules and the default), then reconcile: `devices` holds each serial's answer (SUCCESS, FAILED, NOT_ACCESSIBLE, or `pending`: ABM does not list it yet; it is assigned when a sync first does). As `pomona abm assign`.",
        responses=ABM_ERRORS,
    )
    def abm_assign(tenant: str, body: AbmAssignIn, token: Auth) -> dict[str, object]:
        return p.abm.assign(tenant_scope(token, tenant), body.profile, body.serials).to_json()

    @api.get(
        "/api/v1/tenants/{tenant}/abm/rules",
        summary="List assignment rules",
        description="The tenant's assignment rules (devices whose model, device family or order number match get a profile), in the order they are tried. As `pomona abm rule list`.",
        responses=ERRORS,
    )
    def abm_rules(tenant: str, token: Auth) -> dict[str, object]:
        return {"rules": [v.to_json() for v in p.abm.rules(tenant_scope(token, tenant))]}

    @api.post(
        "/api/v1/tenants/{tenant}/abm/rules",
        status_code=201,
        summary="Add an assignment rule",
        description="Devices whose `field` (model, device_family, order_number) matches `value` (ignoring case; `*` and `?` are wildcards) get `profile`: after explicit assignments, before the token's default; the first matching rule by `priority` wins. The devices already synced are reconciled now. As `pomona abm rule add`.",
        responses=ABM_ERRORS,
    )
    def abm_add_rule(tenant: str, body: AbmRuleIn, token: Auth) -> dict[str, object]:
        view, done = p.abm.add_rule(
            tenant_scope(token, tenant), body.profile, body.field, body.value, priority=body.priority
        )
        return {**view.to_json(), "assigned": done.assigned, "assign_failed": done.failed}

    @api.delete(
        "/api/v1/tenants/{tenant}/abm/rules/{rule_id}",
        status_code=204,
        summary="Remove an assignment rule",
        description="Forget an assignment rule: the devices it gave a profile get the token's default at the reconciliation that follows at once. As `pomona abm rule remove`.",
        responses=ABM_ERRORS,
    )
    def abm_remove_rule(tenant: str, rule_id: str, token: Auth) -> None:
        p.abm.remove_rule(tenant_scope(token, tenant), rule_id)

    @api.post(
        "/api/v1/tenants/{tenant}/abm/release",
        summary="Release a device from Setup Assistant",
        description="Release an enrolled device ABM lists that Setup Assistant holds (`await_device_configured`): queue DeviceConfigured, sent at its next check-in. NOT_FOUND for a serial ABM does not list for this tenant. As `pomona abm release`.",
        responses=ERRORS,
    )
    def abm_release(tenant: str, body: AbmReleaseIn, token: Auth) -> dict[str, object]:
        tid = tenant_scope(token, tenant)
        if not p.abm.devices(tid, serial=body.serial, limit=1):
            raise NotFoundError(f"ABM lists no device {body.serial!r} for this tenant", serial=body.serial)
        (queued,) = p.commands.enqueue(tid, "DeviceConfigured", {}, [body.serial])
        return {
            "tenant": tenant,
            "serial": body.serial,
            "request_type": queued.request_type,
            "command_uuid": queued.command_uuid,
        }

    @api.get(
        "/healthz",
        summary="Liveness",
        description='Answers `{"status": "ok"}` from the event loop itself, without authentication: for load balancers and service managers.',
    )
    async def healthz() -> dict[str, str]:
        """Answered on the event loop itself (no hop to a worker thread): it measures the loop."""
        return {"status": "ok"}

    return api
