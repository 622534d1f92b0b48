"""The console's corporate identifiers page (issue 13, page 6) and administration page (page 10), over
:mod:`pomona.services.console_admin`:

    GET   /console/t/{tenant}/corporate                  the identifiers with their states (pages of 50)
    POST  /console/t/{tenant}/corporate                  a CSV (multipart, at most MAX_CSV bytes): the page
                                                         with the per-row report (all rows or none)
    GET   /console/t/{tenant}/admin                      accounts, API tokens, enrollment links, webhook
    POST  /console/t/{tenant}/admin/accounts             a new account of this tenant (admin or helpdesk)
    POST  /console/t/{tenant}/admin/accounts/{id}/enable|disable
    POST  /console/t/{tenant}/admin/tokens               a new API token: the page shows its secret once
    POST  /console/t/{tenant}/admin/tokens/{id}/revoke
    POST  /console/t/{tenant}/admin/links/{id}/revoke
    POST  /console/t/{tenant}/admin/webhook              the webhook's URL and secret
    POST  /console/t/{tenant}/admin/webhook/test         one test delivery: the page with its status and error

Every form carries the session's CSRF token. A refusal of the use case renders the page again with its
reason code and the catalogue's text beside the form it came from; a role or tenant refusal is the
console's 403 or 404 page. The token's secret is in the POST's answer only (never in a URL or a cookie).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pomona.domain.errors import ConflictError, InvalidInputError, NotFoundError, PomonaError, describe
from pomona.http.console import Console
from pomona.http.portal import translate
from pomona.i18n import msg
from pomona.ports import AdminAccount
from pomona.presenters import api_token_json, enrollment_token_json, error_text
from pomona.services.console_admin import TENANT_ROLES, TOKEN_DAYS, AdminPagesService

MAX_CSV = 480 * 1024  # below the route's body limit (PORTAL_BODY_LIMITS, 512 KiB): 5,000 rows fit
ADMIN_DONE = (
    "account.create",
    "account.enable",
    "account.disable",
    "token.revoke",
    "link.revoke",
    "webhook.set",
)


class AdminPages:
    def __init__(self, console: Console, svc: AdminPagesService) -> None:
        self.c = console
        self.svc = svc

    def ref(self, request: Request) -> str:
        return str(request.path_params["tenant"])

    def refusal(self, request: Request, exc: PomonaError) -> dict[str, str]:
        e = describe(exc)
        return {"code": e.reason.value, "text": error_text(e, self.c.lang(request))}

    # --- corporate identifiers --------------------------------------------------------------------
    async def corporate(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        raw = request.query_params.get("offset", "")
        offset = int(raw) if raw.isdigit() and len(raw) < 9 else 0
        page = await run_in_threadpool(self.svc.corporate, account, self.ref(request), offset)
        ctx: dict[str, Any] = {"report": None, "import_error": None}
        ctx.update(extra)
        return self.c.render(request, "corporate.html", account, status, tenant=page.tenant, page=page, **ctx)

    async def show_corporate(self, request: Request, account: AdminAccount) -> Response:
        return await self.corporate(request, account)

    async def import_corporate(self, request: Request, account: AdminAccount) -> Response:
        try:
            data = await request.form(max_files=1, max_fields=5)
        except HTTPException:  # not multipart, or malformed: no traceback
            data = None
        fields = {k: v for k, v in (data or {}).items() if isinstance(v, str)}
        if not self.c.csrf_ok(request, fields):
            return self.c.csrf_refused(request, account)
        lang = self.c.lang(request)
        upload = None if data is None else data.get("file")
        content = b""
        ip = self.c.client_ip(request)
        try:
            if isinstance(upload, UploadFile):
                content = await upload.read(MAX_CSV + 1)
            if len(content) > MAX_CSV:
                raise InvalidInputError(msg("error.console.csv_too_large", limit=MAX_CSV), field="file")
            if not content.strip():
                raise InvalidInputError(msg("error.console.no_file"), field="file")
            try:
                text = content.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(msg("error.console.csv_encoding"), field="file") from exc
        except InvalidInputError as exc:
            # Refused before the use case: the role's scope first (helpdesk 403, another tenant 404).
            await run_in_threadpool(self.svc.refuse_import, account, self.ref(request), exc, ip)
            return await self.corporate(request, account, 422, import_error=self.refusal(request, exc))
        try:
            r = await run_in_threadpool(self.svc.import_corporate, account, self.ref(request), text, ip)
        except InvalidInputError as exc:  # too many rows, an unreadable CSV: audited by the use case
            return await self.corporate(request, account, 422, import_error=self.refusal(request, exc))
        rows: list[dict[str, object]] = [
            {"row": a["row"], "value": a["value"], "ok": True, "code": "", "text": ""} for a in r.accepted
        ]
        for e in r.errors:
            key = str(e.get("key") or "")
            rows.append(
                {
                    "row": e["row"],
                    "value": e["value"],
                    "ok": False,
                    "code": str(e.get("code") or ""),
                    "text": translate(lang, key) if key else str(e["error"]),
                }
            )
        rows.sort(key=lambda x: int(str(x["row"])))
        report = {"imported": r.imported, "unchanged": r.unchanged, "failed": len(r.errors), "rows": rows}
        return await self.corporate(request, account, 422 if r.errors else 200, report=report)

    # --- administration ---------------------------------------------------------------------------
    async def admin(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        v = await run_in_threadpool(self.svc.view, account, self.ref(request))
        done = request.query_params.get("done")
        ctx: dict[str, Any] = {
            "account_error": None,
            "token_error": None,
            "webhook_error": None,
            "new_token": None,
            "test_result": None,
            "form": {},
        }
        ctx.update(extra)
        return self.c.render(
            request,
            "admin.html",
            account,
            status,
            tenant=v.tenant,
            v=v,
            notice=done if done in ADMIN_DONE else None,
            roles=TENANT_ROLES,
            token_days=TOKEN_DAYS,
            token_state=lambda tok: api_token_json(tok, v.now)["state"],
            link_state=lambda tok: enrollment_token_json(tok, None, v.now)["state"],
            **ctx,
        )

    async def show_admin(self, request: Request, account: AdminAccount) -> Response:
        return await self.admin(request, account)

    def back(self, request: Request, done: str) -> Response:
        return RedirectResponse(
            f"/console/t/{quote(self.ref(request), safe='')}/admin?done={done}", status_code=303
        )

    async def create_account(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        email, role = form.get("email", "").strip()[:320], form.get("role", "")[:20]
        try:
            await run_in_threadpool(
                self.svc.create_account,
                account,
                self.ref(request),
                email,
                form.get("password", "")[:1000],
                role,
                self.c.client_ip(request),
            )
        except (InvalidInputError, ConflictError) as exc:
            return await self.admin(
                request,
                account,
                409 if isinstance(exc, ConflictError) else 422,
                account_error=self.refusal(request, exc),
                form={"email": email, "role": role},
            )
        return self.back(request, "account.create")

    def set_enabled(self, enabled: bool) -> Any:
        async def handler(request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
            aid = str(request.path_params["account"])[:64]
            try:
                await run_in_threadpool(
                    self.svc.set_enabled, account, self.ref(request), aid, enabled, self.c.client_ip(request)
                )
            except ConflictError as exc:
                return await self.admin(request, account, 409, account_error=self.refusal(request, exc))
            return self.back(request, "account.enable" if enabled else "account.disable")

        return handler

    async def create_token(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        name = form.get("name", "").strip()[:101]
        raw = form.get("days", "")
        days = int(raw) if raw.isdigit() and int(raw) in (0, *TOKEN_DAYS) else -1
        try:
            if days < 0:
                raise InvalidInputError(msg("error.console.token_days"), field="days")
            issued = await run_in_threadpool(
                self.svc.create_token,
                account,
                self.ref(request),
                name,
                days,
                form.get("scope") == "server",
                self.c.client_ip(request),
            )
        except InvalidInputError as exc:
            return await self.admin(
                request, account, 422, token_error=self.refusal(request, exc), form={"name": name}
            )
        # The secret, once: in this answer only (no redirect, nothing stored; the console's answers are
        # never cached: PortalHeaders).
        return await self.admin(
            request, account, new_token={"name": issued.token.name, "secret": issued.secret}
        )

    async def revoke_token(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        tid = str(request.path_params["token"])[:64]
        await run_in_threadpool(
            self.svc.revoke_token, account, self.ref(request), tid, self.c.client_ip(request)
        )
        return self.back(request, "token.revoke")

    async def revoke_link(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        lid = str(request.path_params["link"])[:64]
        await run_in_threadpool(
            self.svc.revoke_link, account, self.ref(request), lid, self.c.client_ip(request)
        )
        return self.back(request, "link.revoke")

    async def set_webhook(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        url = form.get("url", "").strip()[:2000]
        try:
            await run_in_threadpool(
                self.svc.set_webhook,
                account,
                self.ref(request),
                url,
                form.get("secret", "")[:500],
                self.c.client_ip(request),
            )
        except InvalidInputError as exc:
            return await self.admin(
                request, account, 422, webhook_error=self.refusal(request, exc), form={"url": url}
            )
        return self.back(request, "webhook.set")

    async def test_webhook(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        try:
            r = await run_in_threadpool(
                self.svc.test_webhook, account, self.ref(request), self.c.client_ip(request)
            )
        except NotFoundError as exc:
            return await self.admin(request, account, 404, webhook_error=self.refusal(request, exc))
        return await self.admin(request, account, test_result=r)


def admin_routes(c: Console) -> list[Route]:
    """The pages' routes, for create_console (before its catch-all)."""
    a = AdminPages(c, c.p.console_admin)
    s, post = c.signed, c.posted
    base = "/console/t/{tenant}/admin"
    return [
        Route("/console/t/{tenant}/corporate", s(a.show_corporate), methods=["GET"]),
        Route("/console/t/{tenant}/corporate", s(a.import_corporate), methods=["POST"]),
        Route(base, s(a.show_admin), methods=["GET"]),
        Route(f"{base}/accounts", post(a.create_account), methods=["POST"]),
        Route(f"{base}/accounts/{{account}}/enable", post(a.set_enabled(True)), methods=["POST"]),
        Route(f"{base}/accounts/{{account}}/disable", post(a.set_enabled(False)), methods=["POST"]),
        Route(f"{base}/tokens", post(a.create_token), methods=["POST"]),
        Route(f"{base}/tokens/{{token}}/revoke", post(a.revoke_token), methods=["POST"]),
        Route(f"{base}/links/{{link}}/revoke", post(a.revoke_link), methods=["POST"]),
        Route(f"{base}/webhook", post(a.set_webhook), methods=["POST"]),
        Route(f"{base}/webhook/test", post(a.test_webhook), methods=["POST"]),
    ]


__all__ = ["AdminPages", "admin_routes"]
