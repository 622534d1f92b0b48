"""The APNs push certificate's lifecycle: request (CSR), upload (PEM or .p12), renew never replace,
its findings (the rules and the one expiry table are `pomona.domain.checks`'), webhook notices, and a
canary push after every upload.

Renew, never replace: devices enrolled under a topic can only ever be woken with a certificate of that
topic. A certificate with another topic is refused (APNS_TOPIC_CHANGED, saying how many devices would be
cut off) unless the admin confirms the replacement; then every enrollment under the old topic is marked
as needing re-enrollment (:meth:`ApnsLifecycle.reenroll_required`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from pomona.domain.checks import Finding, PushCertState, push_cert_findings
from pomona.domain.errors import (
    InvalidInputError,
    PushCertExpiredError,
    PushCertInvalidError,
    PushTopicChangedError,
    WebhookTargetError,
)
from pomona.domain.models import Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import (
    HasEvents,
    PushCertCheck,
    PushCertKit,
    PushCertStore,
    PushKind,
    PushQueue,
    PushReachabilityStore,
    ReEnrollment,
    ReEnrollmentStore,
    TenantStore,
    WebhookDelivery,
    WebhookPoster,
    WebhookStore,
)
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.jobs import Jobs

REPLACE_CONFIRMATION = "devices-must-re-enroll"
SIGNATURE_HEADER = "X-Pomona-Signature"  # "sha256=<hex HMAC-SHA256 of the body>"


def _invalid(detail: str, **context: object) -> PushCertInvalidError:
    return PushCertInvalidError(detail, **context)


@dataclass(frozen=True)
class CsrResult:
    tenant: str
    csr_pem: str
    vendor_signed: str | None  # the base64 plist for Apple's portal, when a vendor certificate was given


@dataclass(frozen=True)
class UploadResult:
    tenant_id: str
    topic: str
    not_after: str
    subject: str
    apple_id: str | None
    renewed: bool  # same topic as the certificate it replaced
    replaced: bool  # another topic, confirmed: devices must re-enroll
    reenroll_required: int
    canary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "topic": self.topic,
            "not_after": self.not_after,
            "subject": self.subject,
            "apple_id": self.apple_id,
            "renewed": self.renewed,
            "replaced": self.replaced,
            "reenroll_required": self.reenroll_required,
            "canary": self.canary,
        }


class ApnsStores(HasEvents, Protocol):
    """The certificate lifecycle's stores: the tenant's certificate and its state, the enrollments a
    replacement cuts off, and the push queue and reachability the canary uses."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def push_certs(self) -> PushCertStore: ...
    @property
    def reenrollments(self) -> ReEnrollmentStore: ...
    @property
    def pushes(self) -> PushQueue: ...
    @property
    def reachability(self) -> PushReachabilityStore: ...


