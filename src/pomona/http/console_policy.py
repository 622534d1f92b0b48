"""The console's enrollment restrictions page (issue 13, page 5), over
:mod:`pomona.services.console_policy`:

    GET   /console/t/{tenant}/restrictions                       device type and device limit restrictions
                                                                 by priority, a create form per kind, and the
                                                                 policy dry run for a UPN (+ platform, OS)
    POST  /console/t/{tenant}/restrictions                       create one (kind, name, priority, group,
                                                                 settings)
    GET   /console/t/{tenant}/restrictions/{id}                  one restriction: its settings, its groups
                                                                 (?gq= narrows the group picker), the dry run
    POST  /console/t/{tenant}/restrictions/{id}                  edit its settings (and priority)
    POST  /console/t/{tenant}/restrictions/{id}/priority         a new priority (the list's form)
    POST  /console/t/{tenant}/restrictions/{id}/groups           assign a group by name
    POST  /console/t/{tenant}/restrictions/{id}/groups/remove    unassign a group
    GET   /console/t/{tenant}/restrictions/{id}/delete           the confirmation; POST deletes

Every form carries the session's CSRF token and the dry run's question (upn, platform, os), so the page a
change comes back to answers it again with the change applied. The policy service decides what a value
means and whether it is allowed: this module only reads the form (a number that is not one is passed on
as one the service refuses, after the role is checked). A refusal of the use case (a taken priority, a
limit out of range, a group that does not exist, the Default's priority) renders the page again with its
reason code and the catalogue's text beside the form it came from; a role or tenant refusal is the
console's 403 or 404 page. Every page works without JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pomona.domain.errors import (
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    PomonaError,
    describe,
)
from pomona.domain.policy import MAX_DEVICE_LIMIT, Access, RestrictionKind
from pomona.http.console import PLATFORMS, Console, title_of
from pomona.ports import AdminAccount
from pomona.presenters import error_text
from pomona.services.console import can
from pomona.services.console_policy import RestrictionPagesService

#: The notices after a change (?done=...).
DONE: tuple[str, ...] = ("priority", "created", "edited", "assigned", "unassigned", "deleted")
#: The dry run's question, kept through every form and redirect.
DRY_KEYS: tuple[str, ...] = ("upn", "platform", "os")
ACCESS_FIELDS: tuple[str, ...] = ("ios", "ipados", "ios_personal", "ipados_personal")
OS_FIELDS: tuple[str, ...] = ("ios_min_os", "ios_max_os", "ipados_min_os", "ipados_max_os")
_NOT_A_NUMBER = -1  # what a priority that is not a number becomes: the policy service refuses it


def _number(raw: str) -> int:
    """A whole number as typed, or _NOT_A_NUMBER (the service's range check says why it is refused)."""
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) <= 9 else _NOT_A_NUMBER


def settings_of(kind: RestrictionKind, form: Mapping[str, str], *, clearing: bool) -> dict[str, object]:
    """The settings a form gives for a restriction of ``kind``, as the policy service takes them: access
    choices (allow/block), OS versions ('' clears one when ``clearing``, else is not given), the limit."""
    out: dict[str, object] = {}
    if kind is RestrictionKind.PLATFORM:
        for key in ACCESS_FIELDS:
            value = form.get(key, "").strip()[:16]
            if value:
                out[key] = value
        for key in OS_FIELDS:
            if key in form:
                value = form[key].strip()[:32]
                if value or clearing:
                    out[key] = value
    else:
        raw = form.get("limit", "").strip()[:16]
        if raw:
            out["limit"] = int(raw) if raw.isdigit() and len(raw) <= 6 else raw
    return out


