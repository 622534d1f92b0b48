"""The console's Apple settings page (issue 13, page 7), over :mod:`pomona.services.console_apple`:

    GET   /console/t/{tenant}/apple                   push certificate, ABM tokens, ADE profiles
    POST  /console/t/{tenant}/apple/push/csr          a new push key: the CSR as a download (audited)
    POST  /console/t/{tenant}/apple/push              Apple's .pem (multipart): renewal, or the replace
                                                      guard (APNS_TOPIC_CHANGED unless replace + confirm)
    POST  /console/t/{tenant}/apple/abm/keypair       the ABM key pair's certificate as a download
    POST  /console/t/{tenant}/apple/abm/token         ABM's .p7m (multipart)
    POST  /console/t/{tenant}/apple/abm/sync          sync now, in the request: the page with the report
    POST  /console/t/{tenant}/apple/profiles          create an ADE profile (the linter's findings per field)
    GET   /console/t/{tenant}/apple/profiles/{profile}  one profile: its fields, the linter's findings, its
                                                      rules, and its devices (keyset, ?after=SERIAL)
    POST  /console/t/{tenant}/apple/profiles/{profile}  save its fields (linted; defined again at ABM)
    POST  .../profiles/{profile}/assign               assign it to serials (a textarea, one per line)
    POST  .../profiles/{profile}/default              make it the default of a token (or of every token)
    POST  .../profiles/{profile}/rules                add an assignment rule (model, family, order number)
    POST  .../profiles/{profile}/rules/{rule}/remove  remove one of its rules

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
from pomona.ports import RULE_FIELDS, AdminAccount
from pomona.presenters import error_text
from pomona.services.abm import EXPIRY_WARNING, ReconcileReport, SyncReport
from pomona.services.console_apple import MAX_SERIALS, AppleSettingsService

MAX_FILE = 60 * 1024  # below the console's body limit (PORTAL_BODY_LIMITS): a .pem, .p12 or .p7m is a few KiB
DONE = ("csr", "renewed", "replaced", "uploaded", "token", "profile")
PROFILE_DONE = ("saved", "default", "rule_added", "rule_removed")
_SKIP_SPLIT = re.compile(r"[\s,]+")
_SERIAL_SPLIT = re.compile(r"[\s,;]+")
#: Apple's profile_status values the catalogue names (another shows as Apple spells it).
PROFILE_STATUSES = ("empty", "assigned", "pushed", "removed")
#: ABM's answers to an assignment that are not reason codes, and the code each one means.
ANSWER_CODES = {"NOT_ACCESSIBLE": "DEP_DEVICE_ASSIGNED_ELSEWHERE", "FAILED": "DEP_PROFILE_NOT_ASSIGNED"}


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
        values, auth, skip = _profile_form(form)
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
            return await self.page(
                request,
                account,
                _status(exc),
                profile_error=self.refusal(request, exc),
                lint=_refused_lint(exc, lang),
                form=values,
            )
        return self.back(request, "profile")

    # --- one ADE profile ----------------------------------------------------------------------------
    def pid(self, request: Request) -> str:
        return str(request.path_params["profile"])[:64]

    def profile_url(self, request: Request) -> str:
        return f"/console/t/{quote(self.ref(request), safe='')}/apple/profiles/{quote(self.pid(request), safe='')}"

    async def profile_page(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        """The profile's page: its form pre-filled (or as posted, after a refusal), the linter's
        findings on it as kept (or on what was posted), its rules and its devices."""
        lang = self.c.lang(request)
        after = request.query_params.get("after")
        pg = await run_in_threadpool(
            self.svc.profile_page, account, self.ref(request), self.pid(request), after
        )
        r = pg.profile.record
        st = r.settings
        done = request.query_params.get("done")
        ctx: dict[str, Any] = {
            "form": {
                "name": r.name,
                "auth": str(st.get("auth", "modern")),
                "supervised": "yes" if st.get("is_supervised", True) else "",
                "removable": "yes" if st.get("is_mdm_removable") else "",
                "await": "yes" if st.get("await_device_configured") else "",
                "skip": " ".join(str(x) for x in st.get("skip_setup_items") or []),  # type: ignore[attr-defined]
            },
            "lint": _lint([f.to_json() for f in pg.findings], lang),
            "profile_error": None,
            "assign_error": None,
            "default_error": None,
            "rule_error": None,
            "answers": None,
            "serials_text": "",
            "rule_form": {},
        }
        ctx.update(extra)
        token_names = {t.info.id: t.info.name for t in pg.tokens}
        return self.c.render(
            request,
            "ade_profile.html",
            account,
            status,
            tenant=pg.tenant,
            pg=pg,
            r=r,
            base=self.profile_url(request),
            notice=done if done in PROFILE_DONE else None,
            token_names=token_names,
            auth_modes=[m.value for m in AuthMode],
            skip_keys=sorted(SKIP_KEYS, key=str.lower),
            rule_fields=RULE_FIELDS,
            max_serials=MAX_SERIALS,
            status_key=lambda v: f"console.ade.status.{v}" if v in PROFILE_STATUSES else "",
            answer=lambda a: _answer(a, lang),
            finding_title=lambda code, facts: _title(code, lang, facts),
            **ctx,
        )

    async def show_profile(self, request: Request, account: AdminAccount) -> Response:
        return await self.profile_page(request, account)

    def back_to_profile(self, request: Request, done: str) -> Response:
        return RedirectResponse(f"{self.profile_url(request)}?done={done}", status_code=303)

    async def edit_profile(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        lang = self.c.lang(request)
        values, auth, skip = _profile_form(form)
        try:
            if auth is None:
                raise InvalidInputError(msg("error.console.auth_mode"), field="auth")
            report = await run_in_threadpool(
                lambda: self.svc.edit_profile(
                    account,
                    self.ref(request),
                    self.pid(request),
                    self.c.client_ip(request),
                    name=values["name"].strip(),
                    auth=auth,
                    supervised=bool(values["supervised"]),
                    removable=bool(values["removable"]),
                    await_configured=bool(values["await"]),
                    skip=skip,
                )
            )
        except (InvalidInputError, ConflictError, AbmError) as exc:
            return await self.profile_page(
                request,
                account,
                _status(exc),
                profile_error=self.refusal(request, exc),
                lint=_refused_lint(exc, lang),
                form=values,
            )
        del report  # its warnings are the kept profile's findings: the page shows them
        return self.back_to_profile(request, "saved")

    async def assign(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        text = form.get("serials", "")[: MAX_SERIALS * 70]
        serials = [s for s in _SERIAL_SPLIT.split(text) if s]
        try:
            report: ReconcileReport = await run_in_threadpool(
                self.svc.assign,
                account,
                self.ref(request),
                self.pid(request),
                serials,
                self.c.client_ip(request),
            )
        except (InvalidInputError, AbmError, ConflictError) as exc:
            return await self.profile_page(
                request, account, _status(exc), assign_error=self.refusal(request, exc), serials_text=text
            )
        return await self.profile_page(request, account, answers=sorted(report.answers.items()))

    async def make_default(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        token = form.get("token", "").strip()[:200] or None
        try:
            await run_in_threadpool(
                self.svc.make_default,
                account,
                self.ref(request),
                self.pid(request),
                token,
                self.c.client_ip(request),
            )
        except (InvalidInputError, AbmError, ConflictError) as exc:
            return await self.profile_page(
                request,
                account,
                _status(exc),
                default_error=self.refusal(request, exc),
                lint=_refused_lint(exc, self.c.lang(request)),
            )
        return self.back_to_profile(request, "default")

    async def add_rule(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        values = {k: form.get(k, "").strip()[:300] for k in ("field", "value", "priority")}
        try:
            priority = None
            if values["priority"]:
                if not values["priority"].isdigit() or int(values["priority"]) > 1_000_000:
                    raise InvalidInputError(msg("error.console.rule_priority"), field="priority")
                priority = int(values["priority"])
            await run_in_threadpool(
                lambda: self.svc.add_rule(
                    account,
                    self.ref(request),
                    self.pid(request),
                    values["field"],
                    values["value"],
                    priority,
                    self.c.client_ip(request),
                )
            )
        except (InvalidInputError, AbmError, ConflictError) as exc:
            return await self.profile_page(
                request, account, _status(exc), rule_error=self.refusal(request, exc), rule_form=values
            )
        return self.back_to_profile(request, "rule_added")

    async def remove_rule(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        rule = str(request.path_params["rule"])[:64]
        try:
            await run_in_threadpool(
                self.svc.remove_rule,
                account,
                self.ref(request),
                self.pid(request),
                rule,
                self.c.client_ip(request),
            )
        except (InvalidInputError, AbmError, ConflictError) as exc:
            return await self.profile_page(
                request, account, _status(exc), rule_error=self.refusal(request, exc)
            )
        return self.back_to_profile(request, "rule_removed")


def _profile_form(form: dict[str, str]) -> tuple[dict[str, str], AuthMode | None, list[str]]:
    """A profile form's values (as typed, bounded), its sign-in mode (None: not one of ours) and the
    panes to skip."""
    values = {k: form.get(k, "")[:300] for k in ("name", "auth", "skip", "token")}
    for flag in ("supervised", "removable", "await", "default"):
        values[flag] = "yes" if form.get(flag) == "yes" else ""
    auth = next((m for m in AuthMode if m.value == values["auth"]), None)
    skip = [s for s in _SKIP_SPLIT.split(values["skip"]) if s][:60]
    return values, auth, skip


def _status(exc: PomonaError) -> int:
    if isinstance(exc, AbmError):
        return describe(exc).status
    return 409 if isinstance(exc, ConflictError) else 422


def _lint(findings: list[dict[str, Any]], lang: str) -> dict[str, list[dict[str, object]]]:
    """The linter's findings (their JSON) by the profile field they are about, in the visitor's language."""
    lint: dict[str, list[dict[str, object]]] = {}
    for f in findings:
        lint.setdefault(str(f["field"]), []).append(
            {
                "rule": f["rule"],
                "severity": f["severity"],
                "code": f["code"] or "",
                "text": translate(lang, str(f["message_key"]), **dict(f["values"])),
            }
        )
    return lint


def _refused_lint(exc: PomonaError, lang: str) -> dict[str, list[dict[str, object]]]:
    if isinstance(exc, AdeProfileInvalidError):
        return _lint(list(exc.context.get("findings", [])), lang)  # type: ignore[call-overload]
    return {}


def _answer(answer: str, lang: str) -> dict[str, str]:
    """ABM's answer for one serial of an assignment: ``ok`` / ``pending`` / ``refused``, the reason code
    it means, and its text in the visitor's language."""
    if answer == "SUCCESS":
        return {"kind": "ok", "code": "", "text": translate(lang, "console.ade.answer.ok")}
    if answer == "pending":
        return {"kind": "pending", "code": "", "text": translate(lang, "console.ade.answer.pending")}
    code = ANSWER_CODES.get(answer, answer)
    return {"kind": "refused", "code": code, "text": title_of(code, lang)}


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
        Route(f"{base}/profiles/{{profile}}", s(a.show_profile), methods=["GET"]),
        Route(f"{base}/profiles/{{profile}}", post(a.edit_profile), methods=["POST"]),
        Route(f"{base}/profiles/{{profile}}/assign", post(a.assign), methods=["POST"]),
        Route(f"{base}/profiles/{{profile}}/default", post(a.make_default), methods=["POST"]),
        Route(f"{base}/profiles/{{profile}}/rules", post(a.add_rule), methods=["POST"]),
        Route(f"{base}/profiles/{{profile}}/rules/{{rule}}/remove", post(a.remove_rule), methods=["POST"]),
    ]


__all__ = ["ApplePages", "apple_routes"]
