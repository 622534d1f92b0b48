"""The innermost check-in handler: enrollment state and the command queue (NanoMDM's ``nanomdm.Service``).

It runs behind CertAuth (the request carries its verified signer) and RecordRefusals (a raised refusal
leaves its event there), so each method is the use case only: check that the signer is bound to the
enrollment the message speaks for, then change what the message changes, with its OK event, in one
transaction.

Messages Pomona knows but does not implement answer as Apple documents for a server without the
feature: UserAuthenticate is declined with 410 (the Mac stops asking for that user's session),
GetBootstrapToken gets a response without a token, and SetBootstrapToken, DeclarativeManagement and
GetToken (no token service) are refused with 400. Each leaves an event under the step ``checkin``.

A TokenUpdate on a user channel (``UserID`` / ``EnrollmentUserID``: a macOS user, a Shared iPad user) is
recorded as an event and stored nowhere: the device enrollment keeps the device channel's push token.

The hot path is an idle device on the command channel: one read outside any transaction
(``Database.channel_state``) answers it, and nothing is written for a device seen within TOUCH_EVERY.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from pomona.domain.errors import (
    CertDeviceMismatchError,
    CertNotTrustedError,
    DeviceBlockedError,
    IdentityEndedError,
    MessageTypeUnsupportedError,
    PomonaError,
    TopicMismatchError,
    UnenrollDeviceError,
    UnknownEnrollmentError,
    UserChannelDeclinedError,
)
from pomona.domain.models import (
    CommandStatus,
    Device,
    Enrollment,
    EnrollmentStatus,
    EnrollmentType,
    Event,
    Step,
    Tenant,
)
from pomona.domain.policy import Stage, decide, platform_of_product
from pomona.ports import (
    CertStore,
    CommandChannel,
    CommandQueue,
    DeviceStore,
    HasEvents,
    PushQueue,
    TenantStore,
    Transactions,
)
from pomona.protocol.checkin import (
    Authenticate,
    CheckOut,
    DeclarativeManagement,
    GetBootstrapToken,
    GetToken,
    SetBootstrapToken,
    TokenUpdate,
    UserAuthenticate,
    encode_get_bootstrap_token_response,
)
from pomona.protocol.command import CommandReport, ReportStatus
from pomona.services.base import ServiceBase
from pomona.services.checkin.handler import Refused, Request
from pomona.services.checkin.results import ResultStores, result_hook
from pomona.services.policy import DecisionStores, PolicyService, refusal
from pomona.services.release import RELEASE, configuration_done, release_command

TOUCH_EVERY = timedelta(seconds=60)
"""A device's last-seen time is written at most this often."""

_STATUS = {
    ReportStatus.ACKNOWLEDGED: CommandStatus.ACKNOWLEDGED,
    ReportStatus.ERROR: CommandStatus.ERROR,
    ReportStatus.COMMAND_FORMAT_ERROR: CommandStatus.COMMAND_FORMAT_ERROR,
    ReportStatus.NOT_NOW: CommandStatus.NOT_NOW,
}