class RestrictionPages:
    def __init__(self, console: Console, svc: RestrictionPagesService) -> None:
        self.c = console
        self.svc = svc

    # --- plumbing ---------------------------------------------------------------------------------
    def ref(self, request: Request) -> str:
        return str(request.path_params["tenant"])

    def rid(self, request: Request) -> str:
        return str(request.path_params["restriction"])[:64]

    def page_url(self, ref: str, rid: str | None = None, **query: str) -> str:
        base = f"/console/t/{quote(ref, safe='')}/restrictions" + (f"/{quote(rid, safe='')}" if rid else "")
        kept = {k: v for k, v in query.items() if v}
        return base + (f"?{urlencode(kept)}" if kept else "")

    def back(self, ref: str, form: Mapping[str, str], done: str, rid: str | None = None) -> Response:
        """Back to the list (or a restriction's page) with the dry run's question and the notice."""
        dry = {k: form.get(k, "")[:320] for k in DRY_KEYS}
        return RedirectResponse(self.page_url(ref, rid, **dry, done=done), status_code=303)

    def refusal(self, request: Request, exc: PomonaError) -> dict[str, str]:
        e = describe(exc)
        return {"code": e.reason.value, "text": error_text(e, self.c.lang(request))}

    @staticmethod
    def refused(exc: PomonaError) -> bool:
        """A refusal of the use case, shown beside its form: every one but NOT_FOUND for the tenant or
        the restriction (the console's 404 page). A group named as typed that does not exist is one."""
        return not isinstance(exc, NotFoundError) or exc.context.get("group") is not None

    @staticmethod
    def status(exc: PomonaError) -> int:
        return 409 if isinstance(exc, ConflictError) else 422

    async def dry(self, request: Request, account: AdminAccount) -> dict[str, Any]:
        """The dry run's question from the query string and its answer (helpdesk too)."""
        q = request.query_params
        ref = self.ref(request)
        upn = (q.get("upn") or "").strip()[:320]
        platform = q.get("platform") or ""
        platform = platform if platform in PLATFORMS else ""
        os_version = (q.get("os") or "").strip()[:32]
        decision = None
        problem = ""
        if upn:
            try:
                decision = await run_in_threadpool(
                    lambda: self.svc.dry_run(
                        account, ref, upn, platform=platform or None, os_version=os_version or None
                    )
                )
            except InvalidInputError as exc:
                problem = error_text(describe(exc), self.c.lang(request))
        lang = self.c.lang(request)
        return {
            "upn": upn,
            "platform": platform,
            "platforms": PLATFORMS,
            "os_version": os_version,
            "decision": decision,
            "problem": problem,
            "dry_query": urlencode({"upn": upn, "platform": platform, "os": os_version}) if upn else "",
            "reason_title": title_of(decision.reason.value, lang) if decision and decision.reason else "",
        }

    def notice(self, request: Request) -> str | None:
        done = request.query_params.get("done")
        return done if done in DONE else None

    async def list_page(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        ref = self.ref(request)
        view = await run_in_threadpool(self.svc.restrictions, account, ref)
        ctx: dict[str, Any] = {"create_error": None, "create_kind": "", "form": {}}
        ctx.update(extra)
        return self.c.render(
            request,
            "restrictions.html",
            account,
            status,
            tenant=view.tenant,
            view=view,
            notice=self.notice(request),
            access_values=[a.value for a in Access],
            max_limit=MAX_DEVICE_LIMIT,
            **(await self.dry(request, account)),
            **ctx,
        )

    async def detail_page(
        self, request: Request, account: AdminAccount, status: int = 200, **extra: Any
    ) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        search = (request.query_params.get("gq") or "").strip()[:255]
        x = await run_in_threadpool(self.svc.restriction, account, ref, rid, search)
        ctx: dict[str, Any] = {"edit_error": None, "group_error": None, "form": {}}
        ctx.update(extra)
        return self.c.render(
            request,
            "restriction.html",
            account,
            status,
            tenant=x.tenant,
            x=x,
            r=x.restriction,
            group_search=search,
            notice=self.notice(request),
            access_values=[a.value for a in Access],
            max_limit=MAX_DEVICE_LIMIT,
            **(await self.dry(request, account)),
            **ctx,
        )

    # --- pages ------------------------------------------------------------------------------------
    async def show(self, request: Request, account: AdminAccount) -> Response:
        return await self.list_page(request, account)

    async def detail(self, request: Request, account: AdminAccount) -> Response:
        return await self.detail_page(request, account)

    async def create(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref = self.ref(request)
        kind = next((k for k in RestrictionKind if k.value == form.get("type")), None)
        try:
            await run_in_threadpool(
                lambda: self.svc.create(
                    account,
                    ref,
                    form.get("type", "")[:16],  # another is refused by the policy service
                    self.c.client_ip(request),
                    priority=_number(form.get("priority", "")),
                    name=form.get("name", "")[:300],
                    group=form.get("group", "")[:300],
                    settings={} if kind is None else settings_of(kind, form, clearing=False),
                )
            )
        except (InvalidInputError, ConflictError, NotFoundError) as exc:
            if not self.refused(exc):
                raise
            return await self.list_page(
                request,
                account,
                self.status(exc),
                create_error=self.refusal(request, exc),
                create_kind="" if kind is None else kind.value,
                form={k: v[:300] for k, v in form.items() if k != "csrf"},
            )
        return self.back(ref, form, "created")

    async def edit(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        kind = next((k for k in RestrictionKind if k.value == form.get("type")), None)
        try:
            raw = form.get("priority", "").strip()
            await run_in_threadpool(
                lambda: self.svc.edit(
                    account,
                    ref,
                    rid,
                    self.c.client_ip(request),
                    new_priority=_number(raw) if raw else None,
                    settings={} if kind is None else settings_of(kind, form, clearing=True),
                )
            )
        except (InvalidInputError, ConflictError, NotFoundError) as exc:
            if not self.refused(exc):
                raise
            return await self.detail_page(
                request,
                account,
                self.status(exc),
                edit_error=self.refusal(request, exc),
                form={k: v[:300] for k, v in form.items() if k != "csrf"},
            )
        return self.back(ref, form, "edited", rid)

    async def set_priority(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        priority = _number(form.get("priority", ""))
        await run_in_threadpool(self.svc.set_priority, account, ref, rid, priority, self.c.client_ip(request))
        return self.back(ref, form, "priority")

    async def assign(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        return await self._groups(request, account, form, remove=False)

    async def unassign(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        return await self._groups(request, account, form, remove=True)

    async def _groups(
        self, request: Request, account: AdminAccount, form: dict[str, str], *, remove: bool
    ) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        group = form.get("group", "")[:300]
        try:
            await run_in_threadpool(
                lambda: self.svc.assign(account, ref, rid, group, self.c.client_ip(request), remove=remove)
            )
        except (InvalidInputError, ConflictError, NotFoundError) as exc:
            if not self.refused(exc):
                raise
            return await self.detail_page(
                request,
                account,
                self.status(exc),
                group_error=self.refusal(request, exc),
                form={"group": group},
            )
        return self.back(ref, form, "unassigned" if remove else "assigned", rid)

    async def delete_page(self, request: Request, account: AdminAccount) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        x = await run_in_threadpool(self.svc.restriction, account, ref, rid)
        if not can(account, "policy"):  # the refusal is recorded by the POST, which is the change
            raise ForbiddenError(f"the {account.role} role may not change policy", action="policy")
        dry = {k: (request.query_params.get(k) or "")[:320] for k in DRY_KEYS}
        return self.c.render(
            request, "restriction_delete.html", account, tenant=x.tenant, x=x, r=x.restriction, dry=dry
        )

    async def delete(self, request: Request, account: AdminAccount, form: dict[str, str]) -> Response:
        ref, rid = self.ref(request), self.rid(request)
        if form.get("confirm") != "yes":  # not confirmed: back to the confirmation
            dry = {k: form.get(k, "")[:320] for k in DRY_KEYS}
            return RedirectResponse(self.page_url(ref, rid) + "/delete?" + urlencode(dry), status_code=303)
        try:
            await run_in_threadpool(self.svc.delete, account, ref, rid, self.c.client_ip(request))
        except (InvalidInputError, ConflictError, NotFoundError) as exc:
            if not self.refused(exc):
                raise
            return await self.detail_page(
                request, account, self.status(exc), edit_error=self.refusal(request, exc)
            )
        return self.back(ref, form, "deleted")


def policy_routes(c: Console) -> list[Route]:
    """The page's routes, for create_console (before its catch-all)."""
    p = RestrictionPages(c, c.p.console_policy)
    s, post = c.signed, c.posted
    base = "/console/t/{tenant}/restrictions"
    one = base + "/{restriction}"
    return [
        Route(base, s(p.show), methods=["GET"]),
        Route(base, post(p.create), methods=["POST"]),
        Route(one, s(p.detail), methods=["GET"]),
        Route(one, post(p.edit), methods=["POST"]),
        Route(f"{one}/priority", post(p.set_priority), methods=["POST"]),
        Route(f"{one}/groups", post(p.assign), methods=["POST"]),
        Route(f"{one}/groups/remove", post(p.unassign), methods=["POST"]),
        Route(f"{one}/delete", s(p.delete_page), methods=["GET"]),
        Route(f"{one}/delete", post(p.delete), methods=["POST"]),
    ]


__all__ = ["RestrictionPages", "policy_routes"]
