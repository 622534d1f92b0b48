"""The console's Apple settings page (issue 13, page 7), over :mod:`pomona.services.console_apple`:

    GET   /console/t/{tenant}/apple                   push certificate, ABM tokens, ADE profiles
    POST  /console/t/{tenant}/apple/push/csr          a new push key: the CSR as a download (audited)
    POST  /console/t/{tenant}/apple/push              Apple's .pem (multipart): renewal, or the replace
                                                      guard (APNS_TOPIC_CHANGED unless replace + confirm)
    POST  /console/t/{tenant}/apple/abm/keypair       the ABM key pair's certificate as a download
    POST  /console/t/{tenant}/apple/abm/token         ABM's .p7m (multipart)
    POST  /console/t/{tenant}/apple/abm/sync          sync now, in the request: the page with the report
    POST  /console/t/{tenant}/apple/profiles          create an ADE profile (the linter's findings per field)

Every form carries the session's CSRF token (a multipart one too). A refusal of the use case (another
topic, a token that does not open, a profile the linter blocks, ABM's error) renders this page again with
its reason code and the catalogue's text beside the form it came from; a role or tenant refusal is the
console's 403 or 404 page.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pomona.domain.ade_profile import SKIP_KEYS, AuthMode
from pomona.domain.errors import (
    AbmError,
    AdeProfileInvalidError,
    ConflictError,
    InvalidInputError,
    PomonaError,
    PushTopicChangedError,
    describe,
)
from pomona.http.console import Console, title_of
from pomona.http.portal import translate
from pomona.i18n import msg
from pomona.ports import AdminAccount
from pomona.presenters import error_text
from pomona.services.abm import EXPIRY_WARNING, SyncReport
from pomona.services.console_apple import AppleSettingsService

MAX_FILE = 60 * 1024  # below the console's body limit (PORTAL_BODY_LIMITS): a .pem, .p12 or .p7m is a few KiB
DONE = ("csr", "renewed", "replaced", "uploaded", "token", "profile")
_SKIP_SPLIT = re.compile(r"[\s,]+")


class ApplePages:
    def __init__(self, console: Console, svc: AppleSettingsService) -> None:
        self.c = console
        self.svc = svc

    # --- plumbing ---------------------------------------------------------------------------------
    async def upload_form(self, request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
        """A multipart form: its text fields and its files (each bounded), for a CSRF-checked POST."""
        try:
            data = await request.form(max_files=1, max_fields=20)
        except HTTPException as exc:  # not multipart, or malformed: no traceback, the invalid page
            raise InvalidInputError(msg("error.console.no_file"), field="file") from exc
        fields: dict[str, str] = {}
        files: dict[str, bytes] = {}
        for k, v in data.items():
            if isinstance(v, str):
                fields[k] = v
            elif isinstance(v, UploadFile):
                files[k] = await v.read(MAX_FILE + 1)
                if len(files[k]) > MAX_FILE:
                    raise InvalidInputError(msg("error.console.file_too_large", limit=MAX_FILE), field=k)
        return fields, files

    def posted_upload(self, handler: Any) -> Any:
        async def with_form(request: Request, account: AdminAccount) -> Response:
            fields, files = await self.upload_form(request)
            if not self.c.csrf_ok(request, fields):
                return self.c.csrf_refused(request, account)
            return await handler(request, account, fields, files)  # type: ignore[no-any-return]

        return self.c.signed(with_form)

    def ref(self, request: Request) -> str:
        return str(request.path_params["tenant"])

    def back(self, request: Request, done: str) -> Response:
        return RedirectResponse(
            f"/console/t/{quote(self.ref(request), safe='')}/apple?done={done}", status_code=303
        )

    def refusal(self, request: Request, exc: PomonaError) -> dict[str, str]:
        e = describe(exc)
        return {"code": e.reason.value, "text": error_text(e, self.c.lang(request))}

    async def page(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        v = await run_in_threadpool(self.svc.view, account, self.ref(request))
        lang = self.c.lang(request)
        done = request.query_params.get("done")
        token_names = {t.info.id: t.info.name for t in v.tokens}
        ctx: dict[str, Any] = {
            "push_error": None,
            "abm_error": None,
            "profile_error": None,
            "sync_reports": None,
            "lint": {},
            "form": {"auth": "modern", "supervised": "yes"},
        }
        ctx.update(extra)
        return self.c.render(
            request,
            "apple.html",
            account,
            status,
            tenant=v.tenant,
            v=v,
            notice=done if done in DONE else None,
            warn_days=EXPIRY_WARNING.days,
            token_names=token_names,
            auth_modes=[m.value for m in AuthMode],
            skip_keys=sorted(SKIP_KEYS, key=str.lower),
            finding_title=lambda code, facts: _title(code, lang, facts),
            **ctx,
        )

    # --- pages ------------------------------------------------------------------------------------
    async def show(self, request: Request, account: AdminAccount) -> Response:
        return await self.page(request, account)

    async def csr(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        email = form.get("email", "").strip()[:320]
        r = await run_in_threadpool(
            self.svc.csr, account, self.ref(request), email, self.c.client_ip(request)
        )
        name = re.sub(r"[^A-Za-z0-9._-]", "_", r.tenant) or "tenant"
        return Response(
            r.csr_pem,
            media_type="application/pkcs10",
            headers={"content-disposition": f'attachment; filename="{name}-push.csr"'},
        )

    async def upload_push(
        self, request: Request, account: AdminAccount, form: dict[str, str], files: dict[str, bytes]
    ) -> Response:
        replace, confirmed = form.get("replace") == "yes", form.get("confirm") == "yes"
        try:
            r = await run_in_threadpool(
                lambda: self.svc.upload_push(
                    account,
                    self.ref(request),
                    files.get("cert", b""),
                    self.c.client_ip(request),
                    apple_id=form.get("apple_id", "").strip()[:320] or None,
                    password=form.get("password") or None,
                    replace=replace,
                    confirmed=confirmed,
                )
            )
        except (InvalidInputError, ConflictError) as exc:
            status = 409 if isinstance(exc, ConflictError) else 422
            guard = isinstance(exc, PushTopicChangedError) or (replace and not confirmed)
            return await self.page(
                request,
                account,
                status,
                push_error=self.refusal(request, exc),
                replace_guard=guard,
                topic_change=dict(exc.context) if isinstance(exc, PushTopicChangedError) else {},
            )
        return self.back(request, "replaced" if r.replaced else "renewed" if r.renewed else "uploaded")

    async def keypair(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref = self.ref(request)
        pem = await run_in_threadpool(self.svc.keypair, account, ref, self.c.client_ip(request))
        name = re.sub(r"[^A-Za-z0-9._-]", "_", ref) or "tenant"
        return Response(
            pem,
            media_type="application/x-pem-file",
            headers={"content-disposition": f'attachment; filename="{name}-abm.pem"'},
        )

    async def upload_token(
        self, request: Request, account: AdminAccount, form: dict[str, str], files: dict[str, bytes]
    ) -> Response:
        name = form.get("name", "").strip()[:200] or None
        try:
            await run_in_threadpool(
                self.svc.upload_token,
                account,
                self.ref(request),
                files.get("token", b""),
                name,
                self.c.client_ip(request),
            )
        except (InvalidInputError, ConflictError) as exc:
            status = 409 if isinstance(exc, ConflictError) else 422
            return await self.page(request, account, status, abm_error=self.refusal(request, exc))
        return self.back(request, "token")

    async def sync(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        token = form.get("token", "").strip()[:200] or None
        try:
            reports: list[SyncReport] = await run_in_threadpool(
                self.svc.sync, account, self.ref(request), token, self.c.client_ip(request)
            )
        except (AbmError, InvalidInputError) as exc:
            return await self.page(
                request, account, describe(exc).status, abm_error=self.refusal(request, exc)
            )
        return await self.page(request, account, sync_reports=reports)

    async def create_profile(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        lang = self.c.lang(request)
        values = {k: form.get(k, "")[:300] for k in ("name", "auth", "skip", "token")}
        for flag in ("supervised", "removable", "await", "default"):
            values[flag] = "yes" if form.get(flag) == "yes" else ""
        auth = next((m for m in AuthMode if m.value == values["auth"]), None)
        skip = [s for s in _SKIP_SPLIT.split(values["skip"]) if s][:60]
        try:
            if auth is None:
                raise InvalidInputError(msg("error.console.auth_mode"), field="auth")
            await run_in_threadpool(
                lambda: self.svc.create_profile(
                    account,
                    self.ref(request),
                    values["name"].strip(),
                    self.c.client_ip(request),
                    auth=auth,
                    supervised=bool(values["supervised"]),
                    removable=bool(values["removable"]),
                    await_configured=bool(values["await"]),
                    skip=skip,
                    default=bool(values["default"]),
                    token=values["token"] or None,
                )
            )
        except (InvalidInputError, ConflictError, AbmError) as exc:
            lint: dict[str, list[dict[str, object]]] = {}
            if isinstance(exc, AdeProfileInvalidError):
                for f in exc.context.get("findings", []):  # type: ignore[attr-defined]
                    lint.setdefault(str(f["field"]), []).append(
                        {
                            "rule": f["rule"],
                            "severity": f["severity"],
                            "code": f["code"] or "",
                            "text": translate(lang, str(f["message_key"]), **dict(f["values"])),
                        }
                    )
            return await self.page(
                request,
                account,
                describe(exc).status
                if isinstance(exc, AbmError)
                else 409
                if isinstance(exc, ConflictError)
                else 422,
                profile_error=self.refusal(request, exc),
                lint=lint,
                form=values,
            )
        return self.back(request, "profile")


def _title(code: str, lang: str, facts: dict[str, object]) -> str:
    return title_of(code, lang, facts)


def apple_routes(c: Console) -> list[Route]:
    """The page's routes, for create_console (before its catch-all)."""
    a = ApplePages(c, c.p.console_apple)
    s, post, up = c.signed, c.posted, a.posted_upload
    base = "/console/t/{tenant}/apple"
    return [
        Route(base, s(a.show), methods=["GET"]),
        Route(f"{base}/push/csr", post(a.csr), methods=["POST"]),
        Route(f"{base}/push", up(a.upload_push), methods=["POST"]),
        Route(f"{base}/abm/keypair", post(a.keypair), methods=["POST"]),
        Route(f"{base}/abm/token", up(a.upload_token), methods=["POST"]),
        Route(f"{base}/abm/sync", post(a.sync), methods=["POST"]),
        Route(f"{base}/profiles", post(a.create_profile), methods=["POST"]),
    ]


__all__ = ["ApplePages", "apple_routes"]
