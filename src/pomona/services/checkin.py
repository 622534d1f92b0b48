"""Check-in and command-loop use cases: authenticating device messages, enrollment state, the queue.

Every device message is authenticated the same way (the ``Mdm-Signature`` header is a detached CMS
signature over the body): the signer must hold an identity issued by this tenant's CA, still valid, and
bound to the enrollment the message speaks for. The hot path (an idle check-in) costs one signature
verification, one plist parse and one short transaction.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from pomona.domain.errors import (
    BodyTooLargeError,
    CertDeviceMismatchError,
    CertNotTrustedError,
    DeviceBlockedError,
    MalformedRequestError,
    PomonaError,
    SignatureInvalidError,
    TopicMismatchError,
    UnenrollDeviceError,
    UnknownEnrollmentError,
)
from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentType,
    QueuedCommand,
    Step,
    Tenant,
)
from pomona.domain.policy import Stage, decide, platform_of_product
from pomona.domain.reasons import ReasonCode
from pomona.ports import CertificateAuthority, Pki, UnitOfWork
from pomona.protocol import cms
from pomona.protocol.checkin import Authenticate, CheckOut, OtherCheckin, TokenUpdate, decode_checkin
from pomona.protocol.command import CommandReport, ReportStatus, decode_report
from pomona.protocol.errors import ProtocolError
from pomona.services.base import ServiceBase
from pomona.services.policy import PolicyService, refusal

MAX_BODY = 2 * 1024 * 1024
TOUCH_EVERY = timedelta(seconds=60)
TENANT_TTL = 30.0  # seconds a process trusts its cached copy of a tenant row  # last-seen is written at most once a minute per device

_STATUS = {
    ReportStatus.ACKNOWLEDGED: CommandStatus.ACKNOWLEDGED,
    ReportStatus.ERROR: CommandStatus.ERROR,
    ReportStatus.COMMAND_FORMAT_ERROR: CommandStatus.COMMAND_FORMAT_ERROR,
    ReportStatus.NOT_NOW: CommandStatus.NOT_NOW,
}

# DeviceInformation QueryResponses keys -> inventory fields.
_INVENTORY_KEYS = {
    "ProductName": "product_name",
    "Model": "model",
    "ModelName": "model_name",
    "DeviceName": "device_name",
    "OSVersion": "os_version",
    "BuildVersion": "build_version",
    "SerialNumber": "serial",
    "IMEI": "imei",
    "MEID": "meid",
    "DeviceCapacity": "capacity_gb",
    "BatteryLevel": "battery_level",
}


class UnknownTenantError(UnknownEnrollmentError):
    """The URL names no tenant: nothing to record an event under."""


@dataclass(frozen=True)
class SignedMessage:
    tenant: Tenant
    cert: x509.Certificate
    fingerprint: str


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[object, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self.lock:
            v = self.data.get(key)
            if v is not None:
                self.data.move_to_end(key)
            return v

    def put(self, key: object, value: object) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


@dataclass
class CheckinService(ServiceBase):
    pki: Pki
    policy: PolicyService
    _cas: dict[str, CertificateAuthority] = field(default_factory=dict)
    _tenants: _Lru = field(default_factory=lambda: _Lru(1024))
    _issued_by: _Lru = field(default_factory=lambda: _Lru(200_000))

    # --- authentication ---------------------------------------------------------------------------
    def _tenant(self, tenant_id: str) -> Tenant:
        """The tenant, cached for TENANT_TTL: its CA never changes, its push topic rarely. Authenticate
        re-reads the tenant inside its transaction, so policy decisions never use a stale copy."""
        hit = self._tenants.get(tenant_id)
        now = time.monotonic()
        if isinstance(hit, tuple) and now - hit[0] < TENANT_TTL:
            tenant: Tenant = hit[1]
            return tenant
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.tenants.get(tenant_id)
        if found is None:
            raise UnknownTenantError("no such tenant")
        self._tenants.put(tenant_id, (now, found))
        return found

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop this process's cached tenant facts (the push topic changed)."""
        self._tenants.put(tenant_id, 0)

    def _ca(self, tenant: Tenant) -> CertificateAuthority:
        ca = self._cas.get(tenant.id)
        if ca is None:
            ca = self._cas[tenant.id] = self.pki.load_ca(tenant.ca_cert_pem, tenant.ca_key_pem)
        return ca

    def authenticate(self, tenant_id: str, body: bytes, signature: str | None) -> SignedMessage:
        tenant = self._tenant(tenant_id)
        if len(body) > MAX_BODY:
            raise BodyTooLargeError("body too large")
        if not signature:
            raise SignatureInvalidError("no Mdm-Signature header")
        try:
            sig = base64.b64decode(signature, validate=False)
            cert = cms.verify_detached(sig, body)
        except (binascii.Error, ValueError) as exc:
            raise SignatureInvalidError(f"Mdm-Signature does not verify: {exc}") from exc
        fp = cert.fingerprint(hashes.SHA256()).hex()
        key = (tenant.id, fp)
        if self._issued_by.get(key) is None:
            if not self._ca(tenant).is_issuer_of(cert):
                raise CertNotTrustedError(
                    "the signing certificate was not issued by this tenant's CA", fingerprint=fp
                )
            self._issued_by.put(key, True)
        now = self.clock.now()
        if cert.not_valid_after_utc <= now or cert.not_valid_before_utc > now + timedelta(minutes=5):
            raise CertNotTrustedError("the signing certificate is expired or not yet valid", fingerprint=fp)
        return SignedMessage(tenant, cert, fp)

    def _claimed_udid(self, body: bytes, signature: str | None) -> str | None:
        """For the event of a refused message: the UDID it claims, or the one its signer is bound to.

        Best effort, never trusted for anything else; it lets diagnosis find the refusal by device."""
        try:
            from pomona.protocol import plist

            claimed = plist.loads(body, max_size=MAX_BODY).get("UDID")
            if isinstance(claimed, str) and claimed:
                return claimed[:64]
        except ValueError:
            pass
        try:
            cert = cms.verify_detached(base64.b64decode(signature or ""), body)
        except (ValueError, binascii.Error):
            return None
        with self.db.unit_of_work(readonly=True) as uow:
            e = uow.enrollments.by_fingerprint(cert.fingerprint(hashes.SHA256()).hex())
        return None if e is None else e.udid

    def refuse_oversized(self, tenant_id: str, channel: str) -> tuple[int, bytes, str | None]:
        """A body over MAX_BODY was cut off at the HTTP layer: record the refusal (for a known tenant)."""
        self._tenant(tenant_id)  # an unknown tenant is refused as such, with no event
        step = Step.COMMAND if channel == "connect" else Step.AUTHENTICATE
        self.record_failure(tenant_id, step, ReasonCode.MALFORMED_REQUEST, detail={"error": "body too large"})
        raise BodyTooLargeError(f"body larger than {MAX_BODY} bytes")

    # --- check-in ---------------------------------------------------------------------------------
    def checkin(self, tenant_id: str, body: bytes, signature: str | None) -> bytes:
        """Handle one check-in message. Returns the response body (empty on success)."""
        udid: str | None = None
        serial: str | None = None
        step = Step.AUTHENTICATE
        try:
            signed = self.authenticate(tenant_id, body, signature)
            try:
                msg = decode_checkin(body, max_size=MAX_BODY)
            except ProtocolError as exc:
                raise MalformedRequestError(str(exc)) from exc
            udid = msg.udid
            if isinstance(msg, Authenticate):
                serial = msg.serial_number
                self._authenticate(signed, msg)
            elif isinstance(msg, TokenUpdate):
                step = Step.TOKENUPDATE
                self._token_update(signed, msg)
            elif isinstance(msg, CheckOut):
                step = Step.CHECKOUT
                self._checkout(signed, msg)
            else:
                assert isinstance(msg, OtherCheckin)
                step = Step.AUTHENTICATE
                self._other(signed, msg)
            return b""
        except PomonaError as exc:
            if not isinstance(exc, UnknownTenantError) and not exc.context.get("recorded"):
                udid = udid or self._claimed_udid(body, signature)
                self.record_failure(
                    tenant_id, step, exc.reason, udid=udid, serial=serial, detail={"error": exc.detail}
                )
            raise

    def _authenticate(self, signed: SignedMessage, msg: Authenticate) -> None:
        now = self.clock.now()
        corporate_id: str | None = None
        refused: PomonaError | None = None
        upn: str | None = None
        user_id: str | None = None
        with self.db.unit_of_work() as uow:
            tenant = uow.tenants.get(signed.tenant.id) or signed.tenant  # fresh: authority, push certificate
            if msg.topic != tenant.push_topic:
                raise TopicMismatchError(f"topic {msg.topic!r} is not this tenant's push topic")
            issued = uow.certs.get(signed.fingerprint)
            if issued is None or issued.tenant_id != tenant.id:
                raise CertNotTrustedError("the identity was not issued through this tenant's SCEP")
            if issued.enrollment_id is not None:
                bound = uow.enrollments.get(tenant.id, issued.enrollment_id)
                if bound is not None and bound.udid != msg.udid:
                    raise CertDeviceMismatchError(
                        "this identity belongs to another device", bound_udid=bound.udid, udid=msg.udid
                    )
            user = None if issued.user_id is None else uow.users.get(tenant.id, issued.user_id)
            user_id, upn = issued.user_id, None if user is None else user.upn
            corp = uow.corporate.match(tenant.id, msg.serial_number, msg.imei)
            corporate_id = None if corp is None else corp.id
            current = uow.enrollments.active_for_device(tenant.id, msg.udid, msg.serial_number)
            # The policy, with the device's own facts. A refusal writes nothing and counts nothing.
            decision = decide(
                self.policy.policy_input(
                    uow,
                    tenant,
                    stage=Stage.AUTHENTICATE,
                    user=user,
                    platform=platform_of_product(msg.product_name),
                    os_version=msg.os_version,
                    serial=msg.serial_number,
                    udid=msg.udid,
                    imei=msg.imei,
                    device_enrollments=current,
                    corporate=corp is not None,
                )
            )
            if not decision.allowed:
                refused = refusal(decision)
            else:
                self._enroll(
                    uow,
                    signed,
                    msg,
                    tenant,
                    issued.user_id,
                    upn,
                    decision.is_dem,
                    corp is not None,
                    now,
                    current,
                )
                if corporate_id is not None:
                    uow.corporate.set_state(corporate_id, "enrolled", now)
        if refused is not None:
            if corporate_id is not None:
                with self.db.unit_of_work() as uow:
                    uow.corporate.set_state(corporate_id, "failed", now)
            self.record_failure(
                tenant.id,
                Step.AUTHENTICATE,
                refused.reason,
                user_id=user_id,
                upn=upn,
                serial=msg.serial_number,
                udid=msg.udid,
                detail={
                    "error": refused.detail,
                    **refused.context,
                    "product": msg.product_name,
                    "os_version": msg.os_version,
                },
            )
            refused.context["recorded"] = True
            raise refused

    def _enroll(
        self,
        uow: UnitOfWork,
        signed: SignedMessage,
        msg: Authenticate,
        tenant: Tenant,
        user_id: str | None,
        upn: str | None,
        is_dem: bool,
        corporate: bool,
        now: datetime,
        current_enrollments: list[Enrollment],
    ) -> None:
        device = uow.devices.upsert(
            Device(
                id=str(uuid.uuid4()),
                tenant_id=tenant.id,
                udid=msg.udid,
                serial=msg.serial_number,
                product_name=msg.product_name,
                model=msg.model,
                model_name=msg.model_name,
                device_name=msg.device_name,
                os_version=msg.os_version,
                build_version=msg.build_version,
                imei=msg.imei,
                meid=msg.meid,
                last_seen_at=now,
                created_at=now,
            )
        )
        type_ = (
            EnrollmentType.DEM if is_dem else EnrollmentType.CORPORATE if corporate else EnrollmentType.BYOD
        )
        replaced = None
        enrollment_id = None
        for current in current_enrollments:
            if current.cert_fingerprint == signed.fingerprint and current.udid == msg.udid:
                enrollment_id = current.id  # the same identity authenticating again: refresh
                continue
            # The same device (UDID or serial) re-enrolling for the same user: its old record ends, and
            # commands queued for it are cancelled, never replayed.
            uow.enrollments.end(current.id, EnrollmentStatus.REPLACED, now)
            uow.commands.cancel_pending(current.id)
            replaced = current.id
        if enrollment_id is None:
            enrollment_id = str(uuid.uuid4())
            uow.enrollments.add(
                Enrollment(
                    id=enrollment_id,
                    tenant_id=tenant.id,
                    device_id=device.id,
                    udid=msg.udid,
                    user_id=user_id,
                    status=EnrollmentStatus.ACTIVE,
                    type=type_,
                    cert_fingerprint=signed.fingerprint,
                    topic=msg.topic,
                    started_at=now,
                )
            )
            uow.certs.bind(signed.fingerprint, enrollment_id)
        uow.events.append(
            self.ok_event(
                tenant.id,
                Step.AUTHENTICATE,
                user_id=user_id,
                upn=upn,
                serial=msg.serial_number,
                udid=msg.udid,
                enrollment_id=enrollment_id,
                detail={
                    "product": msg.product_name,
                    "os_version": msg.os_version,
                    "replaced": replaced,
                    "type": type_.value,
                },
            )
        )

    def _bound_enrollment(
        self, uow: UnitOfWork, signed: SignedMessage, udid: str
    ) -> tuple[Enrollment, datetime | None]:
        found = uow.enrollments.active_by_fingerprint(signed.fingerprint)
        if found is None:
            raise self._not_active(uow, signed.fingerprint, udid)
        enrollment, last_seen = found
        if enrollment.tenant_id != signed.tenant.id:
            raise CertNotTrustedError("identity of another tenant")
        if enrollment.udid != udid:
            raise CertDeviceMismatchError(
                "the message names another device than the identity's", bound_udid=enrollment.udid, udid=udid
            )
        return enrollment, last_seen

    def _not_active(self, uow: UnitOfWork, fingerprint: str, udid: str) -> PomonaError:
        """Why an identity has no active enrollment: a blocked or retired device is told to unenroll."""
        last = uow.enrollments.by_fingerprint(fingerprint)
        if last is not None and last.status is EnrollmentStatus.BLOCKED:
            return DeviceBlockedError("this device is blocked", udid=udid)
        if last is not None and last.status is EnrollmentStatus.RETIRED:
            return UnenrollDeviceError("this enrollment was retired", udid=udid)
        return UnknownEnrollmentError("no active enrollment for this identity", udid=udid)

    def _token_update(self, signed: SignedMessage, msg: TokenUpdate) -> None:
        if msg.topic != signed.tenant.push_topic:
            raise TopicMismatchError(f"topic {msg.topic!r} is not this tenant's push topic")
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            enrollment, _ = self._bound_enrollment(uow, signed, msg.udid)
            uow.enrollments.update_token(
                enrollment.id, msg.token, msg.push_magic, msg.unlock_token, msg.awaiting_configuration, now
            )
            uow.devices.touch(enrollment.device_id, now)
            uow.pushes.token_updated(enrollment.id, signed.tenant.id, now)  # a 410'd token is valid again
            user = None if enrollment.user_id is None else uow.users.get(signed.tenant.id, enrollment.user_id)
            uow.events.append(
                self.ok_event(
                    signed.tenant.id,
                    Step.TOKENUPDATE,
                    user_id=enrollment.user_id,
                    upn=None if user is None else user.upn,  # the funnel of a user's attempt reads it
                    udid=msg.udid,
                    enrollment_id=enrollment.id,
                    detail={"awaiting_configuration": msg.awaiting_configuration},
                )
            )

    def _checkout(self, signed: SignedMessage, msg: CheckOut) -> None:
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            enrollment, _ = self._bound_enrollment(uow, signed, msg.udid)
            uow.enrollments.end(enrollment.id, EnrollmentStatus.REMOVED, now)
            cancelled = uow.commands.cancel_pending(enrollment.id)
            uow.events.append(
                self.ok_event(
                    signed.tenant.id,
                    Step.CHECKOUT,
                    user_id=enrollment.user_id,
                    udid=msg.udid,
                    enrollment_id=enrollment.id,
                    detail={"cancelled_commands": cancelled},
                )
            )

    def _other(self, signed: SignedMessage, msg: OtherCheckin) -> None:
        with self.db.unit_of_work() as uow:
            if msg.udid is not None:
                self._bound_enrollment(uow, signed, msg.udid)
            uow.events.append(
                self.ok_event(
                    signed.tenant.id,
                    Step.AUTHENTICATE,
                    udid=msg.udid,
                    detail={"message_type": msg.message_type},
                )
            )

    # --- command loop -----------------------------------------------------------------------------
    def connect(self, tenant_id: str, body: bytes, signature: str | None) -> bytes:
        """Handle one command-channel request: store the reported result, return the next command.

        A command the device answered NotNow is not sent again until the device's next Idle, which
        starts a new connection (as Apple's protocol describes).
        """
        report: CommandReport | None = None
        try:
            signed = self.authenticate(tenant_id, body, signature)
            try:
                report = decode_report(body, max_size=MAX_BODY)
            except ProtocolError as exc:
                raise MalformedRequestError(str(exc)) from exc
            now = self.clock.now()
            if report.is_idle:
                # The hot path: one read outside any transaction; nothing to write for an idle device
                # with an empty queue that was seen within the last minute.
                state = self.db.channel_state(signed.fingerprint, skip_not_now=False)
                if state is None:
                    with self.db.unit_of_work(readonly=True) as uow:
                        raise self._not_active(uow, signed.fingerprint, report.udid)
                if state.tenant_id != signed.tenant.id:
                    raise CertNotTrustedError("identity of another tenant")
                if state.udid != report.udid:
                    raise CertDeviceMismatchError(
                        "the message names another device than the identity's",
                        bound_udid=state.udid,
                        udid=report.udid,
                    )
                fresh = state.last_seen_at is not None and now - state.last_seen_at < TOUCH_EVERY
                if state.next_command_id is None and fresh:
                    return b""
                if state.next_command_id is not None and state.next_command_body is not None:
                    # The read named the next command: take it with one guarded UPDATE (still pending,
                    # enrollment still active) instead of reading it all again in the transaction.
                    with self.db.unit_of_work() as uow:
                        if uow.commands.take(state.next_command_id, state.enrollment_id, now):
                            if not fresh:
                                uow.devices.touch(state.device_id, now)
                            return state.next_command_body
            with self.db.unit_of_work() as uow:
                enrollment, last_seen = self._bound_enrollment(uow, signed, report.udid)
                if not report.is_idle:
                    self._store_result(uow, signed.tenant, enrollment, report, now)
                nxt = uow.commands.next_for(enrollment.id, skip_not_now=not report.is_idle)
                if nxt is not None:
                    uow.commands.mark_sent(nxt.id, now)
                if last_seen is None or now - last_seen >= TOUCH_EVERY:
                    uow.devices.touch(enrollment.device_id, now)
                return b"" if nxt is None else nxt.body
        except PomonaError as exc:
            if not isinstance(exc, UnknownTenantError):
                self.record_failure(
                    tenant_id,
                    Step.COMMAND,
                    exc.reason,
                    udid=report.udid if report is not None else self._claimed_udid(body, signature),
                    detail={"error": exc.detail},
                )
            raise

    def _store_result(
        self, uow: UnitOfWork, tenant: Tenant, enrollment: Enrollment, report: CommandReport, now: datetime
    ) -> None:
        assert report.command_uuid is not None
        status = _STATUS[report.status]
        cmd = uow.commands.record_result(
            enrollment.id, report.command_uuid, status, report.raw, report.error_chain, now
        )
        if cmd is None:
            uow.events.append(
                self.ok_event(
                    tenant.id,
                    Step.COMMAND,
                    udid=enrollment.udid,
                    enrollment_id=enrollment.id,
                    detail={"unknown_command_uuid": report.command_uuid, "status": report.status.value},
                )
            )
            return
        if status is CommandStatus.ACKNOWLEDGED:
            self._apply_result(uow, tenant, enrollment, cmd, report, now)
        event = self.ok_event(
            tenant.id,
            Step.COMMAND,
            user_id=enrollment.user_id,
            udid=enrollment.udid,
            enrollment_id=enrollment.id,
            detail={
                "command_uuid": cmd.command_uuid,
                "request_type": cmd.request_type,
                "status": status.value,
                "error_chain": report.error_chain,
            },
        )
        uow.events.append(event)

    def _apply_result(
        self,
        uow: UnitOfWork,
        tenant: Tenant,
        enrollment: Enrollment,
        cmd: QueuedCommand,
        report: CommandReport,
        now: datetime,
    ) -> None:
        if cmd.request_type == "DeviceInformation":
            responses = report.payload.get("QueryResponses")
            if isinstance(responses, dict):
                fields: dict[str, object] = {"last_seen_at": now}
                for key, name in _INVENTORY_KEYS.items():
                    value = responses.get(key)
                    if value is None:
                        continue
                    if name in ("capacity_gb", "battery_level"):
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            fields[name] = float(value)
                    elif isinstance(value, str):
                        fields[name] = value
                uow.devices.update_inventory(tenant.id, enrollment.device_id, fields)
        elif cmd.request_type == "EraseDevice":
            # The device wipes itself: its identity is gone, so this enrollment ends here.
            uow.enrollments.end(enrollment.id, EnrollmentStatus.REMOVED, now)
            uow.commands.cancel_pending(enrollment.id)