@dataclass
class ApnsLifecycle(ServiceBase[ApnsStores]):
    kit: PushCertKit
    wake_push: Callable[[], None] | None = None
    jobs: Jobs | None = None  # where the canary runs after an upload (the server's background); None: inline
    canary_devices: int = 3
    canary_wait: float = 5.0  # seconds the canary waits for its devices to check in

    def _tenant(self, uow: ApnsStores, ref: str) -> Tenant:
        t = find_tenant(uow.tenants, ref)
        return t

    # -- request -----------------------------------------------------------------------------------
    def csr(
        self,
        tenant: str,
        *,
        email: str | None = None,
        vendor_chain_pem: bytes | None = None,
        vendor_key_pem: bytes | None = None,
    ) -> CsrResult:
        """A new key pair (kept sealed as the tenant's pending key) and its CSR, vendor-signed if asked."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
        key_pem, csr_pem = self.kit.make_csr(f"Pomona MDM push ({t.name})", email)
        signed = None
        if vendor_chain_pem is not None or vendor_key_pem is not None:
            if vendor_chain_pem is None or vendor_key_pem is None:
                raise InvalidInputError(msg("error.push.vendor_pair"))
            try:
                signed = self.kit.vendor_sign(csr_pem, vendor_chain_pem, vendor_key_pem)
            except ValueError as exc:
                raise InvalidInputError(msg("error.push.vendor_sign", error=exc), field="vendor") from exc
        with self.db.unit_of_work() as uow:
            uow.push_certs.set_pending_key(t.id, self.kit.seal(key_pem, f"pending-push-key:{t.id}"))
            uow.events.append(
                self.ok_event(t.id, Step.ADMIN, detail={"action": "apns.csr", "vendor_signed": bool(signed)})
            )
        return CsrResult(t.name, csr_pem.decode(), signed)

    # -- upload ------------------------------------------------------------------------------------
    def upload(
        self,
        tenant: str,
        cert: bytes,
        key_pem: bytes | None = None,
        *,
        password: bytes | None = None,
        apple_id: str | None = None,
        replace: bool = False,
        confirm: str | None = None,
        canary: bool = True,
    ) -> UploadResult:
        now = self.clock.now()
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
            pending = uow.push_certs.cert_state(t.id).pending_key
            on_old_topic = (
                0 if t.push_topic is None else uow.reenrollments.active_on_topic(t.id, t.push_topic)
            )
        if (
            key_pem is None
            and pending is not None
            and cert.lstrip().startswith(b"-----")
            and b"PRIVATE KEY" not in cert
        ):
            key_pem = self.kit.open(pending, f"pending-push-key:{t.id}")
        check = self._check(cert, key_pem, password, now)
        topic = check.topic
        assert topic is not None
        renewed = t.push_topic == topic
        replaced = t.push_topic is not None and not renewed
        if replaced and not (replace and confirm == REPLACE_CONFIRMATION):
            self.record_failure(
                t.id,
                Step.ADMIN,
                ReasonCode.APNS_TOPIC_CHANGED,
                detail={"old_topic": t.push_topic, "new_topic": topic, "devices_cut_off": on_old_topic},
            )
            raise PushTopicChangedError(
                msg(
                    "error.push.topic_changed",
                    topic=topic,
                    current=t.push_topic,
                    devices=on_old_topic,
                    apple_id=f" ({t_apple})" if (t_apple := self._apple_id(t.id)) else "",
                    confirm=REPLACE_CONFIRMATION,
                ),
                old_topic=t.push_topic,
                new_topic=topic,
                devices=on_old_topic,
            )
        marked = 0
        with self.db.unit_of_work() as uow:
            uow.tenants.set_push_cert(
                t.id, check.cert_pem, self.kit.seal(check.key_pem, f"push-key:{t.id}"), topic, check.not_after
            )
            uow.push_certs.cert_changed(t.id, now, apple_id)
            if replaced and t.push_topic is not None:
                marked = uow.reenrollments.mark_reenroll_required(t.id, t.push_topic, now)
            uow.events.append(
                self.ok_event(
                    t.id,
                    Step.ADMIN,
                    detail={
                        "action": "apns.upload",
                        "topic": topic,
                        "renewed": renewed,
                        "replaced": replaced,
                        "reenroll_required": marked,
                        "fingerprint": check.fingerprint_sha256,
                    },
                )
            )
        result = UploadResult(
            tenant_id=t.id,
            topic=topic,
            not_after=check.not_after.isoformat(),
            subject=check.subject,
            apple_id=apple_id or self._apple_id(t.id),
            renewed=renewed,
            replaced=replaced,
            reenroll_required=marked,
        )
        if canary:
            # In a running server the canary is a background job (the upload answers at once, the result
            # is an event); from the CLI it runs before the command returns and is printed.
            result.canary["result"] = "scheduled"
            run = partial(self._canary_job, t.id, topic, result.canary)
            if self.jobs is None:
                run()
            else:
                self.jobs.submit("apns-canary", run)
        return result

    def _canary_job(self, tenant_id: str, topic: str, into: dict[str, Any]) -> None:
        found = self.canary(tenant_id, topic)
        into.clear()
        into.update(found)
        with self.db.unit_of_work() as uow:
            uow.events.append(
                self.ok_event(
                    tenant_id, Step.ADMIN, detail={"action": "apns.canary", "topic": topic, **found}
                )
            )

    def _apple_id(self, tenant_id: str) -> str | None:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.push_certs.cert_state(tenant_id).apple_id

    def _check(
        self, cert: bytes, key_pem: bytes | None, password: bytes | None, now: datetime
    ) -> PushCertCheck:
        try:
            check = self.kit.check(cert, key_pem, password, now)
        except ValueError as exc:  # PushCertError: not_pem, not_p12, bad_password, no_key, ...
            raise _invalid(
                msg(
                    "error.push.unusable",
                    kind=getattr(exc, "kind", "invalid"),
                    detail=getattr(exc, "detail", exc),
                ),
                kind=getattr(exc, "kind", None),
            ) from exc
        problems = check.problems
        if "no_topic" in problems:
            raise _invalid(msg("error.push.no_topic"), problems=problems)
        if "not_mdm_topic" in problems:
            raise _invalid(
                msg("error.push.not_mdm_topic", topic=check.topic),
                topic=check.topic,
                problems=problems,
            )
        if "no_client_auth" in problems:
            raise _invalid(msg("error.push.no_client_auth"))
        if "key_mismatch" in problems:
            raise _invalid(msg("error.push.key_mismatch"))
        if "not_yet_valid" in problems:
            raise _invalid(msg("error.push.not_yet_valid", at=f"{check.not_before:%Y-%m-%d %H:%M}"))
        if "no_key" in problems:
            raise _invalid(msg("error.push.no_key"))
        if "expired" in problems:
            raise PushCertExpiredError(
                msg("error.push.cert_expired_on", date=f"{check.not_after:%Y-%m-%d}"),
                not_after=check.not_after.isoformat(),
            )
        return check

    def inspect(
        self, cert: bytes, key_pem: bytes | None = None, password: bytes | None = None
    ) -> dict[str, Any]:
        """What the certificate is (topic, validity, problems), without storing anything."""
        try:
            c = self.kit.check(cert, key_pem, password, self.clock.now())
        except ValueError as exc:
            raise _invalid(msg("error.push.unreadable", error=exc)) from exc
        return {
            "topic": c.topic,
            "subject": c.subject,
            "not_before": c.not_before.isoformat(),
            "not_after": c.not_after.isoformat(),
            "fingerprint_sha256": c.fingerprint_sha256,
            "problems": c.problems,
        }

    # -- canary ------------------------------------------------------------------------------------
    def canary(self, tenant_id: str, topic: str) -> dict[str, Any]:
        """Push a few enrolled devices through the queue and wait (boundedly) for them to check in.

        A check-in is recorded at most once a minute on the command channel, so a device seen in the
        last minute cannot prove a new check-in: it counts as ``recently_seen``; APNs accepting the push
        (``accepted``) already proves the certificate works.
        """
        start = self.clock.now()
        with self.db.unit_of_work() as uow:
            picked = uow.reachability.pick_canary(tenant_id, topic, self.canary_devices, start)
            if not picked:
                return {"devices": 0, "result": "no_enrolled_devices"}
            uow.pushes.request(tenant_id, [e for e, _ in picked], start, kind=PushKind.CANARY)
        if self.wake_push is not None:
            self.wake_push()
        eids = [e for e, _ in picked]
        dids = [d for _, d in picked]
        deadline = time.monotonic() + self.canary_wait
        accepted: set[str] = set()
        refused: dict[str, str] = {}
        checked_in: set[str] = set()
        seen: dict[str, datetime | None] = {}
        while True:
            with self.db.unit_of_work(readonly=True) as uow:
                pushes = uow.reachability.last_pushes(eids)
                seen = uow.reachability.seen_since(dids)
            for eid, did in picked:
                at, status = pushes.get(eid, (None, None))
                if at is not None and at >= start:
                    if status == "delivered":
                        accepted.add(eid)
                    elif status:
                        refused[eid] = status
                last = seen.get(did)
                if last is not None and last >= start:
                    checked_in.add(eid)
            recent_ids = {
                e for e, d in picked if (x := seen.get(d)) is not None and x >= start - timedelta(seconds=60)
            }
            settled = all(
                e in checked_in or (e in recent_ids and (e in accepted or e in refused)) for e in eids
            )
            if settled or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        recent = [
            e
            for e, d in picked
            if e not in checked_in and (s := seen.get(d)) is not None and s >= start - timedelta(seconds=60)
        ]
        return {
            "devices": len(picked),
            "accepted": len(accepted),
            "refused": refused,
            "checked_in": len(checked_in),
            "recently_seen": len(recent),
            "result": "ok"
            if accepted and (checked_in or recent)
            else ("accepted" if accepted else "no_answer"),
        }

    # -- queries -----------------------------------------------------------------------------------
    def reenroll_required(self, tenant: str, *, limit: int = 1000) -> dict[str, Any]:
        """Enrollments cut off by a replaced certificate: count and list (health and the console)."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
            count, rows = uow.reenrollments.reenroll_required(t.id, limit=limit)
        return {"count": count, "enrollments": [_reenrollment_json(r) for r in rows]}

    def last_canary(self, tenant: str) -> dict[str, Any] | None:
        """The canary that followed the last upload, as its event recorded it (with ``at``), or None: none
        recorded (skipped with --no-canary, still running, or no upload yet). Reads only the events of
        the canary's window after the upload (the index on tenant and time), whatever the log's size."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
            since = uow.push_certs.cert_state(t.id).updated_at
            if since is None:
                return None
            until = since + timedelta(seconds=self.canary_wait + 120)
            found = uow.events.query(t.id, since=since, until=until, limit=1000)
        for e in found:
            if e.detail.get("action") == "apns.canary":
                return {**e.detail, "at": e.at.isoformat()}
        return None

    def status(self, tenant: str) -> dict[str, Any]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
            st = uow.push_certs.cert_state(t.id)
            count, _ = uow.reenrollments.reenroll_required(t.id, limit=0)
        return {
            "topic": t.push_topic,
            "not_after": None if t.push_not_after is None else t.push_not_after.isoformat(),
            "apple_id": st.apple_id,
            "updated_at": None if st.updated_at is None else st.updated_at.isoformat(),
            "refused_by_apns": st.invalid_reason,
            "refused_at": None if st.invalid_at is None else st.invalid_at.isoformat(),
            "pending_csr": st.pending_key is not None,
            "reenroll_required": count,
        }

    def check(self, tenant: str, now: datetime) -> list[Finding]:
        """The push certificate's findings (`pomona.domain.checks.push_cert_findings`): missing, expiring
        at each expiry step, expired, refused by APNs, enrollments cut off by a replacement. Health and
        diagnose consume these (a `TenantCheck`)."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self._tenant(uow, tenant)
            st = uow.push_certs.cert_state(t.id)
            count, _ = uow.reenrollments.reenroll_required(t.id, limit=0)
        state = PushCertState(
            present=t.push_cert_pem is not None and t.push_not_after is not None,
            topic=t.push_topic,
            not_after=t.push_not_after,
            apple_id=st.apple_id,
            refused_at=st.invalid_at,
            refused_reason=st.invalid_reason,
            reenroll_required=count,
        )
        return push_cert_findings(state, now)

    def findings(self, tenant: str, now: datetime) -> list[dict[str, object]]:
        """`check` as JSON (the API's and the CLI's certificate status, the webhook test)."""
        return [f.to_json() for f in self.check(tenant, now)]


