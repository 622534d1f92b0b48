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
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal, Protocol

from pomona.domain.checks import AbmTokenState, Finding, abm_token_findings
from pomona.domain.errors import (
    AbmCursorExpiredError,
    AbmError,
    AbmTokenExpiredError,
    AbmTokenFileError,
    ConflictError,
    NotFoundError,
)
from pomona.domain.models import Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.ports import (
    AbmClient,
    AbmConnector,
    AbmDeviceRecord,
    AbmHistoryEntry,
    AbmKeys,
    AbmStore,
    AbmTokenInfo,
    Clock,
    HasEvents,
    TenantStore,
    Transactions,
)
from pomona.protocol.dep import AbmDevice, decode_server_token
from pomona.protocol.errors import ProtocolError
from pomona.services.base import ServiceBase, find_tenant

log = logging.getLogger("pomona.abm")

#: A token that expires within this is reported (health, ``pomona abm token list``).
EXPIRY_WARNING: Final = timedelta(days=30)
PAGE_LIMIT: Final = 1000  # Apple's maximum for /devices/sync (and its default for /server/devices)

TokenState = Literal["ok", "expiring", "expired"]


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

    def to_json(self) -> dict[str, object]:
        return {
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
    ) -> None:
        super().__init__(db, clock)
        self.keys = keys
        self.connector = connector
        self.page_limit = page_limit

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
            raise AbmTokenExpiredError(
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
        """Health's check (services.checks.TenantCheck): each token's expiry (warned from 30 days ahead)
        and its last sync's failure, if the last sync failed."""
        with self.db.unit_of_work(readonly=True) as uow:
            tn = find_tenant(uow.tenants, tenant_ref)
            tokens = uow.abm.tokens(tn.id)
        return abm_token_findings(
            (
                AbmTokenState(t.name, t.access_token_expiry, t.last_error, t.last_error_at, t.last_sync_at)
                for t in tokens
            ),
            now,
        )

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
        return counter.r

    def _store(self, tn: Tenant, info: AbmTokenInfo, devices: list[AbmDevice], counter: _Counter) -> None:
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
