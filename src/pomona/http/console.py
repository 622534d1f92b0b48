"""The admin and helpdesk console (issue 13): server-rendered pages in English and Simplified Chinese.

    GET   /console                                  -> the account's tenant (an operator: the list)
    GET   /console/signin        POST /console/signin       email, password, TOTP code when set
    POST  /console/signout
    GET   /console/lang/{lang}                      the language switch (a ``lang`` cookie)
    GET   /console/t/{tenant}                       the dashboard: health findings, push certificate, top
                                                    failure reasons
    GET   /console/t/{tenant}/troubleshoot          a user or a pasted error message -> the diagnosis
    GET   /console/t/{tenant}/devices               filter (name/serial prefix, platform, OS, ownership,
                                                    enrollment type, state, last check-in), sort, keyset pages
    GET   /console/t/{tenant}/devices/{id}          inventory, enrollments, command queue, and the timeline
                                                    (events, commands, pushes, ABM; ?older= pages back)
    GET   /console/t/{tenant}/devices/{id}/retire   the confirmation; POST retires (audited)
    POST  /console/t/{tenant}/devices/{id}/repush   push the device now (audited)
    POST  /console/t/{tenant}/devices/{id}/release  release it from Setup Assistant: DeviceConfigured (audited)
    GET   /console/t/{tenant}/devices/{id}/erase    the confirmation (type the serial); POST erases (admins)
    POST  /console/t/{tenant}/devices/{id}/{action} lock, restart, rename, block, unblock (admins; audited)
    GET   /console/t/{tenant}/users                 users: licence, devices, DEM, groups; UPN prefix, keyset
    POST  /console/t/{tenant}/users/licence         assign or remove a user's licence (admins; audited)
    GET   /console/t/{tenant}/restrictions          enrollment restrictions and the policy dry run: their
                                                    create, edit, priority, groups and delete are
                                                    http/console_policy.py's
    GET   /console/t/{tenant}/audit                 the tenant's audit log: who changed what, when, from where;
                                                    filters who, action (prefix), from, since, until (dates)
    GET   /console/_static/{file}                   CSS (no CDN, no script needed)

What the portal already does, the console reuses from http/portal.py: the language choice and texts,
the security headers, the request id. The session is a signed cookie (Secure, HttpOnly, SameSite=Lax,
path /console) naming a server-side session (services/console.py); every POST carries its CSRF token.
Use cases live in :mod:`pomona.services.console`; database and argon2 work run in the thread pool.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from pomona import knowledge
from pomona.domain.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PolicyError,
    describe,
)
from pomona.domain.models import EnrollmentType
from pomona.domain.policy import parse_version
from pomona.http.middleware import RequestId, log_internal
from pomona.http.portal import FormPages, PortalHeaders, _when, translate
from pomona.ports import AdminAccount, DeviceCursor, DeviceSort
from pomona.presenters import display_name, error_text
from pomona.services.console import (
    DEVICE_STATES,
    OWNERSHIPS,
    SESSION_LIFETIME,
    ConsoleService,
    ConsoleSignInStatus,
    DeviceQuery,
    TimelineCursor,
    TimelineEntry,
    can,
)
from pomona.services.console_auth import ConsoleAuthService
from pomona.services.container import Services
from pomona.services.diagnose.render import to_json as diagnosis_json

_HERE = Path(__file__).parent
log = logging.getLogger("pomona.http")
SORTS: tuple[DeviceSort, ...] = ("name", "serial", "last_seen")
PLATFORMS: tuple[str, ...] = ("ios", "ipados")  # the dry run's platform choice (none: any)
ENROLLMENT_TYPES: tuple[str, ...] = tuple(t.value for t in EnrollmentType)
STALE_DAYS: tuple[int, ...] = (1, 7, 30, 90)  # the "last check-in older than" choices (any N is accepted)
#: The device page's notices after an action (?done=...).
DONE: tuple[str, ...] = (
    "retired",
    "pushed",
    "released",
    "lock",
    "erase",
    "restart",
    "rename",
    "block",
    "unblock",
)
#: The device actions with no page of their own (erase has its confirmation page).
ACTIONS: tuple[str, ...] = ("lock", "erase", "restart", "rename", "block", "unblock")
#: The incident summary's period (as `pomona incident`'s default).
INCIDENT_DAYS = 7

Handler = Callable[[Request], Awaitable[Response]]


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates" / "console")),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


def title_of(code: str, lang: str, facts: dict[str, object] | None = None) -> str:
    """The knowledge base's title of a reason code, or the code itself when it has none (an event left by
    another version)."""
    try:
        return knowledge.text_for(code, lang, **(facts or {})).title
    except ValueError:
        return code


def encode_cursor(c: DeviceCursor | None) -> str:
    if c is None:
        return ""
    v = c.value.isoformat() if isinstance(c.value, datetime) else c.value
    raw = json.dumps([v, c.id, c.empty, isinstance(c.value, datetime)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> DeviceCursor | None:
    """A cursor from the URL, or None (the first page) for anything that is not one."""
    if not text or len(text) > 1000:
        return None
    try:
        v, did, empty, is_time = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        value = datetime.fromisoformat(v) if is_time and isinstance(v, str) else v
        if not isinstance(did, str) or not (value is None or isinstance(value, str | datetime)):
            return None
        return DeviceCursor(value, did, bool(empty))
    except (ValueError, TypeError):
        return None


def encode_older(c: TimelineCursor | None) -> str:
    """The timeline's "older" link value: the cursor's time, ``~`` ending it when inclusive."""
    if c is None:
        return ""
    return c.at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f") + ("~" if c.inclusive else "")


def decode_older(text: str) -> TimelineCursor | None:
    """A timeline cursor from the URL, or None (the newest page) for anything that is not one."""
    inclusive = text.endswith("~")
    try:
        at = datetime.strptime(text.removesuffix("~")[:40], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None
    return TimelineCursor(at, inclusive)


def timeline_rows(entries: list[TimelineEntry], lang: str) -> list[dict[str, Any]]:
    """The device timeline's rows in the visitor's language: time, kind, what happened, the reason code
    and its title (values a device controls stay text: the template escapes them)."""
    rows = []
    for e in entries:
        facts = dict(e.facts)
        what = translate(lang, f"console.timeline.{e.kind}.{e.what}", **facts)
        if e.kind == "event":
            what = translate(
                lang,
                "console.timeline.event_outcome",
                step=what,
                outcome=translate(lang, f"console.timeline.outcome.{facts.get('outcome', 'ok')}"),
            )
        title = title_of(e.reason, lang) if e.reason else ""
        rows.append(
            {
                "at": e.at,
                "kind": e.kind,
                "what": what,
                "code": e.what,
                "detail": facts.get("error") or facts.get("profile_status") or "",
                "reason": e.reason or "",
                "reason_title": "" if title == e.reason else title,
            }
        )
    return rows


def device_query(q: Any) -> tuple[DeviceQuery, dict[str, str]]:
    """The device list's filters from the query string: each value checked (anything else is no filter),
    and the same values to keep in the page's links."""
    platform = q.get("platform") if q.get("platform") in PLATFORMS else None
    os_prefix = _version(q.get("os") or "")
    os_min = _version(q.get("os_min") or "")
    ownership = q.get("ownership") if q.get("ownership") in OWNERSHIPS else None
    etype = q.get("type") if q.get("type") in ENROLLMENT_TYPES else None
    state = next((x for x in DEVICE_STATES if x == q.get("state")), None)
    raw_days = q.get("stale") or ""
    stale = int(raw_days) if raw_days.isdigit() and 0 < len(raw_days) <= 5 else None
    query = DeviceQuery(platform, os_prefix, os_min, ownership, etype, state, stale)
    kept = {
        "platform": platform or "",
        "os": os_prefix or "",
        "os_min": os_min or "",
        "ownership": ownership or "",
        "type": etype or "",
        "state": state or "",
        "stale": "" if stale is None else str(stale),
    }
    return query, {k: v for k, v in kept.items() if v}