class NotifierStores(HasEvents, Protocol):
    """The notifier's stores: the tenant and its webhook, with the record of deliveries."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def webhooks(self) -> WebhookStore: ...


@dataclass
class Notifier(ServiceBase[NotifierStores]):
    """Webhook notices of findings: JSON POST signed with HMAC-SHA256 of the body (header
    ``X-Pomona-Signature: sha256=<hex>``), retried with backoff, every delivery recorded."""

    kit: PushCertKit
    poster: WebhookPoster
    attempts: int = 4
    backoff: float = 1.0  # seconds, doubled after each failed attempt
    timeout: float = 5.0
    sleep: Callable[[float], None] = time.sleep

    def configure(self, tenant: str, url: str, secret: str) -> None:
        if not url.startswith(("https://", "http://")):
            raise InvalidInputError(msg("error.webhook.url"), field="url")
        if len(secret) < 16:
            raise InvalidInputError(msg("error.webhook.secret"), field="secret")
        self.poster.check(url)  # WEBHOOK_TARGET_REFUSED: loopback, private, link-local, metadata ...
        with self.db.unit_of_work() as uow:
            t = find_tenant(uow.tenants, tenant)
            uow.webhooks.set_webhook(
                t.id, url, self.kit.seal(secret.encode(), f"webhook:{t.id}"), self.clock.now()
            )
            uow.events.append(self.ok_event(t.id, Step.ADMIN, detail={"action": "webhook.set", "url": url}))

    def show(self, tenant: str, *, limit: int = 20) -> dict[str, Any]:
        """The tenant's webhook (its URL, never its secret) and its latest deliveries, newest first."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant)
            hook = uow.webhooks.webhook(t.id)
            sent = uow.webhooks.deliveries(t.id, limit=limit)
        return {
            "tenant": t.name,
            "url": None if hook is None else hook[0],
            "deliveries": [
                {
                    "id": d.id,
                    "at": d.at.isoformat(),
                    "url": d.url,
                    "codes": d.codes,
                    "attempts": d.attempts,
                    "status": d.status,
                    "http_status": d.http_status,
                    "error": d.error,
                }
                for d in sent
            ],
        }

    def notify(
        self, tenant_id: str, findings: list[dict[str, Any]], *, attempts: int | None = None
    ) -> dict[str, Any]:
        """POST the findings to the tenant's webhook (if one is set); returns the recorded delivery.
        ``attempts`` (default: the notifier's) bounds the tries: a test by hand makes one."""
        if not findings:
            return {"status": "nothing_to_send"}
        with self.db.unit_of_work(readonly=True) as uow:
            hook = uow.webhooks.webhook(tenant_id)
        if hook is None:
            return {"status": "no_webhook"}
        url, sealed = hook
        secret = self.kit.open(sealed, f"webhook:{tenant_id}")
        body = json.dumps(
            {"tenant_id": tenant_id, "at": self.clock.now().isoformat(), "findings": findings},
            default=str,
            separators=(",", ":"),
        ).encode()
        sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sig}
        status: int | None = None
        error: str | None = None
        attempt = 0
        tries = self.attempts if attempts is None else max(1, attempts)
        for attempt in range(1, tries + 1):
            try:
                status = self.poster.post(url, body, headers, self.timeout)
                error = None
                if 200 <= status < 300:
                    break
                error = f"HTTP {status}"
            except WebhookTargetError as refused:  # checked again at delivery: not retried
                status, error = None, f"{refused.reason.value}: {refused.detail}"[:300]
                self.record_failure(
                    tenant_id, Step.ADMIN, refused.reason, detail={"action": "webhook.deliver", "url": url}
                )
                break
            except OSError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"[:300]
            if attempt < tries:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        outcome = "delivered" if error is None else "failed"
        codes = ",".join(sorted({str(f.get("code")) for f in findings}))
        with self.db.unit_of_work() as uow:
            uow.webhooks.record_delivery(
                WebhookDelivery(tenant_id, self.clock.now(), url, codes, attempt, outcome, status, error)
            )
        return {"status": outcome, "attempts": attempt, "http_status": status, "error": error}

    def deliveries(self, tenant: str, *, limit: int = 50) -> list[dict[str, Any]]:
        with self.db.unit_of_work(readonly=True) as uow:
            t = find_tenant(uow.tenants, tenant)
            return [dataclasses.asdict(d) for d in uow.webhooks.deliveries(t.id, limit=limit)]


def _reenrollment_json(r: ReEnrollment) -> dict[str, Any]:
    return {
        "enrollment_id": r.enrollment_id,
        "udid": r.udid,
        "serial": r.serial,
        "topic": r.topic,
        "since": None if r.since is None else r.since.isoformat(),
        "user_id": r.user_id,
    }
