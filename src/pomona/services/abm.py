"""Apple Business Manager: the tenant's ABM key pair, its server tokens, and the device sync.

Tokens. ``keypair`` makes (once) the certificate the admin uploads to ABM; ``upload_token`` opens the
``.p7m`` ABM returns with that key (AbmKeys, pki/abm.py) and keeps its OAuth credentials sealed
(AbmStore). A ``.p7m`` that does not open, or holds no credentials, is DEP_TOKEN_INVALID; one past its
expiry DEP_TOKEN_EXPIRED; ``tokens`` says which expire within :data:`EXPIRY_WARNING` (health warns).

Sync, per token (Apple: https://developer.apple.com/documentation/devicemanagement/device-assignment):

1. without a cursor (the first sync, ``--full``, or after DEP_CURSOR_EXPIRED) a full fetch pages
   ``/server/devices`` until ``more_to_follow`` is false; a device we listed that it no longer lists
   is marked deleted;
2. then ``/devices/sync`` follows the cursor until ``more_to_follow`` is false;
3. EXPIRED_CURSOR / INVALID_CURSOR leaves an event (DEP_CURSOR_EXPIRED) and falls back to step 1.

Each page is upserted in its own transaction (AbmStore.upsert_devices, bulk), so a long fetch holds no
lock for long and a failure keeps what was fetched. Every failure leaves an event with its reason code
and is kept on the token (``last_error``) until a sync succeeds. ``sync_all`` runs every token of every
tenant: the server's schedule (services/jobs.py, POMONA_ABM_SYNC_INTERVAL).

ADE profiles and their assignment (issue 12):

- ``create_profile`` lints the profile (``domain.ade_profile.lint``: a blocking finding refuses it,
  DEP_PROFILE_REJECTED, and nothing is sent), defines it at ABM (``POST /profile``) under every token it
  is for, and keeps it with Apple's UUID per token. Its ``url`` and ``configuration_web_url`` are the
  server's (``Urls.ade_enroll`` / ``Urls.ade_web``). A tenant without a token keeps it undefined: the
  next reconciliation defines it (the founding document's "profile made before the token was uploaded").
- ``assign`` records the profile wanted on each serial, then reconciles.
- ``add_rule`` / ``remove_rule``: "devices whose model, device_family or order_number match X get profile
  P" (a case-insensitive glob; the first rule by priority wins), then reconcile.
- Reconciliation runs after each sync (and after an assignment, an edit or a rule change): every device
  the token lists whose Apple-side ``profile_uuid``/``profile_status`` is not the wanted profile's is
  assigned again. The wanted profile is the explicit assignment; else the first matching rule's; else the
  token's default, for a device without a profile (``empty`` or ``removed``: it is then adopted) or one a
  removed or no longer matching rule had given its profile. Each try is a timeline entry; a device's tries back off
  (``assign_backoff`` doubled per try, at most :data:`BACKOFF_MAX`) and after :data:`REPORT_AFTER` tries
  without ABM showing the profile it is a health finding (DEP_PROFILE_NOT_ASSIGNED). PROFILE_NOT_FOUND
  (DEP_PROFILE_NOT_FOUND, an event) defines the profile again and assigns once more.

Other MDM servers (issue 12): a device a sync sees deleted or disowned, or whose assignment ABM answers
NOT_ACCESSIBLE, is asked about (``POST /devices``, device details). NOT_ACCESSIBLE there is ABM's own
answer that the device is assigned to another MDM server: DEP_DEVICE_ASSIGNED_ELSEWHERE on its timeline,
as a failed event, and as a health finding, until ABM lists the device again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Final, Literal, Protocol

from pomona.domain.ade_profile import (
    AdeProfile,
    AuthMode,
    ProfileFinding,
    from_settings,
    is_sendable,
    lint,
    to_definition,
    to_settings,
)
from pomona.domain.checks import AbmTokenState, Finding, Severity, abm_token_findings
from pomona.domain.errors import (
    AbmCursorExpiredError,
    AbmError,
    AbmProfileNotFoundError,
    AbmProfileRejectedError,
    AbmTokenExpiredError,
    AbmTokenFileError,
    AbmTokenFileExpiredError,
    AdeProfileInvalidError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from pomona.domain.models import Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import (
    RULE_FIELDS,
    AbmAssignment,
    AbmAssignmentRule,
    AbmClient,
    AbmConnector,
    AbmDeviceRecord,
    AbmHistoryEntry,
    AbmKeys,
    AbmProfileRecord,
    AbmStore,
    AbmTokenInfo,
    Clock,
    HasEvents,
    TenantStore,
    Transactions,
)
from pomona.protocol.dep import AbmDevice, decode_server_token
from pomona.protocol.dep_profile import encode_profile_definition
from pomona.protocol.errors import ProtocolError
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.enrollment import Urls

log = logging.getLogger("pomona.abm")

#: A token that expires within this is reported (health, ``pomona abm token list``).
EXPIRY_WARNING: Final = timedelta(days=30)
PAGE_LIMIT: Final = 1000  # Apple's maximum for /devices/sync (and its default for /server/devices)

TokenState = Literal["ok", "expiring", "expired"]
#: After this many assignments without ABM showing the profile, the device is reported (health).
REPORT_AFTER: Final = 3
BACKOFF_MAX: Final = timedelta(hours=6)
ASSIGN_CHUNK: Final = 1000  # serials per PUT /profile/devices
#: Apple's profile_status values that mean the device has the profile it was given.
HELD: Final = frozenset({"assigned", "pushed"})
#: Apple's op_type of a device that left this server's list (a sync's answer).
GONE: Final = frozenset({"deleted", "disowned"})
#: Apple's answer for a device this server may not touch (assignment, device details).
NOT_ACCESSIBLE: Final = "NOT_ACCESSIBLE"
#: ``edit_profile(token=EVERY_TOKEN)``: the profile is for every token of the tenant again.
EVERY_TOKEN: Final = "*"


class AbmStores(HasEvents, Protocol):
    @property
    def tenants(self) -> TenantStore: ...
    @property
    def abm(self) -> AbmStore: ...


@dataclass(frozen=True, slots=True)
class TokenStatus:
    """A token as ``pomona abm token list`` shows it: its record, and its expiry state now."""

    info: AbmTokenInfo
    state: TokenState
    days_left: int

    @property
    def reason(self) -> ReasonCode | None:
        return None if self.state == "ok" else ReasonCode.DEP_TOKEN_EXPIRED

    def to_json(self) -> dict[str, object]:
        i = self.info

        def iso(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {
            "id": i.id,
            "name": i.name,
            "consumer_key": i.consumer_key,
            "access_token_expiry": i.access_token_expiry.isoformat(),
            "state": self.state,
            "days_left": self.days_left,
            "reason": None if self.reason is None else self.reason.value,
            "created_at": i.created_at.isoformat(),
            "last_sync_at": iso(i.last_sync_at),
            "last_full_sync_at": iso(i.last_full_sync_at),
            "last_error": i.last_error,
            "last_error_at": iso(i.last_error_at),
            "has_cursor": i.cursor is not None,
        }


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """What a sync has done so far (the CLI's progress bar)."""

    token: str
    phase: Literal["full", "sync"]
    fetched: int
    more: bool


@dataclass(frozen=True, slots=True)
class SyncReport:
    """One token's sync."""

    tenant: str
    token: str
    full: bool
    fetched: int = 0
    pages: int = 0
    added: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    cursor_expired: bool = False  # the cursor was gone: this sync fell back to a full fetch
    assigned: int = 0  # profile assignments ABM accepted after the sync (reconciliation)
    assign_failed: int = 0  # and those it refused

    def to_json(self) -> dict[str, object]:
        return {
            "assigned": self.assigned,
            "assign_failed": self.assign_failed,
            "tenant": self.tenant,
            "token": self.token,
            "full": self.full,
            "fetched": self.fetched,
            "pages": self.pages,
            "added": self.added,
            "modified": self.modified,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
            "cursor_expired": self.cursor_expired,
        }


class _Counter:
    def __init__(self, tenant: str, token: str, full: bool) -> None:
        self.r = SyncReport(tenant, token, full)
        self.gone: list[str] = []  # serials ABM deleted (or disowned) in this sync: asked about after it

    def add(self, **n: int) -> None:
        self.r = replace(self.r, **{k: getattr(self.r, k) + v for k, v in n.items()})


Progress = Callable[[SyncProgress], None]


class AbmService(ServiceBase[AbmStores]):
    def __init__(
        self,
        db: Transactions[AbmStores],
        clock: Clock,
        keys: AbmKeys,
        connector: AbmConnector,
        *,
        page_limit: int = PAGE_LIMIT,
        urls: Urls | None = None,
        assign_backoff: float = 300.0,
        sync_interval: float = 0.0,
    ) -> None:
        super().__init__(db, clock)
        self.keys = keys
        self.connector = connector
        self.page_limit = page_limit
        self.urls = urls or Urls("https://localhost")
        self.assign_backoff = timedelta(seconds=assign_backoff)
        # Health: a token that has not synced for two scheduled intervals is DEP_SYNC_STALE (0: no schedule).
        self.stale_after = timedelta(seconds=2 * sync_interval) if sync_interval > 0 else None

    # --- the key pair and the tokens ---------------------------------------------------------------
    def _tenant(self, ref: str) -> Tenant:
        with self.db.unit_of_work(readonly=True) as uow:
            return find_tenant(uow.tenants, ref)

    def keypair(self, tenant_ref: str) -> tuple[bytes, bool]:
        """The certificate (PEM) to upload to ABM, made on first use: (PEM, made now)."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            existing = uow.abm.keypair(tn.id)
        if existing is not None:
            return existing[0], False
        cert_pem, key_pem = self.keys.make_keypair(f"Pomona ABM {tn.name}")
        with self.db.unit_of_work() as uow:
            if (again := uow.abm.keypair(tn.id)) is not None:  # made meanwhile by another process
                return again[0], False
            uow.abm.set_keypair(tn.id, cert_pem, key_pem, self.clock.now())
        return cert_pem, True

    def certificate(self, tenant_ref: str) -> bytes | None:
        """The certificate (PEM) made by :meth:`keypair`, or None when there is none yet (made by nothing)."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            pair = uow.abm.keypair(tn.id)
        return None if pair is None else pair[0]

    def upload_token(self, tenant_ref: str, data: bytes, name: str | None = None) -> TokenStatus:
        """Open and keep a server token (.p7m) of ABM's; DEP_TOKEN_INVALID or DEP_TOKEN_EXPIRED."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            pair = uow.abm.keypair(tn.id)
            names = {t.name for t in uow.abm.tokens(tn.id)}
        if pair is None:
            self.record_failure(tn.id, Step.DEP, ReasonCode.DEP_TOKEN_INVALID, detail={"why": "no ABM key"})
            raise AbmTokenFileError(
                "this tenant has no ABM key: run `pomona abm keypair` and upload its certificate to ABM first",
                tenant=tn.name,
            )
        try:
            credentials = decode_server_token(self.keys.decrypt_token(data, *pair))
        except (ProtocolError, ValueError) as exc:
            self.record_failure(tn.id, Step.DEP, ReasonCode.DEP_TOKEN_INVALID, detail={"why": str(exc)[:200]})
            raise AbmTokenFileError(
                f"the server token does not open with this tenant's ABM key ({exc})", tenant=tn.name
            ) from None
        now = self.clock.now()
        if credentials.access_token_expiry <= now:
            self.record_failure(
                tn.id,
                Step.DEP,
                ReasonCode.DEP_TOKEN_EXPIRED,
                detail={"expiry": credentials.access_token_expiry.isoformat()},
            )
            raise AbmTokenFileExpiredError(
                f"the server token expired on {credentials.access_token_expiry:%Y-%m-%d}: download a new one "
                "from Apple Business Manager",
                tenant=tn.name,
            )
        if name is None:
            n = len(names) + 1
            while f"abm-{n}" in names:
                n += 1
            name = f"abm-{n}"
        elif name in names:
            raise ConflictError(f"the tenant already has an ABM token named {name!r}", name=name)
        info = AbmTokenInfo(
            str(uuid.uuid4()), tn.id, name, credentials.consumer_key, credentials.access_token_expiry, now
        )
        with self.db.unit_of_work() as uow:
            uow.abm.add_token(info, credentials)
            uow.events.append(self.ok_event(tn.id, Step.DEP, detail={"token": name, "action": "upload"}))
        return self._status(info)

    def _status(self, info: AbmTokenInfo) -> TokenStatus:
        left = info.access_token_expiry - self.clock.now()
        state: TokenState = (
            "expired" if left <= timedelta(0) else "expiring" if left <= EXPIRY_WARNING else "ok"
        )
        return TokenStatus(info, state, max(left.days, 0))

    def tokens(self, tenant_ref: str) -> list[TokenStatus]:
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return [self._status(t) for t in uow.abm.tokens(tn.id)]

    def _token(self, tenant_id: str, ref: str) -> AbmTokenInfo:
        with self.db.unit_of_work(readonly=True) as uow:
            tokens = uow.abm.tokens(tenant_id)
        for t in tokens:
            if ref in (t.id, t.name):
                return t
        raise NotFoundError(f"no ABM token {ref!r}", token=ref)

    def remove_token(self, tenant_ref: str, ref: str) -> AbmTokenInfo:
        tn = self._tenant(tenant_ref)
        t = self._token(tn.id, ref)
        with self.db.unit_of_work() as uow:
            uow.abm.remove_token(tn.id, t.id)
            uow.events.append(self.ok_event(tn.id, Step.DEP, detail={"token": t.name, "action": "remove"}))
        return t

    def check(self, tenant_ref: str, now: datetime) -> list[Finding]:
        """Health's check (services.checks.TenantCheck): each token's expiry (warned from 30 days ahead),
        its last sync's failure, if the last sync failed, a sync that has not succeeded for two scheduled
        intervals (DEP_SYNC_STALE), and the devices whose assignment keeps failing."""
        with self.db.unit_of_work(readonly=True) as uow:
            tn = find_tenant(uow.tenants, tenant_ref)
            tokens = uow.abm.tokens(tn.id)
        findings = abm_token_findings(
            (
                AbmTokenState(
                    t.name, t.access_token_expiry, t.last_error, t.last_error_at, t.last_sync_at, t.created_at
                )
                for t in tokens
            ),
            now,
            stale_after=self.stale_after,
        )
        return findings + self.assignment_findings(tn.id)

    # --- devices -----------------------------------------------------------------------------------
    def devices(
        self, tenant_ref: str, *, serial: str | None = None, limit: int = 1000, offset: int = 0
    ) -> list[AbmDeviceRecord]:
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.abm.devices(tn.id, serial=serial, limit=limit, offset=offset)

    def history(self, tenant_ref: str, serial: str) -> list[AbmHistoryEntry]:
        """The device's ABM timeline, oldest first (what diagnosis reads)."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.abm.history(tn.id, serial)

    def device_count(self, tenant_ref: str) -> int:
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.abm.device_count(tn.id)

    # --- sync --------------------------------------------------------------------------------------
    def sync(
        self,
        tenant_ref: str,
        *,
        full: bool = False,
        token: str | None = None,
        progress: Progress | None = None,
    ) -> list[SyncReport]:
        """Sync every token of the tenant (or the one named); the first failure is raised after its
        event is recorded."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            tokens = uow.abm.tokens(tn.id)
        if token is not None:
            tokens = [self._token(tn.id, token)]
        return [self.sync_token(tn, t, full=full, progress=progress) for t in tokens]

    def sync_all(self) -> int:
        """Every token of every tenant (the schedule); failures are recorded and logged, not raised.
        Returns how many tokens synced."""
        with self.db.unit_of_work(readonly=True) as uow:
            work = [(tn, uow.abm.tokens(tn.id)) for tn in uow.tenants.list()]
        done = 0
        for tn, tokens in work:
            for t in tokens:
                try:
                    self.sync_token(tn, t)
                    done += 1
                except AbmError as exc:
                    log.warning(
                        "ABM sync of %s/%s failed: %s %s", tn.name, t.name, exc.reason.value, exc.detail
                    )
        return done

    def sync_token(
        self, tn: Tenant, info: AbmTokenInfo, *, full: bool = False, progress: Progress | None = None
    ) -> SyncReport:
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            credentials = uow.abm.credentials(info.id)
        if credentials is None:
            raise NotFoundError(f"no ABM token {info.name!r}", token=info.name)
        counter = _Counter(tn.name, info.name, full or info.cursor is None)
        try:
            if credentials.access_token_expiry <= now:
                raise AbmTokenExpiredError(
                    f"the server token {info.name!r} expired on {credentials.access_token_expiry:%Y-%m-%d}",
                    token=info.name,
                )
            client = self.connector.connect(credentials)
            cursor = info.cursor
            if cursor is not None and not full:
                try:
                    cursor = self._follow(tn, info, client, cursor, counter, progress)
                except AbmCursorExpiredError as exc:
                    # Healed here, but recorded: diagnosis and the admin see it happened.
                    self.record_failure(
                        tn.id,
                        Step.DEP,
                        exc.reason,
                        detail={"token": info.name, "code": exc.context.get("code")},
                    )
                    counter.r = replace(counter.r, cursor_expired=True, full=True)
                    cursor = None
            if cursor is None or full:
                cursor = self._full(tn, info, client, counter, progress)
                cursor = self._follow(tn, info, client, cursor, counter, progress)
        except AbmError as exc:
            with self.db.unit_of_work() as uow:
                uow.abm.sync_failed(info.id, exc.reason.value, self.clock.now())
            self.record_failure(
                tn.id,
                Step.DEP,
                exc.reason,
                detail={"token": info.name, "code": exc.context.get("code"), "detail": exc.detail[:200]},
            )
            raise
        with self.db.unit_of_work() as uow:
            uow.abm.sync_done(info.id, cursor, self.clock.now(), full=counter.r.full)
        self._check_elsewhere(tn, info, client, counter.gone)
        try:
            done = self._reconcile_token(tn, info, client)
        except AbmError as exc:  # the sync itself succeeded: the next one reconciles again
            self.record_failure(
                tn.id,
                Step.DEP,
                exc.reason,
                detail={"token": info.name, "during": "assignment", "detail": exc.detail[:200]},
            )
            log.warning("ABM assignment after the sync of %s/%s failed: %s", tn.name, info.name, exc.detail)
            return counter.r
        return replace(counter.r, assigned=done.assigned, assign_failed=done.failed)

    def _store(self, tn: Tenant, info: AbmTokenInfo, devices: list[AbmDevice], counter: _Counter) -> None:
        counter.gone.extend(d.serial_number for d in devices if d.op_type in GONE)
        with self.db.unit_of_work() as uow:
            done = uow.abm.upsert_devices(tn.id, info.id, devices, self.clock.now())
        counter.add(
            fetched=len(devices),
            pages=1,
            added=done.added,
            modified=done.modified,
            deleted=done.deleted,
            unchanged=done.unchanged,
        )

    def _full(
        self,
        tn: Tenant,
        info: AbmTokenInfo,
        c: AbmClient,
        counter: _Counter,
        progress: Progress | None,
    ) -> str:
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = c.fetch_devices(cursor, self.page_limit)
            seen.update(d.serial_number for d in page.devices)
            self._store(tn, info, page.devices, counter)
            cursor = page.cursor
            if progress is not None:
                progress(SyncProgress(info.name, "full", counter.r.fetched, page.more_to_follow))
            if not page.more_to_follow:
                break
        # What we listed under this token that ABM no longer lists was removed meanwhile: kept, deleted.
        with self.db.unit_of_work(readonly=True) as uow:
            gone = sorted(uow.abm.listed_serials(tn.id, info.id) - seen)
        if gone:
            now = self.clock.now()
            self._store(tn, info, [AbmDevice(s, op_type="deleted", op_date=now) for s in gone], counter)
            counter.add(fetched=-len(gone), pages=-1)
        return cursor

    def _follow(
        self,
        tn: Tenant,
        info: AbmTokenInfo,
        c: AbmClient,
        cursor: str,
        counter: _Counter,
        progress: Progress | None,
    ) -> str:
        while True:
            page = c.sync_devices(cursor, self.page_limit)
            if page.devices:
                self._store(tn, info, page.devices, counter)
            cursor = page.cursor
            if progress is not None:
                progress(SyncProgress(info.name, "sync", counter.r.fetched, page.more_to_follow))
            if not page.more_to_follow:
                return cursor

    # --- ADE profiles ------------------------------------------------------------------------------
    def _ade(self, tn: Tenant, name: str, settings: Mapping[str, object]) -> AdeProfile:
        """The kept profile at this server's URLs (the one place they are built: ``Urls``)."""
        return from_settings(
            name, settings, url=self.urls.ade_enroll(tn.id), web_url=self.urls.ade_web(tn.id), org_magic=tn.id
        )

    def profiles(self, tenant_ref: str) -> list[ProfileView]:
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            names = {t.id: t.name for t in uow.abm.tokens(tn.id)}
            return [ProfileView(p, names) for p in uow.abm.profiles(tn.id)]

    def _find_profile(self, tenant_id: str, name: str | None) -> AbmProfileRecord:
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.abm.profiles(tenant_id)
        if name is None and len(found) == 1:
            return found[0]
        if name is None and found:
            raise InvalidInputError(
                msg("abm.error.profile_name_needed", names=", ".join(p.name for p in found)), field="name"
            )
        for p in found:
            if p.name == name:
                return p
        raise NotFoundError(msg("abm.error.no_profile", name=name or "-"), profile=name)

    def profile_findings(
        self, tenant_ref: str, name: str, users_require_mfa: bool = False
    ) -> list[ProfileFinding]:
        """The linter's findings on a kept profile as it is now (read only: no event)."""
        tn = self._tenant(tenant_ref)
        record = self._find_profile(tn.id, name)
        return lint(self._ade(tn, record.name, record.settings), users_require_mfa=users_require_mfa)

    def _lint(self, tn: Tenant, profile: AdeProfile, users_require_mfa: bool) -> list[ProfileFinding]:
        """The linter's findings; a blocking one refuses the profile (an event, DEP_PROFILE_REJECTED)."""
        findings = lint(profile, users_require_mfa=users_require_mfa)
        if not is_sendable(findings):
            rules = [f.rule.value for f in findings if f.blocking]
            self.record_failure(
                tn.id,
                Step.DEP,
                ReasonCode.DEP_PROFILE_REJECTED,
                detail={"profile": profile.name, "lint": rules},
            )
            raise AdeProfileInvalidError(
                msg("abm.error.profile_lint", name=profile.name, rules=", ".join(rules)),
                findings=[f.to_json() for f in findings],
            )
        return findings

    def create_profile(
        self,
        tenant_ref: str,
        name: str,
        *,
        auth: AuthMode = AuthMode.MODERN,
        await_configured: bool = False,
        supervised: bool = True,
        removable: bool = False,
        skip: Sequence[str] = (),
        default: bool = False,
        token: str | None = None,
        users_require_mfa: bool = False,
    ) -> ProfileReport:
        """Lint, define at ABM under every token it is for (none yet: the reconciliation defines it
        once a token is uploaded), and keep it; ``default`` makes it its token's default."""
        tn = self._tenant(tenant_ref)
        token_id = None if token is None else self._token(tn.id, token).id
        with self.db.unit_of_work(readonly=True) as uow:
            if any(p.name == name for p in uow.abm.profiles(tn.id)):
                raise ConflictError(msg("abm.error.profile_exists", name=name), name=name)
        settings = to_settings(
            AdeProfile(
                name=name,
                url="",
                org_magic="",
                auth=auth,
                is_mdm_removable=removable,
                is_supervised=supervised,
                await_device_configured=await_configured,
                skip_setup_items=tuple(skip),
            )
        )
        now = self.clock.now()
        record = AbmProfileRecord(str(uuid.uuid4()), tn.id, name, settings, now, now, token_id, default)
        return self._define_and_keep(tn, record, users_require_mfa, "create")

    def edit_profile(
        self,
        tenant_ref: str,
        name: str | None = None,
        *,
        auth: AuthMode | None = None,
        await_configured: bool | None = None,
        supervised: bool | None = None,
        removable: bool | None = None,
        skip: Sequence[str] | None = None,
        default: bool | None = None,
        users_require_mfa: bool = False,
        rename: str | None = None,
        token: str | None = None,
    ) -> ProfileReport:
        """Change a profile (what is None is kept), define it again at ABM (a new UUID per token), and
        assign it again to its devices. ``rename`` gives it another name (one the tenant does not use);
        ``token`` puts it under one token (its name or id), or :data:`EVERY_TOKEN`."""
        tn = self._tenant(tenant_ref)
        record = self._find_profile(tn.id, name)
        if rename is not None and rename != record.name:
            with self.db.unit_of_work(readonly=True) as uow:
                if any(p.name == rename for p in uow.abm.profiles(tn.id)):
                    raise ConflictError(msg("abm.error.profile_exists", name=rename), name=rename)
            record = replace(record, name=rename)
        if token is not None:
            record = replace(record, token_id=None if token == EVERY_TOKEN else self._token(tn.id, token).id)
        changes: dict[str, object] = {}
        if auth is not None:
            changes["auth"] = auth.value
        for key, value in (
            ("await_device_configured", await_configured),
            ("is_supervised", supervised),
            ("is_mdm_removable", removable),
        ):
            if value is not None:
                changes[key] = value
        if skip is not None:
            changes["skip_setup_items"] = list(skip)
        record = replace(
            record,
            settings={**record.settings, **changes},
            is_default=record.is_default if default is None else default,
            updated_at=self.clock.now(),
        )
        return self._define_and_keep(tn, record, users_require_mfa, "edit")

    def _define_and_keep(
        self, tn: Tenant, record: AbmProfileRecord, users_require_mfa: bool, action: str
    ) -> ProfileReport:
        profile = self._ade(tn, record.name, record.settings)
        findings = self._lint(tn, profile, users_require_mfa)
        with self.db.unit_of_work(readonly=True) as uow:
            tokens = [t for t in uow.abm.tokens(tn.id) if record.token_id in (None, t.id)]
        clients: dict[str, AbmClient] = {}
        defined: dict[str, str] = {}
        for t in tokens:
            clients[t.id] = self._connect(t)
            defined[t.id] = self._define(tn, t, clients[t.id], profile)
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            uow.abm.save_profile(record)
            uow.abm.drop_definitions(record.id)
            for token_id, profile_uuid in defined.items():
                uow.abm.set_definition(record.id, token_id, profile_uuid, now)
            if record.is_default:
                uow.abm.clear_default(tn.id, record.token_id, record.id)
            uow.events.append(
                self.ok_event(
                    tn.id,
                    Step.DEP,
                    detail={"profile": record.name, "action": action, "defined": len(defined)},
                )
            )
        done = ReconcileReport()
        for t in tokens:
            done += self._reconcile_token(tn, t, clients[t.id])
        with self.db.unit_of_work(readonly=True) as uow:
            names = {t.id: t.name for t in uow.abm.tokens(tn.id)}
            kept = next(p for p in uow.abm.profiles(tn.id) if p.id == record.id)
        return ProfileReport(ProfileView(kept, names), findings, done)

    def _connect(self, info: AbmTokenInfo) -> AbmClient:
        with self.db.unit_of_work(readonly=True) as uow:
            credentials = uow.abm.credentials(info.id)
        if credentials is None:
            raise NotFoundError(f"no ABM token {info.name!r}", token=info.name)
        return self.connector.connect(credentials)

    def _define(self, tn: Tenant, info: AbmTokenInfo, client: AbmClient, profile: AdeProfile) -> str:
        """POST /profile; Apple's refusal leaves an event (DEP_PROFILE_REJECTED) and is raised."""
        try:
            return client.define_profile(encode_profile_definition(to_definition(profile)))
        except AbmProfileRejectedError as exc:
            self.record_failure(
                tn.id,
                Step.DEP,
                exc.reason,
                detail={"profile": profile.name, "token": info.name, "code": exc.context.get("code")},
            )
            raise

    # --- assignment, reconciled --------------------------------------------------------------------
    def assign(self, tenant_ref: str, profile: str, serials: Sequence[str]) -> ReconcileReport:
        """Want ``profile`` on these serials (an explicit assignment, tried again now), then reconcile.
        A serial ABM does not list yet is assigned when a sync first lists it (answer ``pending``)."""
        tn = self._tenant(tenant_ref)
        record = self._find_profile(tn.id, profile)
        with self.db.unit_of_work() as uow:
            uow.abm.save_assignments(
                tn.id, [AbmAssignment(tn.id, s, record.id, explicit=True) for s in serials]
            )
            uow.events.append(
                self.ok_event(
                    tn.id,
                    Step.DEP,
                    detail={"profile": record.name, "action": "assign", "serials": len(serials)},
                )
            )
        done = self.reconcile(tn.id)
        answers = {s: done.answers.get(s, "pending") for s in serials}
        return ReconcileReport(done.assigned, done.failed, answers)

    def reconcile(self, tenant_ref: str) -> ReconcileReport:
        """Every token of the tenant, from the devices as the last sync left them."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            tokens = uow.abm.tokens(tn.id)
        done = ReconcileReport()
        for t in tokens:
            done += self._reconcile_token(tn, t, self._connect(t))
        return done

    def _reconcile_token(self, tn: Tenant, info: AbmTokenInfo, client: AbmClient) -> ReconcileReport:
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            profiles = [p for p in uow.abm.profiles(tn.id) if p.token_id in (None, info.id)]
            if not profiles:
                return ReconcileReport()
            states = uow.abm.profile_states(tn.id, info.id)
            wanted = uow.abm.assignments(tn.id)
            by_id = {p.id: p for p in profiles}
            rules = [r for r in uow.abm.rules(tn.id) if r.profile_id in by_id]
            facts = uow.abm.device_facts(tn.id, info.id) if rules else {}
        default = next((p for p in profiles if p.is_default and p.token_id == info.id), None) or next(
            (p for p in profiles if p.is_default and p.token_id is None), None
        )
        todo: dict[str, list[AbmAssignment]] = {}
        settled: list[AbmAssignment] = []
        for serial, profile_uuid, status in states:
            a = wanted.get(serial)
            rule = None if a is not None and a.explicit else first_rule(rules, facts.get(serial, {}))
            if a is not None and a.explicit:  # explicit > rule > the token's default
                if a.profile_id not in by_id:
                    continue  # a profile of another token
                p = by_id[a.profile_id]
            elif rule is not None:
                p = by_id[rule.profile_id]
                if a is None or a.profile_id != p.id:
                    a = AbmAssignment(tn.id, serial, p.id, explicit=False, rule_id=rule.id)
            elif a is not None and a.rule_id is None:  # the default, adopted earlier: kept
                if a.profile_id not in by_id:
                    continue
                p = by_id[a.profile_id]
            elif default is not None and (
                a is not None  # its rule is gone, or no longer matches: the default applies
                or not profile_uuid
                or status in ("", "empty", "removed")
            ):
                p, a = default, AbmAssignment(tn.id, serial, default.id, explicit=False)  # new or re-added
            else:
                continue
            if profile_uuid and profile_uuid == p.definitions.get(info.id) and status in HELD:
                if a.attempts or a.last_error or a.next_try_at:
                    settled.append(replace(a, attempts=0, next_try_at=None, last_error=None))
                continue
            if a.next_try_at is not None and a.next_try_at > now:
                continue  # backing off
            todo.setdefault(p.id, []).append(a)
        if settled:
            with self.db.unit_of_work() as uow:
                uow.abm.save_assignments(tn.id, settled)
        done = ReconcileReport()
        for profile_id, items in todo.items():
            done += self._assign_profile(tn, info, client, by_id[profile_id], items)
        return done

    def _redefine(self, tn: Tenant, info: AbmTokenInfo, client: AbmClient, p: AbmProfileRecord) -> str:
        profile_uuid = self._define(tn, info, client, self._ade(tn, p.name, p.settings))
        with self.db.unit_of_work() as uow:
            uow.abm.set_definition(p.id, info.id, profile_uuid, self.clock.now())
        return profile_uuid

    def _put(self, client: AbmClient, profile_uuid: str, serials: list[str]) -> dict[str, str]:
        answers: dict[str, str] = {}
        for i in range(0, len(serials), ASSIGN_CHUNK):
            answers.update(client.assign_profile(profile_uuid, serials[i : i + ASSIGN_CHUNK]))
        return answers

    def _assign_profile(
        self,
        tn: Tenant,
        info: AbmTokenInfo,
        client: AbmClient,
        p: AbmProfileRecord,
        items: list[AbmAssignment],
    ) -> ReconcileReport:
        serials = [a.serial_number for a in items]
        profile_uuid = p.definitions.get(info.id)
        answers: dict[str, str]
        try:
            if profile_uuid is None:  # made before this token was uploaded: define it under it now
                profile_uuid = self._redefine(tn, info, client, p)
            answers = self._put(client, profile_uuid, serials)
        except AbmProfileNotFoundError as exc:
            self.record_failure(
                tn.id,
                Step.DEP,
                exc.reason,
                detail={"profile": p.name, "token": info.name, "profile_uuid": profile_uuid},
            )
            try:
                profile_uuid = self._redefine(tn, info, client, p)
                answers = self._put(client, profile_uuid, serials)
            except (AbmProfileNotFoundError, AbmProfileRejectedError) as again:
                answers = dict.fromkeys(serials, again.reason.value)
        except AbmProfileRejectedError as exc:
            answers = dict.fromkeys(serials, exc.reason.value)
        done = self._record_tries(tn, info, p, profile_uuid or "", items, answers)
        self._check_elsewhere(tn, info, client, [s for s, a in answers.items() if a == NOT_ACCESSIBLE])
        return done

    def _check_elsewhere(
        self, tn: Tenant, info: AbmTokenInfo, client: AbmClient, serials: Sequence[str]
    ) -> None:
        """Ask ABM about devices it deleted, disowned or would not let us assign (``POST /devices``):
        one it answers NOT_ACCESSIBLE for is assigned to another MDM server. Each newly found one gets a
        timeline entry and a failed event (DEP_DEVICE_ASSIGNED_ELSEWHERE); health reports it until ABM
        lists the device again (a later timeline entry). A failure to ask is logged, not raised: the
        sync itself succeeded."""
        if not serials:
            return
        answers: dict[str, str] = {}
        try:
            for i in range(0, len(serials), ASSIGN_CHUNK):
                answers.update(client.device_status(serials[i : i + ASSIGN_CHUNK]))
        except AbmError as exc:
            log.warning("ABM device details for %s/%s failed: %s", tn.name, info.name, exc.detail)
            return
        code = ReasonCode.DEP_DEVICE_ASSIGNED_ELSEWHERE
        with self.db.unit_of_work(readonly=True) as uow:
            known = {s for s, _ in uow.abm.flagged(tn.id, code.value)}
        found = sorted({s for s in serials if answers.get(s) == NOT_ACCESSIBLE} - known)
        if not found:
            return
        now = self.clock.now()
        entry = AbmHistoryEntry(now, "elsewhere", None, "", "", None, None, "", info.id, code.value)
        with self.db.unit_of_work() as uow:
            uow.abm.add_history(tn.id, [(s, entry) for s in found])
        for serial in found:
            self.record_failure(
                tn.id,
                Step.DEP,
                code,
                serial=serial,
                detail={"token": info.name, "response_status": NOT_ACCESSIBLE},
            )

    def assigned_elsewhere(self, tenant_ref: str, serial: str | None = None) -> list[tuple[str, datetime]]:
        """(serial, since) of the devices ABM gives to another MDM server, as last asked (by serial)."""
        tn = self._tenant(tenant_ref)
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.abm.flagged(tn.id, ReasonCode.DEP_DEVICE_ASSIGNED_ELSEWHERE.value, serial=serial)

    def _record_tries(
        self,
        tn: Tenant,
        info: AbmTokenInfo,
        p: AbmProfileRecord,
        profile_uuid: str,
        items: list[AbmAssignment],
        answers: Mapping[str, str],
    ) -> ReconcileReport:
        """Each try: the assignment's attempts and next try (backoff), and a timeline entry."""
        now = self.clock.now()
        assigned = failed = 0
        out: dict[str, str] = {}
        reported: list[AbmAssignment] = []
        tried: list[AbmAssignment] = []
        entries: list[tuple[str, AbmHistoryEntry]] = []
        for a in items:
            answer = answers.get(a.serial_number, "FAILED")
            ok = answer == "SUCCESS"
            assigned, failed = assigned + ok, failed + (not ok)
            out[a.serial_number] = answer
            attempts = a.attempts + 1
            wait = min(self.assign_backoff * 2 ** min(attempts - 1, 16), BACKOFF_MAX)
            a = replace(
                a,
                attempts=attempts,
                next_try_at=now + wait,
                last_try_at=now,
                last_error=None if ok else answer,
            )
            tried.append(a)
            entries.append(
                (
                    a.serial_number,
                    AbmHistoryEntry(
                        now,
                        "assign" if ok else "assign-failed",
                        None,
                        "assigned" if ok else "",
                        profile_uuid,
                        now if ok else None,
                        None,
                        "",
                        info.id,
                        None if ok else answer,
                    ),
                )
            )
            if attempts == REPORT_AFTER:
                reported.append(a)
        with self.db.unit_of_work() as uow:
            uow.abm.save_assignments(tn.id, tried)
            uow.abm.add_history(tn.id, entries)
        for a in reported:
            self.record_failure(
                tn.id,
                Step.DEP,
                ReasonCode.DEP_PROFILE_NOT_ASSIGNED,
                serial=a.serial_number,
                detail={"profile": p.name, "attempts": a.attempts, "answer": a.last_error or "SUCCESS"},
            )
        return ReconcileReport(assigned, failed, out)

    # --- assignment rules ----------------------------------------------------------------------------
    def _rule_views(self, tenant_id: str) -> list[RuleView]:
        with self.db.unit_of_work(readonly=True) as uow:
            names = {p.id: p.name for p in uow.abm.profiles(tenant_id)}
            return [RuleView(r, names.get(r.profile_id, r.profile_id)) for r in uow.abm.rules(tenant_id)]

    def rules(self, tenant_ref: str) -> list[RuleView]:
        """The tenant's assignment rules, in the order they are tried."""
        return self._rule_views(self._tenant(tenant_ref).id)

    def add_rule(
        self, tenant_ref: str, profile: str, field_name: str, value: str, *, priority: int | None = None
    ) -> tuple[RuleView, ReconcileReport]:
        """ "Devices whose ``field_name`` matches ``value`` (a case-insensitive glob) get ``profile``",
        tried after the explicit assignments and before the token's default; then reconcile."""
        tn = self._tenant(tenant_ref)
        if field_name not in RULE_FIELDS:
            raise InvalidInputError(
                msg("abm.error.rule_field", field=field_name, fields=", ".join(RULE_FIELDS)), field="field"
            )
        value = value.strip()
        if not value or len(value) > 200:
            raise InvalidInputError(msg("abm.error.rule_value"), field="value")
        record = self._find_profile(tn.id, profile)
        with self.db.unit_of_work() as uow:
            existing = uow.abm.rules(tn.id)
            if priority is None:
                priority = max((r.priority for r in existing), default=0) + 10
            rule = AbmAssignmentRule(
                str(uuid.uuid4()), tn.id, record.id, field_name, value, priority, self.clock.now()
            )
            uow.abm.add_rule(rule)
            uow.events.append(
                self.ok_event(
                    tn.id,
                    Step.DEP,
                    detail={
                        "profile": record.name,
                        "action": "rule-add",
                        "field": field_name,
                        "value": value,
                    },
                )
            )
        return RuleView(rule, record.name), self.reconcile(tn.id)

    def remove_rule(self, tenant_ref: str, rule_id: str) -> tuple[RuleView, ReconcileReport]:
        """Forget a rule; the devices it gave a profile get the token's default at this reconciliation."""
        tn = self._tenant(tenant_ref)
        found = next((v for v in self._rule_views(tn.id) if v.rule.id == rule_id), None)
        if found is None:
            raise NotFoundError(msg("abm.error.no_rule", rule=rule_id), rule=rule_id)
        with self.db.unit_of_work() as uow:
            uow.abm.remove_rule(tn.id, rule_id)
            uow.events.append(
                self.ok_event(
                    tn.id,
                    Step.DEP,
                    detail={"profile": found.profile, "action": "rule-remove", "rule": rule_id},
                )
            )
        return found, self.reconcile(tn.id)

    def assignment_findings(self, tenant_id: str) -> list[Finding]:
        """DEP_DEVICE_ASSIGNED_ELSEWHERE for each device ABM last said is another MDM server's, and
        DEP_PROFILE_NOT_ASSIGNED for each device tried :data:`REPORT_AFTER` times without ABM showing
        its profile (health)."""
        with self.db.unit_of_work(readonly=True) as uow:
            names = {p.id: p.name for p in uow.abm.profiles(tenant_id)}
            stuck = [a for a in uow.abm.assignments(tenant_id).values() if a.attempts >= REPORT_AFTER]
            elsewhere = uow.abm.flagged(tenant_id, ReasonCode.DEP_DEVICE_ASSIGNED_ELSEWHERE.value)
        return [
            Finding(
                ReasonCode.DEP_DEVICE_ASSIGNED_ELSEWHERE,
                Severity.WARNING,
                f"abm:device:{serial}",
                {"serial": serial, "since": since.isoformat()},
            )
            for serial, since in elsewhere
        ] + [
            Finding(
                ReasonCode.DEP_PROFILE_NOT_ASSIGNED,
                Severity.WARNING,
                f"abm:device:{a.serial_number}",
                {
                    "serial": a.serial_number,
                    "profile": names.get(a.profile_id),
                    "attempts": a.attempts,
                    "last_error": a.last_error,
                    "last_try": None if a.last_try_at is None else a.last_try_at.isoformat(),
                },
            )
            for a in sorted(stuck, key=lambda a: a.serial_number)
        ]


def first_rule(rules: Sequence[AbmAssignmentRule], facts: Mapping[str, str]) -> AbmAssignmentRule | None:
    """The first rule (``rules`` in their order) whose glob matches the device's field, ignoring case."""
    for r in rules:
        have = facts.get(r.field, "")
        if have and fnmatchcase(have.casefold(), r.value.casefold()):
            return r
    return None


@dataclass(frozen=True, slots=True)
class RuleView:
    """An assignment rule with its profile's name (``pomona abm rule list``)."""

    rule: AbmAssignmentRule
    profile: str

    def to_json(self) -> dict[str, object]:
        r = self.rule
        return {
            "id": r.id,
            "profile": self.profile,
            "field": r.field,
            "value": r.value,
            "priority": r.priority,
            "created_at": r.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What a reconciliation (or ``assign``) did: assignments ABM took and refused, and each serial's
    answer (SUCCESS, FAILED, NOT_ACCESSIBLE, a reason code, or ``pending``: not listed by ABM yet)."""

    assigned: int = 0
    failed: int = 0
    answers: Mapping[str, str] = field(default_factory=dict)

    def __add__(self, other: ReconcileReport) -> ReconcileReport:
        return ReconcileReport(
            self.assigned + other.assigned, self.failed + other.failed, {**self.answers, **other.answers}
        )

    def to_json(self) -> dict[str, object]:
        return {"assigned": self.assigned, "failed": self.failed, "devices": dict(self.answers)}


@dataclass(frozen=True, slots=True)
class ProfileView:
    """A kept profile with its tokens' names (``pomona abm profile list``)."""

    record: AbmProfileRecord
    token_names: Mapping[str, str]

    def to_json(self) -> dict[str, object]:
        r = self.record
        return {
            "id": r.id,
            "name": r.name,
            "token": None if r.token_id is None else self.token_names.get(r.token_id, r.token_id),
            "default": r.is_default,
            "settings": dict(r.settings),
            "definitions": {self.token_names.get(t, t): u for t, u in sorted(r.definitions.items())},
            "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ProfileReport:
    """``profile create|edit``: the kept profile, the linter's findings (warnings), and the assignments
    its reconciliation made."""

    profile: ProfileView
    findings: list[ProfileFinding]
    reconciled: ReconcileReport

    def to_json(self) -> dict[str, object]:
        return {
            **self.profile.to_json(),
            "findings": [f.to_json() for f in self.findings],
            "assigned": self.reconciled.assigned,
            "assign_failed": self.reconciled.failed,
        }
