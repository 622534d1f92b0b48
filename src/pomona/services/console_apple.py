"""The console's Apple settings page (issue 13, page 7): the push certificate, the ABM server tokens and
the ADE profiles, read and changed through the use cases the CLI runs (`pomona apns csr|upload`,
`pomona abm keypair|token upload|sync|profile create`).

Every change goes through :meth:`ConsoleService.change_scope` first: another tenant's is NOT_FOUND, and a
role without the action (helpdesk) is refused, the refusal recorded (an event and ``console.refused``).
The push certificate and the ABM tokens are the ``certificate`` action; ADE profiles, which decide how
devices enroll, are ``policy``. Every change, and every refusal of the use case itself (a certificate of
another topic, a profile the linter blocks), leaves an audit entry with who, what and from where; the
use cases leave their own events (APNS_TOPIC_CHANGED, DEP_PROFILE_REJECTED ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pomona.domain.ade_profile import AuthMode, ProfileFinding
from pomona.domain.checks import Finding
from pomona.domain.errors import AbmError, InvalidInputError, NotFoundError, PomonaError
from pomona.domain.models import Step, Tenant
from pomona.i18n import msg
from pomona.ports import AbmListing, AdeProfileCount, AdeProfileDevice, AdminAccount, HasEvents
from pomona.services.abm import (
    EVERY_TOKEN,
    AbmService,
    ProfileReport,
    ProfileView,
    ReconcileReport,
    RuleView,
    SyncReport,
    TokenStatus,
)
from pomona.services.apns_lifecycle import REPLACE_CONFIRMATION, ApnsLifecycle, CsrResult, UploadResult
from pomona.services.base import ServiceBase
from pomona.services.console import ConsoleService


class AppleStores(HasEvents, Protocol):
    """What the pages read themselves: the per-profile device counts and one profile's devices (the rest
    through the use cases)."""

    @property
    def abm_listing(self) -> AbmListing: ...


@dataclass(frozen=True)
class ProfileRow:
    """An ADE profile on the page, with its devices: wanted (assigned by Pomona), held (ABM shows it),
    failing (ABM refused the last assignment)."""

    view: ProfileView
    counts: AdeProfileCount


@dataclass(frozen=True)
class AppleView:
    tenant: Tenant
    push: dict[str, Any]  # ApnsLifecycle.status
    days_left: int | None  # until the push certificate expires (None: no certificate)
    push_findings: list[Finding]
    canary: dict[str, Any] | None  # the canary after the last upload, as recorded
    has_keypair: bool
    tokens: list[TokenStatus]
    profiles: list[ProfileRow]


#: A profile page lists this many devices at a time; an assignment takes at most MAX_SERIALS serials.
PAGE_SIZE = 50
MAX_SERIALS = 1000
SERIAL_MAX_LEN = 64  # abm_devices.serial_number


@dataclass(frozen=True)
class ProfilePage:
    """One ADE profile's page: the profile, the linter's findings on it as kept, its assignment rules,
    the tenant's tokens, and a keyset page of the devices it applies to (``next_after``: the serial to
    continue after, None on the last page). No counts: they read every device (the list page has them)."""

    tenant: Tenant
    profile: ProfileView
    findings: list[ProfileFinding]
    rules: list[RuleView]
    tokens: list[TokenStatus]
    devices: list[AdeProfileDevice]
    after: str | None
    next_after: str | None


@dataclass
class AppleSettingsService(ServiceBase[AppleStores]):
    console: ConsoleService
    apns: ApnsLifecycle
    abm: AbmService

    # --- reading ----------------------------------------------------------------------------------
    def view(self, account: AdminAccount, tenant_ref: str) -> AppleView:
        t = self.console.scope(account, tenant_ref)
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            counts = uow.abm_listing.profile_counts(t.id)
        days = None if t.push_not_after is None else (t.push_not_after - now).days
        return AppleView(
            tenant=t,
            push=self.apns.status(t.id),
            days_left=days,
            push_findings=self.apns.check(t.id, now),
            canary=self.apns.last_canary(t.id),
            has_keypair=self.abm.certificate(t.id) is not None,
            tokens=self.abm.tokens(t.id),
            profiles=[
                ProfileRow(v, counts.get(v.record.id, AdeProfileCount())) for v in self.abm.profiles(t.id)
            ],
        )

    # --- the push certificate ---------------------------------------------------------------------
    def csr(self, account: AdminAccount, tenant_ref: str, email: str | None, source: str) -> CsrResult:
        """A new push key and its CSR (`pomona apns csr`): the file to have signed for Apple's portal."""
        t = self.console.change_scope(account, tenant_ref, "certificate", source)
        r = self.apns.csr(t.id, email=email or None)
        self.console.audit(account.email, "apns.csr", t.id, t.push_topic, source, {"email": email or None})
        return r

    def upload_push(
        self,
        account: AdminAccount,
        tenant_ref: str,
        cert: bytes,
        source: str,
        *,
        apple_id: str | None = None,
        password: str | None = None,
        replace: bool = False,
        confirmed: bool = False,
    ) -> UploadResult:
        """Apple's certificate (`pomona apns upload`: a PEM with the pending CSR's key, or a .p12 and its
        password): a renewal keeps the topic; another topic is refused (APNS_TOPIC_CHANGED) unless ``replace`` and ``confirmed``."""
        t = self.console.change_scope(account, tenant_ref, "certificate", source)
        if replace and not confirmed:
            raise self._invalid(account, t, "apns.upload", "error.console.replace_confirm", "confirm", source)
        if not cert.strip():
            raise self._invalid(account, t, "apns.upload", "error.console.no_file", "cert", source)
        try:
            r = self.apns.upload(
                t.id,
                cert,
                password=password.encode() if password else None,
                apple_id=apple_id or None,
                replace=replace,
                confirm=REPLACE_CONFIRMATION if replace and confirmed else None,
            )
        except PomonaError as exc:
            self._refused(account, t, "apns.upload", exc, source)
            raise
        action = "apns.replace" if r.replaced else "apns.renew" if r.renewed else "apns.upload"
        detail = {"not_after": r.not_after, "apple_id": r.apple_id, "reenroll_required": r.reenroll_required}
        self.console.audit(account.email, action, t.id, r.topic, source, detail)
        return r

    # --- ABM ----------------------------------------------------------------------------------------
    def keypair(self, account: AdminAccount, tenant_ref: str, source: str) -> bytes:
        """The certificate to upload to ABM (`pomona abm keypair`: made on first use, then the same)."""
        t = self.console.change_scope(account, tenant_ref, "certificate", source)
        pem, made = self.abm.keypair(t.id)
        if made:
            self.console.audit(account.email, "abm.keypair", t.id, None, source, {})
        return pem

    def upload_token(
        self, account: AdminAccount, tenant_ref: str, data: bytes, name: str | None, source: str
    ) -> TokenStatus:
        """ABM's server token (.p7m, `pomona abm token upload`): DEP_TOKEN_INVALID or DEP_TOKEN_EXPIRED."""
        t = self.console.change_scope(account, tenant_ref, "certificate", source)
        if not data.strip():
            raise self._invalid(account, t, "abm.token_upload", "error.console.no_file", "token", source)
        try:
            st = self.abm.upload_token(t.id, data, name or None)
        except PomonaError as exc:
            self._refused(account, t, "abm.token_upload", exc, source)
            raise
        detail = {"expiry": st.info.access_token_expiry.isoformat()}
        self.console.audit(account.email, "abm.token_upload", t.id, st.info.name, source, detail)
        return st

    def sync(
        self, account: AdminAccount, tenant_ref: str, token: str | None, source: str
    ) -> list[SyncReport]:
        """Sync now (`pomona abm sync`), in the request: each token's report; Apple's failure is raised
        after its event, and kept on the token."""
        t = self.console.change_scope(account, tenant_ref, "certificate", source)
        try:
            done = self.abm.sync(t.id, token=token or None)
        except AbmError as exc:
            self._refused(account, t, "abm.sync", exc, source)
            raise
        detail = {"tokens": [r.token for r in done], "fetched": sum(r.fetched for r in done)}
        self.console.audit(account.email, "abm.sync", t.id, token, source, detail)
        return done

    def create_profile(
        self,
        account: AdminAccount,
        tenant_ref: str,
        name: str,
        source: str,
        *,
        auth: AuthMode,
        supervised: bool,
        removable: bool,
        await_configured: bool,
        skip: Sequence[str],
        default: bool,
        token: str | None,
    ) -> ProfileReport:
        """An ADE profile (`pomona abm profile create`): linted first (a blocking finding refuses it,
        DEP_PROFILE_REJECTED, and nothing is sent), then defined at ABM under its tokens and assigned."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        try:
            r = self.abm.create_profile(
                t.id,
                name,
                auth=auth,
                supervised=supervised,
                removable=removable,
                await_configured=await_configured,
                skip=skip,
                default=default,
                token=token or None,
            )
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.create", exc, source, target=name)
            raise
        detail = {"auth": auth.value, "default": default, "defined": len(r.profile.record.definitions)}
        self.console.audit(account.email, "ade_profile.create", t.id, name, source, detail)
        return r

    # --- one ADE profile: edit, assignment, per-device status -----------------------------------------
    def _profile(self, t: Tenant, profile_id: str) -> ProfileView:
        """The tenant's profile by id: another tenant's, or none, is NOT_FOUND."""
        found = next((v for v in self.abm.profiles(t.id) if v.record.id == profile_id), None)
        if found is None:
            raise NotFoundError(msg("abm.error.no_profile", name=profile_id[:64]), profile=profile_id[:64])
        return found

    def profile_page(
        self, account: AdminAccount, tenant_ref: str, profile_id: str, after: str | None = None
    ) -> ProfilePage:
        """The profile, its findings and rules, and :data:`PAGE_SIZE` of its devices after ``after``."""
        t = self.console.scope(account, tenant_ref)
        v = self._profile(t, profile_id)
        rules = [r for r in self.abm.rules(t.id) if r.rule.profile_id == profile_id]
        after = (after or "").strip()[:SERIAL_MAX_LEN] or None
        with self.db.unit_of_work(readonly=True) as uow:
            rows = uow.abm_listing.profile_devices(
                t.id, profile_id, v.record.definitions, after=after, limit=PAGE_SIZE + 1
            )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        return ProfilePage(
            tenant=t,
            profile=v,
            findings=self.abm.profile_findings(t.id, v.record.name),
            rules=rules,
            tokens=self.abm.tokens(t.id),
            devices=rows,
            after=after,
            next_after=rows[-1].serial if more and rows else None,
        )

    def edit_profile(
        self,
        account: AdminAccount,
        tenant_ref: str,
        profile_id: str,
        source: str,
        *,
        name: str,
        auth: AuthMode,
        supervised: bool,
        removable: bool,
        await_configured: bool,
        skip: Sequence[str],
    ) -> ProfileReport:
        """Save the profile's fields (`pomona abm profile edit`): linted first (a blocking finding
        refuses it, DEP_PROFILE_REJECTED, nothing sent or kept), then defined again at ABM under its
        tokens and assigned again to its devices."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        v = self._profile(t, profile_id)
        try:
            r = self.abm.edit_profile(
                t.id,
                v.record.name,
                auth=auth,
                supervised=supervised,
                removable=removable,
                await_configured=await_configured,
                skip=list(skip),
                rename=name if name != v.record.name else None,
            )
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.edit", exc, source, target=v.record.name)
            raise
        detail = {
            "auth": auth.value,
            "renamed_from": v.record.name if name != v.record.name else None,
            "defined": len(r.profile.record.definitions),
            "assigned": r.reconciled.assigned,
            "assign_failed": r.reconciled.failed,
        }
        self.console.audit(account.email, "ade_profile.edit", t.id, name, source, detail)
        return r

    def make_default(
        self, account: AdminAccount, tenant_ref: str, profile_id: str, token: str | None, source: str
    ) -> ProfileReport:
        """Make the profile the default of one token (its name), or of every token (None): the
        devices ABM gives without a profile get it (`pomona abm profile edit --default`)."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        v = self._profile(t, profile_id)
        try:
            r = self.abm.edit_profile(
                t.id, v.record.name, default=True, token=EVERY_TOKEN if token is None else token
            )
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.default", exc, source, target=v.record.name)
            raise
        detail = {"token": token, "assigned": r.reconciled.assigned, "assign_failed": r.reconciled.failed}
        self.console.audit(account.email, "ade_profile.default", t.id, v.record.name, source, detail)
        return r

    def assign(
        self, account: AdminAccount, tenant_ref: str, profile_id: str, serials: Sequence[str], source: str
    ) -> ReconcileReport:
        """Assign the profile to these serials (`pomona abm assign`): each serial's answer from ABM
        (SUCCESS, FAILED, NOT_ACCESSIBLE, a DEP_* code, or ``pending``: not listed by ABM yet)."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        v = self._profile(t, profile_id)
        wanted = list(dict.fromkeys(s.strip() for s in serials if s.strip()))
        if not wanted:
            raise self._invalid(
                account, t, "ade_profile.assign", "error.console.no_serials", "serials", source
            )
        if len(wanted) > MAX_SERIALS or any(len(s) > SERIAL_MAX_LEN for s in wanted):
            exc = InvalidInputError(msg("error.console.too_many_serials", limit=MAX_SERIALS), field="serials")
            self.record_failure(t.id, Step.ADMIN, exc.reason, detail={"action": "ade_profile.assign"})
            self._refused(account, t, "ade_profile.assign", exc, source, target=v.record.name)
            raise exc
        try:
            r = self.abm.assign(t.id, v.record.name, wanted)
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.assign", exc, source, target=v.record.name)
            raise
        refused = sorted(s for s, a in r.answers.items() if a not in ("SUCCESS", "pending"))
        detail = {"serials": len(wanted), "assigned": r.assigned, "refused": refused[:20]}
        self.console.audit(account.email, "ade_profile.assign", t.id, v.record.name, source, detail)
        return r

    def add_rule(
        self,
        account: AdminAccount,
        tenant_ref: str,
        profile_id: str,
        field_name: str,
        value: str,
        priority: int | None,
        source: str,
    ) -> tuple[RuleView, ReconcileReport]:
        """An assignment rule for this profile (`pomona abm rule add`): devices whose model, family or
        order number match get it, after explicit assignments and before the default."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        v = self._profile(t, profile_id)
        try:
            view, r = self.abm.add_rule(t.id, v.record.name, field_name, value, priority=priority)
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.rule_add", exc, source, target=v.record.name)
            raise
        detail = {**view.to_json(), "assigned": r.assigned, "assign_failed": r.failed}
        self.console.audit(account.email, "ade_profile.rule_add", t.id, v.record.name, source, detail)
        return view, r

    def remove_rule(
        self, account: AdminAccount, tenant_ref: str, profile_id: str, rule_id: str, source: str
    ) -> tuple[RuleView, ReconcileReport]:
        """Forget one of this profile's rules (`pomona abm rule remove`); another profile's is NOT_FOUND."""
        t = self.console.change_scope(account, tenant_ref, "policy", source)
        v = self._profile(t, profile_id)
        if not any(r.rule.id == rule_id for r in self.abm.rules(t.id) if r.rule.profile_id == profile_id):
            raise NotFoundError(msg("abm.error.no_rule", rule=rule_id[:64]), rule=rule_id[:64])
        try:
            view, r = self.abm.remove_rule(t.id, rule_id)
        except PomonaError as exc:
            self._refused(account, t, "ade_profile.rule_remove", exc, source, target=v.record.name)
            raise
        detail = {**view.to_json(), "assigned": r.assigned, "assign_failed": r.failed}
        self.console.audit(account.email, "ade_profile.rule_remove", t.id, v.record.name, source, detail)
        return view, r

    def _invalid(
        self, account: AdminAccount, t: Tenant, action: str, key: str, field: str, source: str
    ) -> InvalidInputError:
        """A form this page refuses before the use case runs: its event (INVALID_INPUT, in its own
        transaction) and audit entry, and the error to raise."""
        exc = InvalidInputError(msg(key), field=field)
        self.record_failure(t.id, Step.ADMIN, exc.reason, detail={"action": action, "field": field})
        self._refused(account, t, action, exc, source)
        return exc

    def _refused(
        self,
        account: AdminAccount,
        t: Tenant,
        action: str,
        exc: PomonaError,
        source: str,
        target: str | None = None,
    ) -> None:
        """A change the use case refused: an audit entry naming the action and the reason code (the
        use case left the event)."""
        detail = {"action": action, "reason": exc.reason.value}
        self.console.audit(account.email, "console.change_refused", t.id, target or action, source, detail)


__all__ = ["MAX_SERIALS", "PAGE_SIZE", "AppleSettingsService", "AppleView", "ProfilePage", "ProfileRow"]
