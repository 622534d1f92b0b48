"""The modern-authentication web view of ADE (an ADE profile's ``configuration_web_url``), en and zh-CN.

    GET   /ade/{tenant_id}/web                the device's web view: its MachineInfo in the
                                              ``x-apple-aspen-deviceinfo`` header -> the sign-in page
    POST  /ade/{tenant_id}/web                UPN + password (the portal's local sign-in)
    GET   /ade/{tenant_id}/web/mfa            TOTP: enrol a secret the first time, then verify
    POST  /ade/{tenant_id}/web/mfa
    GET   /ade/{tenant_id}/web/lang/{lang}    the language switch

When the user is signed in (and through MFA when they must use it) the answer is the enrollment profile
(``application/x-apple-aspen-config``, bound to the user and the serial): Setup Assistant installs it.
The MachineInfo is verified once, on the first request (services/ade.py); what it proved (tenant, serial,
UDID, product, OS, the ADE profile) is kept in the signed session cookie (path /ade, HttpOnly, Secure) for
``WEB_STATE_LIFETIME``, and never taken from a form. Sign-in, TOTP, the rate limits and their events are
the portal's (services/portal.py); CSRF and the language are FormPages' (http/portal.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pomona.domain.errors import describe
from pomona.http.middleware import RequestId, log_internal
from pomona.http.portal import FormPages, PortalHeaders, translate
from pomona.protocol.errors import ProtocolError
from pomona.protocol.machineinfo import decode_deviceinfo_header
from pomona.services.ade import WEB_STATE_LIFETIME, AdeAnswerKind, AdeDevice, AdeEnrollmentService
from pomona.services.container import Services
from pomona.services.context import bind_caller, request_id_var, reset_caller
from pomona.services.enrollment import PROFILE_CONTENT_TYPE
from pomona.services.portal import PortalService, SignIn, SignInStatus, new_totp_secret, totp_uri

log = logging.getLogger("pomona.http")
_TEMPLATES = Path(__file__).parent / "templates"
DEVICEINFO_HEADER = "x-apple-aspen-deviceinfo"
MAX_DEVICEINFO_HEADER = 96 * 1024  # base64 of a MachineInfo of at most 64 KiB


class AdeWeb(FormPages):
    def __init__(self, p: Services) -> None:
        self.p = p
        self.svc: AdeEnrollmentService = p.ade
        self.portal: PortalService = p.portal
        self.secure_cookies = True
        env = Environment(
            loader=ChoiceLoader(
                [FileSystemLoader(str(_TEMPLATES / "ade")), FileSystemLoader(str(_TEMPLATES / "portal"))]
            ),
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env = env

    def render(
        self, request: Request, template: str, device: AdeDevice | None, status: int = 200, **ctx: Any
    ) -> HTMLResponse:
        lang = self.lang(request)

        def _(key: str, **values: object) -> str:
            return translate(lang, key, **values)

        tid = str(request.path_params.get("tenant_id", ""))
        html = self.env.get_template(template).render(
            _=_,
            lang=lang,
            other_lang="en" if lang == "zh-CN" else "zh-CN",
            tenant=None if device is None else device.tenant,
            device=device,
            base=f"/ade/{tid}/web",
            here=request.url.path,
            csrf=self.csrf(request),
            request_id=request_id_var.get() or "",
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    def refused(self, request: Request, exc: BaseException, device: AdeDevice | None = None) -> Response:
        """A refusal page with its code (the event was left by the service); a fault of ours: 500."""
        e = describe(exc)
        if e.internal:
            log_internal(log, exc, request_id_var.get())
        return self.render(request, "ade_refused.html", device, e.status, code=e.reason.value)

    def device(self, request: Request) -> AdeDevice | None:
        tid = str(request.path_params["tenant_id"])
        return self.svc.web_device(request.session.get("ade"), tid, self.p.clock.now().timestamp())

    async def _call(self, request: Request, fn: Any, *args: Any, **kw: Any) -> Any:
        """A service call in the thread pool, with the caller's address (unauthenticated refusals are
        rate-limited per address, services/throttle.py)."""
        address = self.client_ip(request)

        def run() -> Any:
            token = bind_caller(address)
            try:
                return fn(*args, **kw)
            finally:
                reset_caller(token)

        return await run_in_threadpool(run)

    # --- handlers ---------------------------------------------------------------------------------
    async def start(self, request: Request) -> Response:
        tid = str(request.path_params["tenant_id"])
        header = request.headers.get(DEVICEINFO_HEADER)
        if header is None or len(header) > MAX_DEVICEINFO_HEADER:
            device = self.device(request)
            if device is None:
                return self.render(request, "ade_refused.html", None, 400, code="MACHINEINFO_MALFORMED")
            return self.signin_page(request, device)
        try:
            try:
                body = decode_deviceinfo_header(header)
            except ProtocolError:
                body = b""  # refused as malformed, with its event
            device = await self._call(request, self.svc.web_start, tid, body)
        except Exception as exc:  # noqa: BLE001 - every refusal gets its page
            return self.refused(request, exc)
        request.session.clear()
        request.session["ade"] = device.to_state(self.p.clock.now().timestamp())
        return self.signin_page(request, device)

    def signin_page(self, request: Request, device: AdeDevice, status: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("upn", "")
        ctx.setdefault("error", None)
        return self.render(request, "ade_signin.html", device, status, **ctx)

    def expired(self, request: Request) -> Response:
        return self.render(request, "ade_refused.html", None, 401, code="expired")

    async def signin(self, request: Request) -> Response:
        device = self.device(request)
        if device is None:
            return self.expired(request)
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.render(request, "ade_refused.html", device, 403, code="csrf")
        result: SignIn = await self._call(
            request,
            self.portal.sign_in_password,
            device.tenant,
            form.get("upn", ""),
            form.get("password", ""),
            self.client_ip(request),
        )
        return await self.after_sign_in(request, device, result)

    async def after_sign_in(self, request: Request, device: AdeDevice, result: SignIn) -> Response:
        status = result.status
        if status in (SignInStatus.NEED_TOTP, SignInStatus.ENROL_TOTP):
            assert result.user is not None
            enrol = new_totp_secret() if status is SignInStatus.ENROL_TOTP else None
            request.session["pending"] = {"uid": result.user.id, "enrol": enrol}
            return RedirectResponse(f"/ade/{device.tenant.id}/web/mfa", status_code=303)
        if status is SignInStatus.BAD_CREDENTIALS:
            return self.signin_page(
                request, device, 401, upn=result.upn, error="portal.signin.bad_credentials"
            )
        try:
            answer = await self._call(request, self.svc.after_sign_in, device, result, False, legacy=False)
        except Exception as exc:  # noqa: BLE001 - every refusal gets its page
            return self.refused(request, exc, device)
        if answer.kind is AdeAnswerKind.TRY_LATER:
            return self.render(request, "ade_refused.html", device, 429, code="rate_limited")
        if answer.kind is not AdeAnswerKind.PROFILE:
            return self.render(request, "ade_refused.html", device, 403, code="OS_VERSION_TOO_LOW")
        request.session.clear()  # the profile is served once per sign-in
        return Response(answer.body, media_type=PROFILE_CONTENT_TYPE)

    def _pending(self, request: Request) -> dict[str, Any] | None:
        p = request.session.get("pending")
        return p if isinstance(p, dict) and isinstance(p.get("uid"), str) else None

    async def mfa_page(self, request: Request, error: str | None = None) -> Response:
        device = self.device(request)
        pending = self._pending(request)
        if device is None or pending is None:
            return self.expired(request)
        enrol = pending.get("enrol")
        user = await self._call(request, self.portal.user, device.tenant, pending["uid"])
        upn = user.upn if user else ""
        return self.render(
            request,
            "mfa.html",  # the portal's TOTP page (the loader falls back to portal/), posting to {{ base }}/mfa
            device,
            401 if error else 200,
            enrol=enrol,
            uri=totp_uri(enrol, upn, f"Pomona {device.tenant.name}") if enrol else None,
            error=error,
        )

    async def mfa(self, request: Request) -> Response:
        device = self.device(request)
        pending = self._pending(request)
        if device is None or pending is None:
            return self.expired(request)
        form = await self.form(request)
        if not self.csrf_ok(request, form):
            return self.render(request, "ade_refused.html", device, 403, code="csrf")
        result: SignIn = await self._call(
            request,
            self.portal.verify_totp,
            device.tenant,
            pending["uid"],
            form.get("code", ""),
            self.client_ip(request),
            enrol_secret=pending.get("enrol"),
        )
        if result.status in (SignInStatus.NEED_TOTP, SignInStatus.ENROL_TOTP):
            return await self.mfa_page(request, error="portal.mfa.wrong_code")
        if result.status is SignInStatus.RATE_LIMITED:
            return self.render(request, "ade_refused.html", device, 429, code="rate_limited")
        return await self.after_sign_in(request, device, result)

    async def set_lang(self, request: Request) -> Response:
        base = f"/ade/{request.path_params['tenant_id']}/web"
        return self.switch_lang(request, f"{base}", base, "/ade")

    async def not_found(self, request: Request) -> Response:
        return Response(b"", status_code=404)


def create_ade_web(p: Services) -> ASGIApp:
    """The web view's ASGI app; RootApp routes every path under /ade (but the enroll URL) to it."""
    web = AdeWeb(p)
    routes = [
        Route("/ade/{tenant_id}/web", web.start, methods=["GET"]),
        Route("/ade/{tenant_id}/web", web.signin, methods=["POST"]),
        Route("/ade/{tenant_id}/web/mfa", web.mfa_page, methods=["GET"]),
        Route("/ade/{tenant_id}/web/mfa", web.mfa, methods=["POST"]),
        Route("/ade/{tenant_id}/web/lang/{lang}", web.set_lang, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestId),
            Middleware(PortalHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=p.portal.session_secret(),
                session_cookie="pomona_ade",
                max_age=int(WEB_STATE_LIFETIME.total_seconds()),
                path="/ade",
                same_site="lax",
                https_only=True,
            ),
        ],
    )