class CheckinStores(DecisionStores, ResultStores, HasEvents, Protocol):
    """The check-in chain's stores: the tenant, the identities SCEP issued, devices, enrollments and their
    commands, the push queue a TokenUpdate re-arms, what the policy reads at Authenticate
    (``DecisionStores``) and what command results change (``ResultStores``). Nothing of admin tokens,
    enrollment tokens, webhooks, health or the push certificate."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def certs(self) -> CertStore: ...
    @property
    def devices(self) -> DeviceStore: ...
    @property
    def commands(self) -> CommandQueue: ...
    @property
    def pushes(self) -> PushQueue: ...


class CheckinDatabase(Transactions[CheckinStores], CommandChannel, Protocol):
    """The check-in chain's stores, and the command channel's hot path (its read, its take, the
    transaction of a result)."""


@dataclass
class CheckinCore(ServiceBase[CheckinStores]):
    db: CheckinDatabase
    policy: PolicyService

    # --- Authenticate ----------------------------------------------------------------------------
    def authenticate(self, req: Request, msg: Authenticate) -> bytes:
        """Enroll the device (or refresh its enrollment) if the topic, the identity and the policy allow."""
        fingerprint = req.signer.fingerprint
        now = self.clock.now()
        corporate_id: str | None = None
        refused: PomonaError | None = None
        upn: str | None = None
        user_id: str | None = None
        with self.db.unit_of_work() as uow:
            tenant = uow.tenants.get(req.tenant.id) or req.tenant  # fresh: authority, push certificate
            if msg.topic != tenant.push_topic:
                raise TopicMismatchError(f"topic {msg.topic!r} is not this tenant's push topic")
            issued = uow.certs.get(fingerprint)
            if issued is None or issued.tenant_id != tenant.id:
                raise CertNotTrustedError("the identity was not issued through this tenant's SCEP")
            # An identity serves the one enrollment it was first bound to, while that enrollment is
            # active (a refresh). Once it ended (CheckOut, re-enrollment, retire, block) the identity has
            # ended too: a device enrolls again with a new identity from SCEP, and a replay of the old one
            # is refused before it can touch the device's current enrollment. (An identity of an older
            # release may have no binding recorded: its enrollments, found by fingerprint, say the same.)
            if issued.enrollment_id is not None:
                bound = uow.enrollments.get(tenant.id, issued.enrollment_id)
            else:
                bound = uow.enrollments.by_fingerprint(fingerprint)
            if bound is not None and bound.udid != msg.udid:
                raise CertDeviceMismatchError(
                    "this identity belongs to another device", bound_udid=bound.udid, udid=msg.udid
                )
            if (issued.enrollment_id is not None or bound is not None) and (
                bound is None or bound.status is not EnrollmentStatus.ACTIVE
            ):
                raise IdentityEndedError(
                    "this identity's enrollment has ended; enrolling again needs a new identity",
                    enrollment_id=issued.enrollment_id or (None if bound is None else bound.id),
                    status=None if bound is None else bound.status.value,
                    udid=msg.udid,
                )
            # An identity issued for an ADE challenge (services/ade.py) enrolls the one device whose
            # verified MachineInfo the challenge answered: corporate, and without a user for auth none.
            ade = issued.ade_serial is not None
            if ade and msg.serial_number != issued.ade_serial:
                raise CertDeviceMismatchError(
                    "this identity was issued for another ADE device",
                    ade_serial=issued.ade_serial,
                    serial=msg.serial_number,
                    udid=msg.udid,
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
                    ade=ade,
                    userless=ade and issued.user_id is None,
                )
            )
            if not decision.allowed:
                refused = refusal(decision)
            else:
                self._enroll(
                    uow,
                    fingerprint,
                    msg,
                    tenant,
                    issued.user_id,
                    upn,
                    decision.is_dem,
                    corp is not None,
                    now,
                    current,
                    ade=ade,
                )
                if corporate_id is not None:
                    uow.corporate.set_state(corporate_id, "enrolled", now)
        if refused is not None:
            if corporate_id is not None:
                with self.db.unit_of_work() as uow:
                    uow.corporate.set_state(corporate_id, "failed", now)
            raise Refused(
                refused,
                user_id=user_id,
                upn=upn,
                detail={**refused.context, "product": msg.product_name, "os_version": msg.os_version},
            )
        return b""

    def _enroll(
        self,
        uow: CheckinStores,
        fingerprint: str,
        msg: Authenticate,
        tenant: Tenant,
        user_id: str | None,
        upn: str | None,
        is_dem: bool,
        corporate: bool,
        now: datetime,
        current_enrollments: list[Enrollment],
        *,
        ade: bool = False,
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
            EnrollmentType.ADE
            if ade
            else EnrollmentType.DEM
            if is_dem
            else EnrollmentType.CORPORATE
            if corporate
            else EnrollmentType.BYOD
        )
        replaced = None
        enrollment_id = None
        for current in current_enrollments:
            if current.cert_fingerprint == fingerprint and current.udid == msg.udid:
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
                    cert_fingerprint=fingerprint,
                    topic=msg.topic,
                    started_at=now,
                )
            )
            uow.certs.bind(fingerprint, enrollment_id)
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

    # --- the enrollment a message speaks for ------------------------------------------------------
    def _event(
        self, enrollment: Enrollment, step: Step, detail: dict[str, object], *, upn: str | None = None
    ) -> Event:
        """An OK event about an enrollment: its tenant, user and device."""
        return self.ok_event(
            enrollment.tenant_id,
            step,
            user_id=enrollment.user_id,
            upn=upn,
            udid=enrollment.udid,
            enrollment_id=enrollment.id,
            detail=detail,
        )

    def _bound_enrollment(
        self, uow: CheckinStores, req: Request, udid: str | None
    ) -> tuple[Enrollment, datetime | None]:
        """The active enrollment of the signer, which must be this tenant's and (if named) this device's."""
        fingerprint = req.signer.fingerprint
        found = uow.enrollments.active_by_fingerprint(fingerprint)
        if found is None:
            raise self._not_active(uow, fingerprint, udid)
        enrollment, last_seen = found
        if enrollment.tenant_id != req.tenant.id:
            raise CertNotTrustedError("identity of another tenant")
        if udid is not None and enrollment.udid != udid:
            raise CertDeviceMismatchError(
                "the message names another device than the identity's", bound_udid=enrollment.udid, udid=udid
            )
        return enrollment, last_seen

    def _check_bound(self, req: Request, udid: str | None) -> Enrollment:
        with self.db.unit_of_work(readonly=True) as uow:
            return self._bound_enrollment(uow, req, udid)[0]

    def _not_active(self, uow: CheckinStores, fingerprint: str, udid: str | None) -> PomonaError:
        """Why an identity has no active enrollment: a blocked or retired device is told to unenroll; an
        identity the device replaced by enrolling again has ended (IDENTITY_ENDED: the device has a newer
        one); one that never authenticated, or whose device checked out, is UNKNOWN_ENROLLMENT."""
        last = uow.enrollments.by_fingerprint(fingerprint)
        if last is not None and last.status is EnrollmentStatus.BLOCKED:
            return DeviceBlockedError("this device is blocked", udid=udid)
        if last is not None and last.status is EnrollmentStatus.RETIRED:
            return UnenrollDeviceError("this enrollment was retired", udid=udid)
        if last is not None and last.status is EnrollmentStatus.REPLACED:
            return IdentityEndedError(
                "this identity was replaced by the device's newer one", enrollment_id=last.id, udid=udid
            )
        return UnknownEnrollmentError("no active enrollment for this identity", udid=udid)

    # --- TokenUpdate, CheckOut --------------------------------------------------------------------
    def token_update(self, req: Request, msg: TokenUpdate) -> bytes:
        """Store the device channel's push token; a user channel's token is recorded, not stored."""
        if msg.topic != req.tenant.push_topic:
            raise TopicMismatchError(f"topic {msg.topic!r} is not this tenant's push topic")
        now = self.clock.now()
        tenant_id = req.tenant.id
        with self.db.unit_of_work() as uow:
            enrollment, _ = self._bound_enrollment(uow, req, msg.udid)
            if msg.is_user_channel:
                detail: dict[str, object] = {
                    "channel": "user",
                    "device_user_id": msg.user_id,
                    "device_enrollment_user_id": msg.enrollment_user_id,
                    "device_user_short_name": msg.user_short_name,
                    "stored": False,
                }
                uow.events.append(self._event(enrollment, Step.TOKENUPDATE, detail))
                return b""
            uow.enrollments.update_token(
                enrollment.id, msg.token, msg.push_magic, msg.unlock_token, msg.awaiting_configuration, now
            )
            uow.devices.touch(enrollment.device_id, now)
            user = None if enrollment.user_id is None else uow.users.get(tenant_id, enrollment.user_id)
            upn = None if user is None else user.upn  # the funnel of a user's attempt reads it
            detail = {"awaiting_configuration": msg.awaiting_configuration}
            uow.events.append(self._event(enrollment, Step.TOKENUPDATE, detail, upn=upn))
            held = replace(enrollment, awaiting_configuration=msg.awaiting_configuration)
            if configuration_done(uow, held):  # held at Setup Assistant with nothing to do first
                self._release(uow, held, now)
            # A 410'd token is valid again, and a push is requested for what waits: the release just
            # queued included (the device waits at Setup Assistant for a push to fetch it).
            uow.pushes.token_updated(enrollment.id, tenant_id, now)
        if enrollment.token_updated_at is None:  # the enrollment's first push token: it is complete
            self.metrics.enrollment_completed()
        return b""

    def check_out(self, req: Request, msg: CheckOut) -> bytes:
        """The MDM profile was removed: the enrollment ends and its queue is cancelled."""
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            enrollment, _ = self._bound_enrollment(uow, req, msg.udid)
            uow.enrollments.end(enrollment.id, EnrollmentStatus.REMOVED, now)
            cancelled = uow.commands.cancel_pending(enrollment.id)
            uow.events.append(self._event(enrollment, Step.CHECKOUT, {"cancelled_commands": cancelled}))
        return b""

    # --- known messages Pomona does not implement -------------------------------------------------
    def user_authenticate(self, req: Request, msg: UserAuthenticate) -> bytes:
        self._check_bound(req, msg.udid)
        raise UserChannelDeclinedError("Pomona manages the device channel only, not this user's channel")

    def get_bootstrap_token(self, req: Request, msg: GetBootstrapToken) -> bytes:
        with self.db.unit_of_work() as uow:
            enrollment, _ = self._bound_enrollment(uow, req, msg.udid)
            detail = {"message_type": msg.message_type, "bootstrap_token": False}
            uow.events.append(self._event(enrollment, Step.CHECKIN, detail))
        return encode_get_bootstrap_token_response(None)

    def set_bootstrap_token(self, req: Request, msg: SetBootstrapToken) -> bytes:
        self._check_bound(req, msg.udid)
        raise MessageTypeUnsupportedError("Pomona does not escrow bootstrap tokens")

    def declarative_management(self, req: Request, msg: DeclarativeManagement) -> bytes:
        self._check_bound(req, msg.udid)
        raise MessageTypeUnsupportedError(f"Pomona does not serve declarative management ({msg.endpoint})")

    def get_token(self, req: Request, msg: GetToken) -> bytes:
        self._check_bound(req, msg.udid)
        raise MessageTypeUnsupportedError(f"no token service {msg.token_service_type!r}")

    # --- the command channel ----------------------------------------------------------------------
    def command_and_report_results(self, req: Request, report: CommandReport) -> bytes:
        """Store the reported result, return the next command.

        A command the device answered NotNow is not sent again until the device's next Idle, which
        starts a new connection (as Apple's protocol describes).
        """
        fingerprint = req.signer.fingerprint
        now = self.clock.now()
        if report.is_idle:
            # The hot path: one read outside any transaction; nothing to write for an idle device
            # with an empty queue that was seen within the last minute.
            state = self.db.channel_state(fingerprint, skip_not_now=False)
            if state is None:
                with self.db.unit_of_work(readonly=True) as uow:
                    raise self._not_active(uow, fingerprint, report.udid)
            if state.tenant_id != req.tenant.id:
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
                device = None if fresh else state.device_id
                if self.db.take_command(state.next_command_id, state.enrollment_id, device, now):
                    return state.next_command_body
        else:
            answer = self._report(req, report, now)
            if answer is not None:
                return answer
        with self.db.unit_of_work() as uow:
            enrollment, last_seen = self._bound_enrollment(uow, req, report.udid)
            if not report.is_idle:
                self._store_result(uow, req.tenant, enrollment, report, now)
            nxt = uow.commands.next_for(enrollment.id, skip_not_now=not report.is_idle)
            if nxt is not None:
                uow.commands.mark_sent(nxt.id, now)
            if last_seen is None or now - last_seen >= TOUCH_EVERY:
                uow.devices.touch(enrollment.device_id, now)
            return b"" if nxt is None else nxt.body

    def _report(self, req: Request, report: CommandReport, now: datetime) -> bytes | None:
        """A result and the next command in one command-channel transaction (the storage's fast path),
        or None when the full path below must answer: a refusal (no active enrollment, another tenant's
        or device's identity), an unknown CommandUUID, an Acknowledged command with a side effect
        (results.py), a device held at Setup Assistant. None is decided before anything is written.
        The rows and the event are those of the full path."""
        assert report.command_uuid is not None
        status = _STATUS[report.status]
        with self.db.command_channel() as ch:
            e = ch.bound(req.signer.fingerprint)
            if (
                e is None
                or e.tenant_id != req.tenant.id
                or (report.udid is not None and e.udid != report.udid)
                or e.awaiting_configuration
            ):
                return None
            cmd = ch.command(e, report.command_uuid)
            if cmd is None or (
                status is CommandStatus.ACKNOWLEDGED and result_hook(cmd.request_type) is not None
            ):
                return None
            ch.record_result(cmd, status, report.raw, report.error_chain, now)
            detail: dict[str, object] = {
                "command_uuid": cmd.command_uuid,
                "request_type": cmd.request_type,
                "status": status.value,
                "error_chain": report.error_chain,
            }
            ch.append_event(
                self.ok_event(
                    e.tenant_id,
                    Step.COMMAND,
                    user_id=e.user_id,
                    udid=e.udid,
                    enrollment_id=e.id,
                    detail=detail,
                )
            )
            nxt = ch.next_command(e.id, skip_not_now=True)
            if nxt is not None:
                ch.mark_sent(nxt[0], now)
            if e.last_seen_at is None or now - e.last_seen_at >= TOUCH_EVERY:
                ch.touch(e.device_id, now)
            return b"" if nxt is None else nxt[1]

    def _store_result(
        self, uow: CheckinStores, tenant: Tenant, enrollment: Enrollment, report: CommandReport, now: datetime
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
            hook = result_hook(cmd.request_type)
            if hook is not None:
                hook(uow, enrollment, report, now)
        detail: dict[str, object] = {
            "command_uuid": cmd.command_uuid,
            "request_type": cmd.request_type,
            "status": status.value,
            "error_chain": report.error_chain,
        }
        held = enrollment
        if enrollment.awaiting_configuration:  # held at Setup Assistant (services/release.py)
            held = uow.enrollments.get(enrollment.tenant_id, enrollment.id) or enrollment
            if not held.awaiting_configuration:
                detail["released"] = True  # DeviceConfigured acknowledged: the hold ended
        uow.events.append(self._event(enrollment, Step.COMMAND, detail))
        if (
            status is not CommandStatus.NOT_NOW
            and cmd.request_type != RELEASE  # a refused release is not sent again in a loop
            and configuration_done(uow, held)
        ):
            self._release(uow, held, now)

    def _release(self, uow: CheckinStores, enrollment: Enrollment, now: datetime) -> None:
        """Queue DeviceConfigured: the held device's configuration step is done (services/release.py)."""
        (cmd,) = uow.commands.enqueue_many([release_command(enrollment, now)])
        detail = {
            "action": "release",
            "auto": True,
            "command_uuid": cmd.command_uuid,
            "request_type": RELEASE,
        }
        uow.events.append(self._event(enrollment, Step.COMMAND, detail))