def _version(text: str) -> str | None:
    """An OS version as typed ("17", "17.4", "17.4.1"), or None for anything else."""
    text = text.strip()[:16]
    try:
        parse_version(text)
    except ValueError:
        return None
    return text


def _day(text: str) -> datetime | None:
    """A date of a filter (YYYY-MM-DD) as the start of that day in UTC, or None."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) if text else None
    except ValueError:
        return None


def _printable(text: str) -> str:
    """A query value without control characters (no UPN has one; PostgreSQL refuses NUL)."""
    return "".join(ch for ch in text if ch >= " ")


class Console(FormPages):
    def __init__(self, p: Services) -> None:
        self.p = p
        self.svc: ConsoleService = p.console
        self.env = templates()
        self.secure_cookies = True
        # Sign-in beyond a password (TOTP enrolment, OpenID Connect): http/console_auth.py
        self.p_auth: ConsoleAuthService = p.console_auth
        self.enrol_page: Callable[[Request, AdminAccount], Awaitable[Response]] | None = None

    # --- plumbing ---------------------------------------------------------------------------------
    def render(
        self,
        request: Request,
        template: str,
        account: AdminAccount | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        lang = self.lang(request)

        def _(key: str, **values: object) -> str:
            return translate(lang, key, **values)

        html = self.env.get_template(template).render(
            _=_,
            lang=lang,
            other_lang="en" if lang == "zh-CN" else "zh-CN",
            account=account,
            can=(lambda action: account is not None and can(account, action)),
            shown_name=(lambda name: display_name(name, lang)),
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            csrf=self.csrf(request),
            request_id=request.scope.get("state", {}).get("request_id", ""),
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def message(
        self, request: Request, account: AdminAccount | None, status: int, title: str, body: str, **v: object
    ) -> HTMLResponse:
        resp = self.render(request, "message.html", account, status, title_key=title, body_key=body, values=v)
        if status == 429 and v.get("retry_after"):
            resp.headers["retry-after"] = str(v["retry_after"])
        return resp

    async def account(self, request: Request) -> AdminAccount | None:
        sid = request.session.get("sid")
        if not isinstance(sid, str):
            return None
        return await run_in_threadpool(self.svc.session_account, sid)

    def error_response(self, request: Request, account: AdminAccount | None, exc: BaseException) -> Response:
        if isinstance(exc, NotFoundError):
            return self.message(
                request, account, 404, "console.error.not_found.title", "console.error.not_found.body"
            )
        if isinstance(exc, ForbiddenError):
            return self.message(request, account, 403, "console.error.role.title", "console.error.role.body")
        e = describe(exc)
        if isinstance(exc, InvalidInputError | ConflictError | PolicyError):
            return self.message(
                request,
                account,
                409 if isinstance(exc, ConflictError) else 422,
                "console.error.invalid.title",
                "console.error.invalid.body",
                detail=error_text(e, self.lang(request)),
            )
        if e.internal:
            log_internal(log, exc, request.scope.get("state", {}).get("request_id"))
        return self.message(
            request, account, 500, "console.error.internal.title", "console.error.internal.body"
        )

    def signed(self, handler: Callable[[Request, AdminAccount], Awaitable[Response]]) -> Handler:
        """A page for signed-in accounts: the sign-in page otherwise; every error gets its page."""

        async def endpoint(request: Request) -> Response:
            account = await self.account(request)
            if account is None:
                return RedirectResponse("/console/signin", status_code=303)
            try:
                return await handler(request, account)
            except HTTPException:
                raise
            except Exception as exc:  # noqa: BLE001 - every error gets the page its class says
                return self.error_response(request, account, exc)

        return endpoint

    def posted(
        self, handler: Callable[[Request, AdminAccount, dict[str, str]], Awaitable[Response]]
    ) -> Handler:
        """A POST of a signed-in account: refused without the session's CSRF token."""

        async def with_form(request: Request, account: AdminAccount) -> Response:
            form = await self.form(request)
            if not self.csrf_ok(request, form):
                return self.csrf_refused(request, account)
            return await handler(request, account, form)

        return self.signed(with_form)

    def csrf_refused(self, request: Request, account: AdminAccount | None) -> Response:
        return self.message(request, account, 403, "portal.error.csrf.title", "portal.error.csrf.body")

    def tenant_ref(self, request: Request) -> str:
        return str(request.path_params["tenant"])

    # --- signing in -------------------------------------------------------------------------------
    async def home(self, request: Request, account: AdminAccount) -> Response:
        tenants = await run_in_threadpool(self.svc.tenants, account)
        if account.tenant_id is not None and tenants:
            return RedirectResponse(f"/console/t/{tenants[0].name}", status_code=303)
        return self.render(request, "tenants.html", account, tenants=tenants)

    async def signin_page(self, request: Request) -> Response:
        if await self.account(request) is not None:
            return RedirectResponse("/console", status_code=303)
        from pomona.http.console_auth import sso_for

        sso = await run_in_threadpool(sso_for, self, request.query_params.get("tenant", ""))
        return self.render(request, "signin.html", None, email="", error=None, need_code=False, sso=sso)

    async def signin(self, request: Request) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, None)
        email = form.get("email", "")
        result = await run_in_threadpool(
            self.svc.sign_in, email, form.get("password", ""), form.get("code", ""), self.client_ip(request)
        )
        if result.status is ConsoleSignInStatus.SIGNED_IN:
            assert result.account is not None
            sid = await run_in_threadpool(self.svc.open_session, result.account)
            request.session.clear()  # no fixation: a new session, a new CSRF token
            request.session.update({"sid": sid, "csrf": secrets.token_urlsafe(32)})
            return RedirectResponse("/console", status_code=303)
        if result.status is ConsoleSignInStatus.ENROL_TOTP and self.enrol_page is not None:
            assert result.account is not None
            return await self.enrol_page(request, result.account)
        if result.status is ConsoleSignInStatus.RATE_LIMITED:
            return self.message(
                request,
                None,
                429,
                "portal.error.rate_limited.title",
                "portal.error.rate_limited.body",
                retry_after=result.retry_after,
                minutes=max(1, (result.retry_after + 59) // 60),
            )
        need = result.status is ConsoleSignInStatus.NEED_TOTP
        error = (
            ("console.signin.code_needed" if not form.get("code") else "console.signin.bad_code")
            if need
            else ("console.signin.bad_credentials")
        )
        return self.render(request, "signin.html", None, 401, email=email[:320], error=error, need_code=need)

    async def signout(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        sid = request.session.get("sid")
        if isinstance(sid, str):
            await run_in_threadpool(self.svc.close_session, sid, account, self.client_ip(request))
        request.session.clear()
        return RedirectResponse("/console/signin", status_code=303)

    async def set_lang(self, request: Request) -> Response:
        return self.switch_lang(request, "/console", "/console", "/console")

    # --- pages ------------------------------------------------------------------------------------
    async def dashboard(self, request: Request, account: AdminAccount) -> Response:
        d = await run_in_threadpool(self.svc.dashboard, account, self.tenant_ref(request))
        lang = self.lang(request)
        findings = [
            {
                "severity": r.finding.severity.value,
                "code": r.finding.code.value,
                "subject": r.finding.subject,
                "title": title_of(r.finding.code.value, lang, dict(r.finding.facts)),
                "since": r.first_seen,
            }
            for r in d.findings
        ]
        top = [
            {"code": code, "count": n, "title": title_of(code, lang) if code else ""}
            for code, n in d.top_reasons
        ]
        from pomona.http.console_reports import chart_svg  # page 1's chart (http/console_reports.py)

        chart = await run_in_threadpool(self.p.console_reports.chart, account, self.tenant_ref(request))
        svg = chart_svg(chart, lang, translate(lang, "console.chart.title", days=len(chart.days)))
        return self.render(
            request,
            "dashboard.html",
            account,
            tenant=d.tenant,
            d=d,
            findings=findings,
            top=top,
            chart=chart,
            svg=svg,
            reason_title=lambda code: title_of(code, lang),
        )

    async def devices(self, request: Request, account: AdminAccount) -> Response:
        q = request.query_params
        sort: DeviceSort = next((s for s in SORTS if s == q.get("sort")), "name")
        prefix = _printable(q.get("q") or "").strip()[:64] or None
        query, kept = device_query(q)
        page = await run_in_threadpool(
            lambda: self.svc.devices(
                account,
                self.tenant_ref(request),
                sort=sort,
                after=decode_cursor(q.get("after", "")),
                prefix=prefix,
                query=query,
            )
        )
        tenant = await run_in_threadpool(self.svc.scope, account, self.tenant_ref(request))
        base = {"sort": sort, **({"q": prefix} if prefix else {}), **kept}
        next_cursor = encode_cursor(page.next)
        return self.render(
            request,
            "devices.html",
            account,
            tenant=tenant,
            page=page,
            sort=sort,
            sorts=SORTS,
            prefix=prefix or "",
            f=kept,
            platforms=PLATFORMS,
            ownerships=OWNERSHIPS,
            types=ENROLLMENT_TYPES,
            states=DEVICE_STATES,
            stale_days=STALE_DAYS,
            next_cursor=next_cursor,
            next_query=urlencode({**base, "after": next_cursor}),
        )

    async def device(self, request: Request, account: AdminAccount) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        older = decode_older(request.query_params.get("older", ""))
        detail = await run_in_threadpool(lambda: self.svc.device(account, ref, did, older=older))
        tenant = await run_in_threadpool(self.svc.scope, account, ref)
        notice = request.query_params.get("done")
        return self.render(
            request,
            "device.html",
            account,
            tenant=tenant,
            x=detail,
            timeline=timeline_rows(detail.timeline, self.lang(request)),
            older=encode_older(detail.older),
            paged=older is not None,
            notice=notice if notice in DONE else None,
            findings=[
                {
                    "severity": r.finding.severity.value,
                    "code": r.finding.code.value,
                    "title": title_of(r.finding.code.value, self.lang(request), dict(r.finding.facts)),
                    "since": r.first_seen,
                }
                for r in detail.findings
            ],
        )

    async def retire_page(self, request: Request, account: AdminAccount) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        tenant = await run_in_threadpool(self.svc.scope, account, ref, "retire")
        detail = await run_in_threadpool(lambda: self.svc.device(account, ref, did, timeline=False))
        return self.render(request, "retire.html", account, tenant=tenant, x=detail)

    async def retire(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        if form.get("confirm") != "yes":
            return RedirectResponse(f"/console/t/{ref}/devices/{did}/retire", status_code=303)
        await run_in_threadpool(self.svc.retire, account, ref, did, self.client_ip(request))
        return RedirectResponse(f"/console/t/{ref}/devices/{did}?done=retired", status_code=303)

    def done(self, ref: str, did: str, form: dict[str, str], done: str) -> Response:
        """Back to the device page with its notice, or to the troubleshoot page the action came from
        (``back``: only that page of this tenant)."""
        back = form.get("back", "")
        page = f"/console/t/{quote(ref, safe='')}/troubleshoot"
        if back == page or back.startswith(page + "?"):
            if len(back) < 3000 and all(" " < ch < "\x7f" for ch in back):
                kept = [(k, v) for k, v in parse_qsl(back.partition("?")[2]) if k != "done"]
                query = urlencode([*kept, ("done", done)])
                return RedirectResponse(f"{page}?{query}", status_code=303)
        return RedirectResponse(
            f"/console/t/{quote(ref, safe='')}/devices/{did}?done={done}", status_code=303
        )

    async def repush(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        await run_in_threadpool(self.svc.repush, account, ref, did, self.client_ip(request))
        return self.done(ref, did, form, "pushed")

    async def release(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        await run_in_threadpool(self.svc.release, account, ref, did, self.client_ip(request))
        return self.done(ref, did, form, "released")

    async def erase_page(self, request: Request, account: AdminAccount) -> Response:
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        tenant = await run_in_threadpool(self.svc.scope, account, ref)
        if not can(account, "erase"):  # the refusal is recorded by the POST, which is the change
            raise ForbiddenError(f"the {account.role} role may not erase", action="erase")
        detail = await run_in_threadpool(lambda: self.svc.device(account, ref, did, timeline=False))
        return self.render(request, "erase.html", account, tenant=tenant, x=detail, error=False)

    async def action(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        """Lock, erase (with the serial typed), restart, rename, block, unblock: CommandService.enqueue
        (pushes), audited; helpdesk is refused (403, audited)."""
        ref, did = self.tenant_ref(request), str(request.path_params["device"])
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            return await self.not_found(request)
        if action == "block" and form.get("confirm") != "yes":
            return RedirectResponse(f"/console/t/{quote(ref, safe='')}/devices/{did}", status_code=303)
        try:
            await run_in_threadpool(
                lambda: self.svc.device_action(
                    account,
                    ref,
                    did,
                    action,
                    self.client_ip(request),
                    name=form.get("name", "")[:1000],
                    message=form.get("message", "")[:2000],
                    typed_serial=form.get("serial", "")[:128],
                )
            )
        except InvalidInputError as exc:
            if action != "erase" or exc.context.get("field") != "serial":
                raise
            tenant = await run_in_threadpool(self.svc.scope, account, ref)
            detail = await run_in_threadpool(lambda: self.svc.device(account, ref, did, timeline=False))
            return self.render(request, "erase.html", account, 422, tenant=tenant, x=detail, error=True)
        return self.done(ref, did, form, action)

    async def troubleshoot(self, request: Request, account: AdminAccount) -> Response:
        ref = self.tenant_ref(request)
        tenant = await run_in_threadpool(self.svc.scope, account, ref, "diagnose")
        q = request.query_params
        upn = (q.get("upn") or "").strip()[:320]
        message = (q.get("message") or "").strip()[:2000]
        serial = (q.get("serial") or "").strip()[:64]
        lang = self.lang(request)
        result = overview = decision = None
        summary = ""
        if upn or message or serial:
            diagnosis = await run_in_threadpool(
                lambda: self.p.diagnose.diagnose(
                    tenant.id, upn=upn or None, serial=serial or None, message=message or None
                )
            )
            result = diagnosis_json(diagnosis, lang)
            summary = await run_in_threadpool(self.incident_summary, tenant.id, result, message, lang)
            if upn:
                overview = await run_in_threadpool(self.svc.user_overview, account, ref, upn)
            if overview is not None:
                decision = await run_in_threadpool(self.svc.dry_run, account, ref, upn, serial or None)
        return self.render(
            request,
            "troubleshoot.html",
            account,
            tenant=tenant,
            upn=upn,
            message=message,
            serial=serial,
            result=result,
            overview=overview,
            decision=decision,
            reason_title=(title_of(decision.reason.value, lang) if decision and decision.reason else ""),
            summary=summary,
            notice=q.get("done") if q.get("done") in DONE else None,
        )

    def incident_summary(self, tenant_id: str, result: dict[str, Any], message: str, lang: str) -> str:
        """What `pomona incident` prints for the diagnosis's proven and likely causes (or its answer) over
        the last INCIDENT_DAYS days: the checklist to paste into a ticket. Empty when nothing is known."""
        codes = [str(f["code"]) for f in result["findings"] if f["verdict"] in ("proven", "likely")]
        top = str(result["answer"]["code"])
        if not codes and top != "UNKNOWN":
            codes = [top]
        if not codes:
            return ""
        now = self.p.clock.now()
        inc = self.p.reports.incident(
            tenant_id,
            codes=codes,
            since=now - timedelta(days=INCIDENT_DAYS),
            until=now,
            message=message or None,
        )
        return self.p.reports.incident_markdown(inc, lang)

    async def users(self, request: Request, account: AdminAccount) -> Response:
        q = request.query_params
        prefix = _printable(q.get("q") or "").strip().lower()[:320] or None
        after = _printable(q.get("after") or "")[:320] or None
        ref = self.tenant_ref(request)
        page = await run_in_threadpool(lambda: self.svc.users(account, ref, after=after, prefix=prefix))
        seats = await run_in_threadpool(self.svc.seats, account, ref)
        tenant = await run_in_threadpool(self.svc.scope, account, ref)
        done = q.get("done")
        return self.render(
            request,
            "users.html",
            account,
            tenant=tenant,
            page=page,
            seats=seats,
            prefix=prefix or "",
            notice=done if done in ("licence.assign", "licence.remove") else None,
            notice_upn=(q.get("upn") or "")[:320],
        )

    async def licence(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref = self.tenant_ref(request)
        upn = form.get("upn", "").strip()[:320]
        assign = form.get("assign") == "yes"
        done = await run_in_threadpool(
            self.svc.set_licence, account, ref, upn, assign, self.client_ip(request)
        )
        query = urlencode(
            {
                "q": form.get("q", "")[:320],
                "done": "licence.assign" if assign else "licence.remove",
                "upn": str(done["upn"]),
            }
        )
        return RedirectResponse(f"/console/t/{quote(ref, safe='')}/users?{query}", status_code=303)

    async def audit(self, request: Request, account: AdminAccount) -> Response:
        q = request.query_params
        before = q.get("before", "")
        before_id = int(before) if before.isdigit() and len(before) < 19 else None
        f = {k: _printable(q.get(k) or "").strip()[:320] for k in ("who", "action", "from", "since", "until")}
        day = {k: _day(f[k]) for k in ("since", "until")}
        tenant, entries = await run_in_threadpool(
            lambda: self.svc.audit_page(
                account,
                self.tenant_ref(request),
                before_id=before_id,
                limit=51,
                actor=f["who"].lower() or None,
                action=f["action"][:64] or None,
                source=f["from"][:64] or None,
                since=day["since"],
                until=None if day["until"] is None else day["until"] + timedelta(days=1),
            )
        )
        older = entries[49].id if len(entries) > 50 else None
        kept = urlencode({k: v for k, v in f.items() if v})
        return self.render(
            request,
            "audit.html",
            account,
            tenant=tenant,
            entries=entries[:50],
            older=older,
            filters=f,
            filter_query=kept,
        )

    async def not_found(self, request: Request) -> Response:
        account = await self.account(request)
        return self.message(
            request, account, 404, "console.error.not_found.title", "console.error.not_found.body"
        )


def create_console(p: Services) -> ASGIApp:
    """The console's ASGI app; RootApp routes every path under /console to it."""
    from pomona.http.console_admin import admin_routes  # as console_apple: builds on Console
    from pomona.http.console_apple import apple_routes  # it builds on Console (imports this module)
    from pomona.http.console_auth import auth_routes
    from pomona.http.console_policy import policy_routes  # as console_apple: builds on Console
    from pomona.http.console_reports import report_routes

    c = Console(p)
    s, post = c.signed, c.posted
    routes = [
        Mount("/console/_static", app=StaticFiles(directory=str(_HERE / "static")), name="static"),
        Route("/console", s(c.home), methods=["GET"]),
        Route("/console/", s(c.home), methods=["GET"]),
        Route("/console/signin", c.signin_page, methods=["GET"]),
        Route("/console/signin", c.signin, methods=["POST"]),
        Route("/console/signout", post(c.signout), methods=["POST"]),
        Route("/console/lang/{lang}", c.set_lang, methods=["GET"]),
        Route("/console/t/{tenant}", s(c.dashboard), methods=["GET"]),
        Route("/console/t/{tenant}/troubleshoot", s(c.troubleshoot), methods=["GET"]),
        Route("/console/t/{tenant}/devices", s(c.devices), methods=["GET"]),
        Route("/console/t/{tenant}/devices/{device}", s(c.device), methods=["GET"]),
        Route("/console/t/{tenant}/devices/{device}/retire", s(c.retire_page), methods=["GET"]),
        Route("/console/t/{tenant}/devices/{device}/retire", post(c.retire), methods=["POST"]),
        Route("/console/t/{tenant}/devices/{device}/repush", post(c.repush), methods=["POST"]),
        Route("/console/t/{tenant}/devices/{device}/release", post(c.release), methods=["POST"]),
        Route("/console/t/{tenant}/devices/{device}/erase", s(c.erase_page), methods=["GET"]),
        Route("/console/t/{tenant}/devices/{device}/{action}", post(c.action), methods=["POST"]),
        Route("/console/t/{tenant}/users", s(c.users), methods=["GET"]),
        Route("/console/t/{tenant}/users/licence", post(c.licence), methods=["POST"]),
        Route("/console/t/{tenant}/audit", s(c.audit), methods=["GET"]),
        *policy_routes(c),  # page 5, enrollment restrictions: http/console_policy.py
        *apple_routes(c),  # page 7, Apple settings: http/console_apple.py
        *auth_routes(c),  # TOTP enrolment, the security page, OpenID Connect: http/console_auth.py
        *admin_routes(c),  # pages 6 and 10, corporate identifiers and administration: http/console_admin.py
        *report_routes(c),  # pages 8 and 9, domains and reports: http/console_reports.py
        Route("/console/{rest:path}", c.not_found),
    ]
    # The cookie's key: derived from the portal's stored key, so neither cookie signs the other.
    key = hmac.new(p.portal.session_secret().encode(), b"pomona console session", hashlib.sha256).hexdigest()
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestId),
            Middleware(PortalHeaders, static_prefix="/console/_static/"),
            Middleware(
                SessionMiddleware,
                secret_key=key,
                session_cookie="pomona_console",
                max_age=int(SESSION_LIFETIME.total_seconds()),
                path="/console",
                same_site="lax",
                https_only=True,
            ),
        ],
    )
    app.state.console = c
    return app
