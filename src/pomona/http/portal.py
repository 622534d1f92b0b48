"""The self-service enrollment portal (our Company Portal): server-rendered pages, htmx, en and zh-CN.

    GET   /portal/{tenant}                   -> the device list when signed in, else the sign-in page
    GET   /portal/{tenant}/signin            sign-in page (local; "organisation account" when OIDC is set)
    POST  /portal/{tenant}/signin            UPN + password
    GET   /portal/{tenant}/oidc/start        -> the tenant's identity provider (code flow, PKCE, nonce)
    GET   /portal/{tenant}/oidc/callback     back from it
    GET   /portal/{tenant}/mfa               TOTP: enrol a secret the first time, then verify
    POST  /portal/{tenant}/mfa
    GET   /portal/{tenant}/devices           the user's own enrolled devices, "Enroll this device"
    POST  /portal/{tenant}/devices/{udid}/retire   retire one of them (htmx: answers the list)
    POST  /portal/{tenant}/enroll            the policy at stage portal -> /install or /refused
    GET   /portal/{tenant}/refused           what blocks the user, its code, and what the helpdesk needs
    GET   /portal/{tenant}/install           how to install the profile
    GET   /portal/{tenant}/profile           the signed profile (application/x-apple-aspen-config)
    POST  /portal/{tenant}/signout
    GET   /portal/{tenant}/lang/{lang}       the language switch (a ``lang`` cookie)
    GET   /portal/_static/{file}             CSS and htmx (no CDN)

Handlers stay thin: use cases live in :mod:`pomona.services.portal`. Database and argon2 work runs in
the thread pool; pages render on the event loop. Every POST carries the session's CSRF token (a form
field, or the ``X-CSRF-Token`` header htmx sends). The session is a signed cookie (Secure, HttpOnly,
SameSite=Lax, path /portal) whose key is generated once and kept (sealed) in the database; being signed
in is a server-side session the cookie names by a random id, ended by sign-out, a password change, or
the user's being disabled or deleted.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pomona.domain.errors import NotFoundError, describe
from pomona.domain.models import Tenant, User
from pomona.domain.reasons import ReasonCode
from pomona.http.middleware import RequestId, log_internal
from pomona.i18n import catalogue
from pomona.presenters import display_name
from pomona.services.container import Services
from pomona.services.context import request_id_var
from pomona.services.enrollment import PROFILE_CONTENT_TYPE
from pomona.services.portal import (
    SESSION_LIFETIME,
    OidcStart,
    PortalService,
    SignIn,
    SignInStatus,
    new_totp_secret,
    totp_uri,
)

_HERE = Path(__file__).parent
log = logging.getLogger("pomona.http")
LANGS = ("en", "zh-CN")
SESSION_MAX_AGE = int(SESSION_LIFETIME.total_seconds())
PLATFORM_NAMES = {"ios": "iOS", "ipados": "iPadOS"}  # as people write them

Handler = Callable[[Request], Awaitable[Response]]


# --- language ---------------------------------------------------------------------------------------
MAX_ACCEPT_LANGUAGE = 1024  # browsers send a few dozen characters; past this nothing is read


def pick_lang(cookie: str | None, accept_language: str | None) -> str:
    """The ``lang`` cookie wins; else the best Accept-Language entry we have (any zh -> zh-CN), among
    those in its first ``MAX_ACCEPT_LANGUAGE`` characters."""
    if cookie in LANGS:
        return cookie
    best: tuple[float, int, str] | None = None
    for i, part in enumerate((accept_language or "")[:MAX_ACCEPT_LANGUAGE].split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        tag = tag.strip().lower()
        lang = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang and q > 0 and (best is None or (q, -i) > (best[0], best[1])):
            best = (q, -i, lang)
    return best[2] if best else "en"


class _Facts(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"


def translate(lang: str, key: str, **values: object) -> str:
    text = catalogue(lang).get(key) or catalogue("en").get(key) or key
    return text.format_map(_Facts(values)) if values else text


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, str) and len(value) >= 16 and value[4] == "-":
        try:
            return _when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return "" if value is None else str(value)


def templates() -> Environment:
    """The portal's templates (the enrollment link's refusal page too: http/link_pages.py), autoescaped."""
    env = Environment(
        loader=FileSystemLoader(str(_HERE / "templates" / "portal")),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


# --- middleware: timing, security headers (the request id: http/middleware.py RequestId) -----------
class PortalHeaders:
    """Server-Timing and the security headers of the portal's pages, and of the console's (whose static
    files are under another prefix)."""

    def __init__(self, app: ASGIApp, static_prefix: str = "/portal/_static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", []))
                headers += [
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                        b"frame-ancestors 'none'; form-action 'self' http: https:; base-uri 'none'",
                    ),
                ]
                if not scope["path"].startswith(self.static_prefix):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


# --- the app ----------------------------------------------------------------------------------------
class FormPages:
    """What the portal's and the console's pages share: the visitor's language (cookie, then
    Accept-Language, and the switch), the session's CSRF token for every form, and reading a form."""

    secure_cookies: bool

    def lang(self, request: Request) -> str:
        return pick_lang(request.cookies.get("lang"), request.headers.get("accept-language"))

    def csrf(self, request: Request) -> str:
        tok = request.session.get("csrf")
        if not isinstance(tok, str):
            tok = request.session["csrf"] = secrets.token_urlsafe(32)
        return tok

    def csrf_ok(self, request: Request, form: dict[str, str]) -> bool:
        expected = request.session.get("csrf")
        got = form.get("csrf") or request.headers.get("x-csrf-token") or ""
        return isinstance(expected, str) and bool(got) and hmac.compare_digest(expected, got)

    async def form(self, request: Request) -> dict[str, str]:
        data = await request.form(max_files=0, max_fields=20)
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def client_ip(self, request: Request) -> str:
        return request.client.host if request.client else "?"

    def switch_lang(self, request: Request, inside: str, home: str, cookie_path: str) -> Response:
        """The language switch: the ``lang`` cookie (for ``cookie_path``) and back to ``next`` when it is a
        local path starting with ``inside``, else to ``home`` (never to another site)."""
        lang = str(request.path_params.get("lang"))
        nxt = request.query_params.get("next", "")
        if not nxt.startswith(inside) or "//" in nxt or "\\" in nxt:
            nxt = home
        resp = RedirectResponse(nxt, status_code=303)
        if lang in LANGS:
            resp.set_cookie(
                "lang",
                lang,
                max_age=365 * 86400,
                path=cookie_path,
                secure=self.secure_cookies,
                httponly=True,
                samesite="lax",
            )
        return resp


