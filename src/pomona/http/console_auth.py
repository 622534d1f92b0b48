"""How console accounts sign in beyond a password (issue 13), over :mod:`pomona.services.console_auth`:

    POST  /console/signin/totp                  the first code of a new authenticator (after the password
                                                of an account that must enrol one): the secret is kept
    GET   /console/security                     the account's own sign-in security: its TOTP
    POST  /console/security/totp                the password again -> a new secret shown (not kept yet)
    POST  /console/security/totp/confirm        its first code -> the new secret replaces the old (audited)
    GET   /console/t/{tenant}/sso               the tenant's OpenID Connect settings (admins); POST sets
                                                (issuer, client id and secret, email claim) or clears them
    GET   /console/t/{tenant}/oidc/start        to the tenant's identity provider (code flow, PKCE, state,
                                                nonce); the sign-in page links here for ?tenant=T
    GET   /console/t/{tenant}/oidc/callback     the code exchanged, the ID token verified, the account
                                                of THIS tenant its email names signed in

A secret waiting for its first code is kept in the signed session cookie (as the portal's enrolment is),
for ENROL_SECONDS; the OIDC state, nonce and PKCE verifier too. Every form carries the CSRF token.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pomona.domain.errors import InvalidInputError, NotFoundError, UpstreamError, describe
from pomona.http.console import Console
from pomona.ports import AdminAccount
from pomona.presenters import error_text
from pomona.services.console import TOTP_PENDING
from pomona.services.console_auth import ENROL_SECONDS, ConsoleAuthService, OidcRefused, OidcStart
from pomona.services.portal import totp_uri

ISSUER = "Pomona console"


def totp_state(account: AdminAccount) -> str:
    """The security page's words for the account's TOTP: on, off, or pending (must set one up)."""
    return "pending" if account.totp_secret == TOTP_PENDING else "on" if account.totp_secret else "off"


class AuthPages:
    def __init__(self, console: Console, svc: ConsoleAuthService) -> None:
        self.c = console
        self.svc = svc

    # --- TOTP -------------------------------------------------------------------------------------
    def show_secret(
        self,
        request: Request,
        account: AdminAccount,
        first: bool,
        status: int = 200,
        error: str | None = None,
    ) -> Response:
        """The enrolment page for the secret waiting in the session (a new one when none is)."""
        pending = request.session.get("enrol")
        if not (
            isinstance(pending, dict)
            and pending.get("aid") == account.id
            and pending.get("until", 0) > time.time()
        ):
            pending = {
                "aid": account.id,
                "secret": self.svc.new_secret(),
                "until": int(time.time()) + ENROL_SECONDS,
            }
            request.session["enrol"] = pending
        secret = str(pending["secret"])
        return self.c.render(
            request,
            "totp_enrol.html",
            account if not first else None,
            status,
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            uri=totp_uri(secret, account.email, ISSUER),
            action="/console/signin/totp" if first else "/console/security/totp/confirm",
            first=first,
            error=error,
        )

    def pending(self, request: Request) -> dict[str, Any] | None:
        p = request.session.get("enrol")
        if isinstance(p, dict) and isinstance(p.get("secret"), str) and p.get("until", 0) > time.time():
            return p
        return None

    async def signin_enrol(self, request: Request, account: AdminAccount) -> Response:
        """After the password of an account that must enrol: only the enrolment, no session yet."""
        kept = self.pending(request)  # the secret already shown to this account, if it still waits
        request.session.clear()
        request.session["csrf"] = secrets.token_urlsafe(32)
        if kept is not None and kept.get("aid") == account.id:
            request.session["enrol"] = kept
        return self.show_secret(request, account, first=True)

    async def signin_confirm(self, request: Request) -> Response:
        form = await self.c.form(request)
        if not self.c.csrf_ok(request, form):
            return self.c.csrf_refused(request, None)
        p = self.pending(request)
        if p is None:
            return RedirectResponse("/console/signin", status_code=303)
        a = await run_in_threadpool(
            lambda: self.svc.confirm_totp(
                str(p["aid"]), str(p["secret"]), form.get("code", ""), self.c.client_ip(request), first=True
            )
        )
        if a is None:
            who = await run_in_threadpool(self.svc.pending_account, str(p["aid"]))
            if who is None:
                request.session.clear()
                return RedirectResponse("/console/signin", status_code=303)
            return self.show_secret(request, who, True, 401, "console.totp.bad_code")
        return await self.open(request, a)

    async def open(self, request: Request, a: AdminAccount) -> Response:
        sid = await run_in_threadpool(self.svc.console.open_session, a)
        request.session.clear()  # no fixation: a new session, a new CSRF token
        request.session.update({"sid": sid, "csrf": secrets.token_urlsafe(32)})
        return RedirectResponse("/console", status_code=303)

    async def security(self, request: Request, account: AdminAccount) -> Response:
        done = request.query_params.get("done")
        return self.c.render(
            request,
            "security.html",
            account,
            totp=totp_state(account),
            notice="totp" if done == "totp" else None,
            error=None,
        )

    async def security_totp(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ok = await run_in_threadpool(
            self.svc.check_password, account, form.get("password", ""), self.c.client_ip(request)
        )
        if not ok:
            return self.c.render(
                request,
                "security.html",
                account,
                401,
                totp=totp_state(account),
                notice=None,
                error="console.security.bad_password",
            )
        request.session.pop("enrol", None)
        return self.show_secret(request, account, first=False)

    async def security_confirm(
        self, request: Request, account: AdminAccount, form: dict[str, str]
    ) -> Response:
        p = self.pending(request)
        if p is None or p.get("aid") != account.id:
            return RedirectResponse("/console/security", status_code=303)
        a = await run_in_threadpool(
            lambda: self.svc.confirm_totp(
                account.id, str(p["secret"]), form.get("code", ""), self.c.client_ip(request), first=False
            )
        )
        if a is None:
            return self.show_secret(request, account, False, 401, "console.totp.bad_code")
        request.session.pop("enrol", None)
        return RedirectResponse("/console/security?done=totp", status_code=303)

    # --- OpenID Connect ---------------------------------------------------------------------------
    def redirect_uri(self, request: Request, tenant: str) -> str:
        """The callback at the server's public URL (never the request's Host header)."""
        return f"{self.c.p.public_url.rstrip('/')}/console/t/{quote(tenant, safe='')}/oidc/callback"

    async def oidc_start(self, request: Request) -> Response:
        ref = str(request.path_params["tenant"])
        try:
            t, _cfg, start = await run_in_threadpool(self.svc.begin, ref, self.redirect_uri(request, ref))
        except NotFoundError:
            return await self.c.not_found(request)
        except UpstreamError:
            return self.c.message(request, None, 502, "console.oidc.error.title", "console.oidc.upstream")
        request.session["oidc"] = {
            "t": t.id,
            "ref": ref,
            "state": start.state,
            "nonce": start.nonce,
            "verifier": start.verifier,
            "until": int(time.time()) + ENROL_SECONDS,
        }
        return RedirectResponse(start.url, status_code=303)

    async def oidc_callback(self, request: Request) -> Response:
        ref = str(request.path_params["tenant"])
        q = request.query_params
        kept = request.session.pop("oidc", None)
        ok = (
            isinstance(kept, dict)
            and kept.get("ref") == ref
            and kept.get("until", 0) > time.time()
            and secrets.compare_digest(str(kept.get("state", "")), q.get("state") or "")
        )
        if not ok or not q.get("code"):
            try:
                await run_in_threadpool(self.svc.refuse_callback, ref, "state", self.c.client_ip(request))
            except NotFoundError:
                return await self.c.not_found(request)
            return self.refused(request, "state")
        assert isinstance(kept, dict)
        start = OidcStart("", str(kept["state"]), str(kept["nonce"]), str(kept["verifier"]))
        try:
            a = await run_in_threadpool(
                self.svc.finish,
                ref,
                self.redirect_uri(request, ref),
                q.get("code") or "",
                start,
                self.c.client_ip(request),
            )
        except OidcRefused as exc:
            return self.refused(request, exc.why)
        except NotFoundError:
            return await self.c.not_found(request)
        except UpstreamError:
            return self.c.message(request, None, 502, "console.oidc.error.title", "console.oidc.upstream")
        return await self.open(request, a)

    def refused(self, request: Request, why: str) -> Response:
        body = "console.oidc.unknown_account" if why == "unknown_account" else "console.oidc.refused"
        resp = self.c.message(request, None, 403, "console.oidc.error.title", body)
        resp.headers["x-pomona-refused"] = why
        return resp


class SsoPages:
    """The tenant's OpenID Connect settings for console sign-in (admins): GET shows, POST sets or clears."""

    def __init__(self, console: Console, svc: ConsoleAuthService) -> None:
        self.c = console
        self.svc = svc

    async def show(
        self, request: Request, account: AdminAccount, status: int = 200, error: str = ""
    ) -> Response:
        ref = self.c.tenant_ref(request)
        tenant = await run_in_threadpool(self.c.svc.scope, account, ref, "sso")
        _t, cfg = await run_in_threadpool(self.svc.show_oidc, tenant.name)
        done = request.query_params.get("done")
        return self.c.render(
            request,
            "sso.html",
            account,
            status,
            tenant=tenant,
            cfg=cfg,
            redirect_uri=f"{self.c.p.public_url.rstrip('/')}/console/t/{quote(tenant.name, safe='')}/oidc/callback",
            notice=done if done in ("set", "cleared") else None,
            error=error,
        )

    async def save(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref = self.c.tenant_ref(request)
        source = self.c.client_ip(request)
        tenant = await run_in_threadpool(self.c.svc.change_scope, account, ref, "sso", source)
        if form.get("clear") == "yes":
            await run_in_threadpool(
                lambda: self.svc.clear_oidc(tenant.name, actor=account.email, source=source)
            )
            return RedirectResponse(
                f"/console/t/{quote(tenant.name, safe='')}/sso?done=cleared", status_code=303
            )
        try:
            await run_in_threadpool(
                lambda: self.svc.set_oidc(
                    tenant.name,
                    issuer=form.get("issuer", "")[:500],
                    client_id=form.get("client_id", "")[:300],
                    client_secret=form.get("client_secret", "")[:1000],
                    email_claim=form.get("email_claim", "")[:64] or None,
                    name=form.get("name", "")[:64] or None,
                    actor=account.email,
                    source=source,
                )
            )
        except InvalidInputError as exc:
            return await self.show(request, account, 422, error_text(describe(exc), self.c.lang(request)))
        return RedirectResponse(f"/console/t/{quote(tenant.name, safe='')}/sso?done=set", status_code=303)


def sso_for(c: Console, tenant_ref: str) -> dict[str, str] | None:
    """The sign-in page's "Sign in with <IdP>" for ?tenant=T, when T has OpenID Connect."""
    if not tenant_ref or len(tenant_ref) > 100:
        return None
    try:
        _t, cfg = c.p_auth.show_oidc(tenant_ref)
    except NotFoundError:
        return None
    if cfg is None:
        return None
    return {"label": cfg.label(), "href": f"/console/t/{quote(tenant_ref, safe='')}/oidc/start"}


def auth_routes(c: Console) -> list[Route]:
    """The routes, for create_console (before its catch-all)."""
    a = AuthPages(c, c.p_auth)
    c.enrol_page = a.signin_enrol
    sso = SsoPages(c, c.p_auth)
    s, post = c.signed, c.posted
    return [
        Route("/console/t/{tenant}/sso", s(sso.show), methods=["GET"]),
        Route("/console/t/{tenant}/sso", post(sso.save), methods=["POST"]),
        Route("/console/signin/totp", a.signin_confirm, methods=["POST"]),
        Route("/console/security", s(a.security), methods=["GET"]),
        Route("/console/security/totp", post(a.security_totp), methods=["POST"]),
        Route("/console/security/totp/confirm", post(a.security_confirm), methods=["POST"]),
        Route("/console/t/{tenant}/oidc/start", a.oidc_start, methods=["GET"]),
        Route("/console/t/{tenant}/oidc/callback", a.oidc_callback, methods=["GET"]),
    ]


__all__ = ["AuthPages", "SsoPages", "auth_routes", "sso_for"]
