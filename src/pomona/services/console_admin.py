"""The console's corporate identifiers page (issue 13, page 6) and administration page (page 10), over
the use cases the CLI runs: `pomona corporate import|list`, `pomona admin create|list|disable|enable`,
`pomona token create|list|revoke`, `pomona enroll-token list|revoke`, `pomona webhook set|show|test`.

Every change goes through :meth:`ConsoleService.change_scope` first: another tenant's is NOT_FOUND, and a
role without the action is refused (helpdesk: every change here), the refusal recorded (an event and
``console.refused``). Corporate identifiers are the ``policy`` action; accounts, API tokens, enrollment
links and the webhook are ``accounts`` (the operator's and the tenant admin's).

What a tenant admin may do is bounded by the tenant in the URL: accounts of this tenant only (admin or
helpdesk, never an operator), tokens of this tenant only (a server-wide token is the operator's), links
of this tenant. An id of another tenant's token, link or account answers NOT_FOUND, as an unknown one.
Every change, and every refusal of a use case, leaves an audit entry with who, what and from where.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pomona.domain.errors import ConflictError, InvalidInputError, NotFoundError, PomonaError
from pomona.domain.models import ApiToken, CorporateIdentifier, EnrollmentToken, Step, Tenant, User
from pomona.i18n import msg
from pomona.ports import AdminAccount, HasEvents
from pomona.services.admin import AdminService, IssuedApiToken
from pomona.services.apns_lifecycle import Notifier
from pomona.services.base import ServiceBase
from pomona.services.console import ConsoleService
from pomona.services.policy import ImportReport, PolicyService

CORPORATE_PAGE = 50
LINKS_SHOWN = 100
#: The roles a tenant's page may give an account (an operator is made with `pomona admin create`).
TENANT_ROLES = ("admin", "helpdesk")
TOKEN_DAYS = (7, 30, 90, 365)  # the expiry choices of the form (0: until revoked)


@dataclass(frozen=True)
class CorporatePage:
    tenant: Tenant
    rows: list[CorporateIdentifier]
    offset: int
    more: bool


@dataclass(frozen=True)
class AdminView:
    tenant: Tenant
    accounts: list[AdminAccount]
    tokens: list[ApiToken]  # this tenant's, and (for an operator) the server-wide ones
    links: list[tuple[EnrollmentToken, User | None]]
    webhook: dict[str, Any]  # Notifier.show: url and the latest deliveries
    now: datetime


@dataclass
class AdminPagesService(ServiceBase[HasEvents]):
    console: ConsoleService
    admin: AdminService
    policy: PolicyService
    notifier: Notifier

    # --- corporate identifiers --------------------------------------------------------------------
    def corporate(self, account: AdminAccount, tenant_ref: str, offset: int = 0) -> CorporatePage:
        t = self.console.scope(account, tenant_ref)
        offset = max(0, offset)
        rows = self.policy.list_corporate(t.id, limit=CORPORATE_PAGE + 1, offset=offset)
        return CorporatePage(t, rows[:CORPORATE_PAGE], offset, len(rows) > CORPORATE_PAGE)

    def import_corporate(
        self, account: AdminAccount, tenant_ref: str, text: str, source: str
    ) -> ImportReport:
        """A CSV of identifiers (`pomona corporate import`): all rows or none, each row reported."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        try:
            r = self.policy.import_corporate(t.id, text)
        except PomonaError as exc:
            self._failed(account, t, "corporate.import", exc, source)
            raise
        if r.errors:
            rows = [e["row"] for e in r.errors][:20]
            self.record_failure(
                t.id,
                Step.ADMIN,
                InvalidInputError.reason,
                detail={"action": "corporate.import", "rows": rows},
            )
            self.console.audit(
                account.email,
                "console.change_refused",
                t.id,
                "corporate.import",
                source,
                {"action": "corporate.import", "reason": InvalidInputError.reason.value, "rows": rows},
            )
            return r
        detail = {"imported": r.imported, "unchanged": r.unchanged}
        self.console.audit(account.email, "corporate.import", t.id, None, source, detail)
        return r

    # --- the administration page ------------------------------------------------------------------
    def view(self, account: AdminAccount, tenant_ref: str) -> AdminView:
        t = self.console.scope(account, tenant_ref)
        accounts = [a for a, _ in self.console.list_accounts(t.id)]
        tokens = [
            x
            for x in self.admin.list_api_tokens()
            if x.tenant_id == t.id or (x.tenant_id is None and account.tenant_id is None)
        ]
        return AdminView(
            tenant=t,
            accounts=accounts,
            tokens=tokens,
            links=self.admin.list_enrollment_tokens(t.id, limit=LINKS_SHOWN),
            webhook=self.notifier.show(t.id, limit=10),
            now=self.clock.now(),
        )

    def create_account(
        self,
        account: AdminAccount,
        tenant_ref: str,
        email: str,
        password: str,
        role: str,
        source: str,
    ) -> AdminAccount:
        """An account of this tenant, admin or helpdesk (`pomona admin create --tenant`)."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        try:
            if role not in TENANT_ROLES:
                raise InvalidInputError(msg("error.console.admin_role"), field="role")
            return self.console.create_account(
                email, password, role, t.id, actor=account.email, source=source
            )
        except PomonaError as exc:
            self._refused(account, t, "admin.create", exc, source, target=email.strip().lower()[:320])
            raise

    def set_enabled(
        self, account: AdminAccount, tenant_ref: str, account_id: str, enabled: bool, source: str
    ) -> AdminAccount:
        """Disable (its sessions end) or enable an account of this tenant (`pomona admin disable`); one's
        own account is not disabled from here."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        found = next((a for a, _ in self.console.list_accounts(t.id) if a.id == account_id), None)
        if found is None:
            raise NotFoundError(msg("error.console.no_account"), account=account_id)
        if found.id == account.id and not enabled:
            exc = ConflictError(msg("error.console.own_account"), account=account_id)
            self._refused(account, t, "admin.disable", exc, source, target=found.email)
            raise exc
        return self.console.set_enabled(found.email, enabled, actor=account.email, source=source)

    def create_token(
        self,
        account: AdminAccount,
        tenant_ref: str,
        name: str,
        days: int,
        server_wide: bool,
        source: str,
    ) -> IssuedApiToken:
        """An admin API token (`pomona token create`): this tenant's, or (an operator's) server-wide;
        ``days`` 0: until revoked. Its secret is returned once and never stored."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        try:
            if server_wide and account.tenant_id is not None:
                raise InvalidInputError(msg("error.console.server_token"), field="scope")
            if not name or len(name) > 100:
                raise InvalidInputError(msg("error.console.token_name"), field="name")
            issued = self.admin.create_api_token(
                None if server_wide else t.id,
                name,
                expires_in=timedelta(days=days) if days > 0 else None,
            )
        except PomonaError as exc:
            self._refused(account, t, "token.create", exc, source, target=name[:100])
            raise
        expires = None if issued.token.expires_at is None else issued.token.expires_at.isoformat()
        detail = {
            "token_id": issued.token.id,
            "scope": "server" if server_wide else "tenant",
            "expires": expires,
        }
        self.console.audit(account.email, "token.create", t.id, name, source, detail)
        return issued

    def revoke_token(self, account: AdminAccount, tenant_ref: str, token_id: str, source: str) -> ApiToken:
        """Revoke one of this tenant's tokens (or, for an operator, a server-wide one) by id (`pomona token
        revoke`): another tenant's is NOT_FOUND."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        tok = next((x for x in self.view(account, tenant_ref).tokens if x.id == token_id), None)
        if tok is None:
            raise NotFoundError(msg("error.token.not_found", token_id=token_id[:64]), token_id=token_id[:64])
        done = self.admin.revoke_api_token(tok.id, tenant_ref=tok.tenant_id)
        self.console.audit(account.email, "token.revoke", t.id, tok.name, source, {"token_id": tok.id})
        return done

    def revoke_link(
        self, account: AdminAccount, tenant_ref: str, link_id: str, source: str
    ) -> EnrollmentToken:
        """Revoke one of this tenant's enrollment links by id (`pomona enroll-token revoke`)."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        done = self.admin.revoke_enrollment_token(t.id, link_id)
        self.console.audit(account.email, "enroll_token.revoke", t.id, done.id, source, {})
        return done

    def set_webhook(self, account: AdminAccount, tenant_ref: str, url: str, secret: str, source: str) -> None:
        """The tenant's webhook URL and signing secret (`pomona webhook set`)."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        try:
            self.notifier.configure(t.id, url, secret)
        except PomonaError as exc:
            self._refused(account, t, "webhook.set", exc, source, target=url[:255])
            raise
        self.console.audit(account.email, "webhook.set", t.id, url, source, {})

    def test_webhook(self, account: AdminAccount, tenant_ref: str, source: str) -> dict[str, Any]:
        """Send a test notice now, once (`pomona webhook test`): the recorded delivery (status, HTTP
        status, error). No webhook: NOT_FOUND."""
        t = self.console.change_scope(account, tenant_ref, "accounts", source)
        findings = [{"code": "TEST", "severity": "info", "facts": {}}]
        r = self.notifier.notify(t.id, findings, attempts=1)
        if r["status"] == "no_webhook":
            raise NotFoundError(msg("error.webhook.none", tenant=t.name), tenant=t.name)
        detail = {"status": r["status"], "http_status": r.get("http_status"), "error": r.get("error")}
        self.console.audit(account.email, "webhook.test", t.id, None, source, detail)
        return r

    def refuse_import(self, account: AdminAccount, tenant_ref: str, exc: PomonaError, source: str) -> None:
        """A CSV the page refuses before the use case (no file, too large, not UTF-8): the role's scope
        first (helpdesk: 403, another tenant: 404), then its event and audit entry."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        self._failed(account, t, "corporate.import", exc, source)

    def _failed(self, account: AdminAccount, t: Tenant, action: str, exc: PomonaError, source: str) -> None:
        """A refusal this service found itself: its event (own transaction) and its audit entry."""
        self.record_failure(t.id, Step.ADMIN, exc.reason, detail={"action": action})
        self._refused(account, t, action, exc, source)

    def _refused(
        self,
        account: AdminAccount,
        t: Tenant,
        action: str,
        exc: PomonaError,
        source: str,
        target: str | None = None,
    ) -> None:
        detail = {"action": action, "reason": exc.reason.value}
        self.console.audit(account.email, "console.change_refused", t.id, target or action, source, detail)


__all__ = ["TENANT_ROLES", "TOKEN_DAYS", "AdminPagesService", "AdminView", "CorporatePage"]