class Portal(FormPages):
    def __init__(self, p: Services) -> None:
        self.p = p
        self.svc: PortalService = p.portal
        self.env = templates()
        self.secure_cookies = True

    def render(
        self, request: Request, template: str, tenant: Tenant | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        lang = self.lang(request)

        def _(key: str, **values: object) -> str:
            return translate(lang, key, **values)

        base = f"/portal/{tenant.name}" if tenant else "/portal"
        html = self.env.get_template(template).render(
            _=_,
            lang=lang,
            other_lang="en" if lang == "zh-CN" else "zh-CN",
            tenant=tenant,
            base=base,
            here=request.url.path,
            csrf=self.csrf(request),
            request_id=request.scope.get("state", {}).get("request_id", ""),
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def message(
        self, request: Request, tenant: Tenant | None, status: int, title: str, body: str, **values: object
    ) -> HTMLResponse:
        resp = self.render(
            request, "message.html", tenant, status, title_key=title, body_key=body, values=values
        )
        if status == 429 and values.get("retry_after"):
            resp.headers["retry-after"] = str(values["retry_after"])
        return resp

    async def tenant(self, request: Request) -> Tenant | None:
        name = str(request.path_params.get("tenant", ""))
        try:
            return await run_in_threadpool(self.svc.tenant, name)
        except NotFoundError:
            return None

    async def signed_in(self, request: Request, tenant: Tenant) -> str | None:
        """The signed-in user's id, when the cookie names a server-side session of this tenant that is
        neither signed out, expired nor ended by a password change (services/portal.py)."""
        s = request.session
        sid = s.get("sid")
        if s.get("t") != tenant.id or not isinstance(sid, str):
            return None
        return await run_in_threadpool(self.svc.session_user, tenant, sid)

    def start_session(self, request: Request, tenant: Tenant, **values: object) -> None:
        """A fresh session (no fixation): new CSRF token, bound to the tenant."""
        request.session.clear()
        request.session.update({"t": tenant.id, "csrf": secrets.token_urlsafe(32), **values})

    def refusal_redirect(
        self,
        request: Request,
        tenant: Tenant,
        reason: ReasonCode | str,
        facts: dict[str, object],
        at: datetime | None = None,
    ) -> Response:
        request.session["refusal"] = {
            "t": tenant.id,
            "reason": str(reason),
            "facts": {k: (v if isinstance(v, int | float | bool) else str(v)) for k, v in facts.items()},
            "rid": request_id_var.get() or "",
            "at": (at or self.p.clock.now()).isoformat(),
        }
        return RedirectResponse(f"/portal/{tenant.name}/refused", status_code=303)

    def error_response(self, request: Request, tenant: Tenant | None, exc: BaseException) -> Response:
        """The portal's answer to an error (built on ``domain.errors.describe``): a refusal is the refusal
        page with its reason; a fault (ours, or a service we call, or a database that did not answer
        while the tenant was looked up) a message page with the request id."""
        e = describe(exc)
        if e.internal:
            log_internal(log, exc, request_id_var.get())
        if e.status >= 500 or tenant is None:
            return self.message(
                request, tenant, e.status, "portal.error.internal.title", "portal.error.internal.body"
            )
        return self.refusal_redirect(request, tenant, e.reason, {"upn": request.session.get("upn", "")})

    async def after_sign_in(self, request: Request, tenant: Tenant, result: SignIn) -> Response:
        if result.status is SignInStatus.SIGNED_IN:
            assert result.user is not None
            sid = await run_in_threadpool(self.svc.open_session, tenant, result.user.id)
            self.start_session(request, tenant, sid=sid, upn=result.user.upn)
            return RedirectResponse(f"/portal/{tenant.name}/devices", status_code=303)
        if result.status in (SignInStatus.NEED_TOTP, SignInStatus.ENROL_TOTP):
            assert result.user is not None
            enrol = new_totp_secret() if result.status is SignInStatus.ENROL_TOTP else None
            self.start_session(request, tenant, pending={"uid": result.user.id, "enrol": enrol})
            return RedirectResponse(f"/portal/{tenant.name}/mfa", status_code=303)
        if result.status is SignInStatus.REFUSED:
            assert result.reason is not None
            self.start_session(request, tenant)
            return self.refusal_redirect(
                request, tenant, result.reason, {"upn": result.upn, "tenant": tenant.name}
            )
        if result.status is SignInStatus.RATE_LIMITED:
            return self.message(
                request,
                tenant,
                429,
                "portal.error.rate_limited.title",
                "portal.error.rate_limited.body",
                retry_after=result.retry_after,
                minutes=max(1, (result.retry_after + 59) // 60),
            )
        return self.render(
            request,
            "signin.html",
            tenant,
            401,
            error="portal.signin.bad_credentials"
            if result.method == "password"
            else "portal.signin.sso_failed",
            upn=result.upn,
            sso=self.svc.oidc_config(tenant) is not None,
        )

    # --- handlers ---------------------------------------------------------------------------------
    async def home(self, request: Request, tenant: Tenant) -> Response:
        where = "devices" if await self.signed_in(request, tenant) else "signin"
        return RedirectResponse(f"/portal/{tenant.name}/{where}", status_code=303)

    async def signin_page(self, request: Request, tenant: Tenant) -> Response:
        if await self.signed_in(request, tenant):
            return RedirectResponse(f"/portal/{tenant.name}/devices", status_code=303)
        sso = await run_in_threadpool(self.svc.oidc_config, tenant)
        return self.render(request, "signin.html", tenant, sso=sso is not None, upn="", error=None)

    async def signin(self, request: Request, tenant: Tenant) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, tenant)
        result = await run_in_threadpool(
            self.svc.sign_in_password,
            tenant,
            form.get("upn", ""),
            form.get("password", ""),
            self.client_ip(request),
        )
        return await self.after_sign_in(request, tenant, result)

    def redirect_uri(self, request: Request, tenant: Tenant) -> str:
        base = self.p.public_url
        return f"{base}/portal/{tenant.name}/oidc/callback"

    async def oidc_start(self, request: Request, tenant: Tenant) -> Response:
        try:
            start = await run_in_threadpool(self.svc.oidc_begin, tenant, self.redirect_uri(request, tenant))
        except NotFoundError:
            return self.message(request, tenant, 404, "portal.error.sso.title", "portal.error.sso.off")
        except Exception:  # noqa: BLE001 - the identity provider is down or answers nonsense
            return self.message(request, tenant, 502, "portal.error.sso.title", "portal.error.sso.down")
        request.session["oidc"] = {
            "t": tenant.id,
            "state": start.state,
            "nonce": start.nonce,
            "verifier": start.verifier,
        }
        return RedirectResponse(start.url, status_code=303)

    async def oidc_callback(self, request: Request, tenant: Tenant) -> Response:
        pending = request.session.pop("oidc", None)
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if (
            not isinstance(pending, dict)
            or pending.get("t") != tenant.id
            or not code
            or not hmac.compare_digest(str(pending.get("state", "")), state)
        ):
            return self.csrf_refused(request, tenant)
        start = OidcStart("", str(pending["state"]), str(pending["nonce"]), str(pending["verifier"]))
        try:
            result = await run_in_threadpool(
                self.svc.oidc_finish,
                tenant,
                self.redirect_uri(request, tenant),
                code,
                start,
                self.client_ip(request),
            )
        except Exception:  # noqa: BLE001
            return self.message(request, tenant, 502, "portal.error.sso.title", "portal.error.sso.down")
        return await self.after_sign_in(request, tenant, result)

    def _pending(self, request: Request, tenant: Tenant) -> dict[str, Any] | None:
        p = request.session.get("pending")
        if request.session.get("t") == tenant.id and isinstance(p, dict) and isinstance(p.get("uid"), str):
            return p
        return None

    async def mfa_page(self, request: Request, tenant: Tenant, error: str | None = None) -> Response:
        pending = self._pending(request, tenant)
        if pending is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        enrol = pending.get("enrol")
        user = await run_in_threadpool(self.svc.user, tenant, pending["uid"])
        upn = user.upn if user else ""
        return self.render(
            request,
            "mfa.html",
            tenant,
            401 if error else 200,
            enrol=enrol,
            uri=totp_uri(enrol, upn, f"Pomona {tenant.name}") if enrol else None,
            error=error,
        )

    async def mfa(self, request: Request, tenant: Tenant) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, tenant)
        pending = self._pending(request, tenant)
        if pending is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        result = await run_in_threadpool(
            self.svc.verify_totp,
            tenant,
            pending["uid"],
            form.get("code", ""),
            self.client_ip(request),
            enrol_secret=pending.get("enrol"),
        )
        if result.status in (SignInStatus.NEED_TOTP, SignInStatus.ENROL_TOTP):
            return await self.mfa_page(request, tenant, error="portal.mfa.wrong_code")
        return await self.after_sign_in(request, tenant, result)

    async def _user(self, request: Request, tenant: Tenant) -> tuple[str | None, User | None]:
        uid = await self.signed_in(request, tenant)
        if uid is None:
            return None, None
        return uid, await run_in_threadpool(self.svc.user, tenant, uid)

    async def _identity_refusal(self, request: Request, tenant: Tenant, user: User | None) -> Response | None:
        """A signed-in user deleted or disabled since: refuse with the reason, and leave an event."""
        if user is not None and user.enabled:
            return None
        reason = ReasonCode.USER_NOT_FOUND if user is None else ReasonCode.USER_DISABLED
        upn = str(request.session.get("upn", ""))
        await run_in_threadpool(
            lambda: self.svc.refuse(tenant, reason, user=user, upn=upn or None, detail={"action": "devices"})
        )
        return self.refusal_redirect(request, tenant, reason, {"upn": upn, "tenant": tenant.name})

    async def devices(self, request: Request, tenant: Tenant) -> Response:
        uid, user = await self._user(request, tenant)
        if uid is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        refused = await self._identity_refusal(request, tenant, user)
        if refused is not None:
            return refused
        assert user is not None
        rows = await run_in_threadpool(self.svc.devices, tenant, user)
        return self.render(request, "devices.html", tenant, user=user, devices=rows, notice=None)

    async def retire(self, request: Request, tenant: Tenant) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, tenant)
        uid, user = await self._user(request, tenant)
        if uid is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        refused = await self._identity_refusal(request, tenant, user)
        if refused is not None:
            return refused
        assert user is not None
        udid = str(request.path_params["udid"])
        status, notice = 200, "portal.devices.retired"
        try:
            await run_in_threadpool(self.svc.retire, tenant, user, udid)
        except NotFoundError:
            status, notice = 404, "portal.devices.not_yours"
        if request.headers.get("hx-request") == "true":
            rows = await run_in_threadpool(self.svc.devices, tenant, user)
            return self.render(
                request, "_devices.html", tenant, status, user=user, devices=rows, notice=notice
            )
        if status != 200:
            return self.message(
                request, tenant, 404, "portal.devices.not_yours", "portal.devices.not_yours_body"
            )
        return RedirectResponse(f"/portal/{tenant.name}/devices", status_code=303)

    async def enroll(self, request: Request, tenant: Tenant) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, tenant)
        uid = await self.signed_in(request, tenant)
        if uid is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        check = await run_in_threadpool(self.svc.check_enroll, tenant, uid, request.headers.get("user-agent"))
        if not check.decision.allowed:
            assert check.decision.reason is not None
            request.session.pop("enroll", None)
            return self.refusal_redirect(request, tenant, check.decision.reason, check.facts, check.at)
        request.session["enroll"] = check.secret
        request.session.pop("refusal", None)
        return RedirectResponse(f"/portal/{tenant.name}/install", status_code=303)

    async def refused(self, request: Request, tenant: Tenant) -> Response:
        r = request.session.get("refusal")
        if not isinstance(r, dict) or r.get("t") != tenant.id:
            return RedirectResponse(f"/portal/{tenant.name}", status_code=303)
        facts = dict(r.get("facts") or {})
        if "platform" in facts:
            facts["platform"] = PLATFORM_NAMES.get(str(facts["platform"]), facts["platform"])
        for k in ("expired_at", "since"):
            if k in facts:
                facts[k] = _when(facts[k])
        reason = str(r.get("reason"))
        lang = self.lang(request)
        if isinstance(facts.get("restriction"), str):  # a built-in restriction in the reader's language
            facts["restriction"] = display_name(str(facts["restriction"]), lang)
        key = f"portal.reason.{reason}"
        if f"{key}.title" not in catalogue("en"):
            key = "portal.reason.generic"
        uid, user = await self._user(request, tenant)
        rows = []
        if user is not None and user.enabled and reason == ReasonCode.DEVICE_LIMIT_REACHED:
            rows = await run_in_threadpool(self.svc.devices, tenant, user)
        return self.render(
            request,
            "refused.html",
            tenant,
            403,
            reason=reason,
            title=translate(lang, f"{key}.title", **facts),
            explain=translate(lang, f"{key}.explain", **facts),
            upn=facts.get("upn") or request.session.get("upn") or "",
            at=_when(r.get("at")),
            rid=r.get("rid") or "",
            user=user if uid else None,
            devices=rows,
            can_retry=uid is not None and user is not None,
        )

    async def install(self, request: Request, tenant: Tenant) -> Response:
        uid = await self.signed_in(request, tenant)
        if uid is None:
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        if not isinstance(request.session.get("enroll"), str):
            return RedirectResponse(f"/portal/{tenant.name}/devices", status_code=303)
        return self.render(request, "install.html", tenant)

    async def profile(self, request: Request, tenant: Tenant) -> Response:
        uid, user = await self._user(request, tenant)
        secret = request.session.get("enroll")
        if uid is None or not isinstance(secret, str):
            return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)
        ua = request.headers.get("user-agent")
        body = await run_in_threadpool(self.svc.profile, tenant, user, secret, ua)
        return Response(
            body,
            media_type=PROFILE_CONTENT_TYPE,
            headers={"content-disposition": f'attachment; filename="{tenant.name}-enrollment.mobileconfig"'},
        )

    async def signout(self, request: Request, tenant: Tenant) -> Response:
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.csrf_refused(request, tenant)
        sid = request.session.get("sid")
        if isinstance(sid, str):
            await run_in_threadpool(self.svc.close_session, sid)  # the cookie, replayed, is signed out
        request.session.clear()
        return RedirectResponse(f"/portal/{tenant.name}/signin", status_code=303)

    async def set_lang(self, request: Request, tenant: Tenant) -> Response:
        return self.switch_lang(request, f"/portal/{tenant.name}/", f"/portal/{tenant.name}", "/portal")

    def csrf_refused(self, request: Request, tenant: Tenant) -> Response:
        return self.message(request, tenant, 403, "portal.error.csrf.title", "portal.error.csrf.body")

    # --- routing ----------------------------------------------------------------------------------
    def route(self, handler: Callable[[Request, Tenant], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                tenant = await self.tenant(request)
            except Exception as exc:  # noqa: BLE001 - the database did not answer: its page, not a 500
                return self.error_response(request, None, exc)
            if tenant is None:
                return self.message(
                    request, None, 404, "portal.error.no_tenant.title", "portal.error.no_tenant.body"
                )
            try:
                return await handler(request, tenant)
            except HTTPException:
                raise  # Starlette's own (a form it cannot read): its status and text
            except Exception as exc:  # noqa: BLE001 - every error gets the portal answer its class says
                return self.error_response(request, tenant, exc)

        return endpoint

    async def not_found(self, request: Request) -> Response:
        return self.message(request, None, 404, "portal.error.no_tenant.title", "portal.error.no_tenant.body")


def create_portal(p: Services) -> ASGIApp:
    """The portal's ASGI app; RootApp routes every path under /portal to it."""
    portal = Portal(p)
    r = portal.route
    routes = [
        Mount("/portal/_static", app=StaticFiles(directory=str(_HERE / "static")), name="static"),
        Route("/portal/{tenant}", r(portal.home)),
        Route("/portal/{tenant}/signin", r(portal.signin_page), methods=["GET"]),
        Route("/portal/{tenant}/signin", r(portal.signin), methods=["POST"]),
        Route("/portal/{tenant}/oidc/start", r(portal.oidc_start), methods=["GET"]),
        Route("/portal/{tenant}/oidc/callback", r(portal.oidc_callback), methods=["GET"]),
        Route("/portal/{tenant}/mfa", r(portal.mfa_page), methods=["GET"]),
        Route("/portal/{tenant}/mfa", r(portal.mfa), methods=["POST"]),
        Route("/portal/{tenant}/devices", r(portal.devices), methods=["GET"]),
        Route("/portal/{tenant}/devices/{udid}/retire", r(portal.retire), methods=["POST"]),
        Route("/portal/{tenant}/enroll", r(portal.enroll), methods=["POST"]),
        Route("/portal/{tenant}/refused", r(portal.refused), methods=["GET"]),
        Route("/portal/{tenant}/install", r(portal.install), methods=["GET"]),
        Route("/portal/{tenant}/profile", r(portal.profile), methods=["GET"]),
        Route("/portal/{tenant}/signout", r(portal.signout), methods=["POST"]),
        Route("/portal/{tenant}/lang/{lang}", r(portal.set_lang), methods=["GET"]),
        Route("/portal", portal.not_found),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestId),
            Middleware(PortalHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=p.portal.session_secret(),
                session_cookie="pomona_portal",
                max_age=SESSION_MAX_AGE,
                path="/portal",
                same_site="lax",
                https_only=True,
            ),
        ],
    )
    app.state.portal = portal
    return app
