"""The ADE enrollment endpoint: what an Automated Device Enrollment device meets in Setup Assistant.

A device that Apple Business Manager assigned to one of the tenant's ADE profiles POSTs its signed
MachineInfo to the profile's ``url`` (``POST /ade/{tenant_id}/enroll``, ``Urls.ade_enroll``), or, with
modern authentication, opens the profile's ``configuration_web_url`` (``/ade/{tenant_id}/web``) with the
same MachineInfo in its ``x-apple-aspen-deviceinfo`` header. :meth:`AdeEnrollmentService.machine_info`
runs, in this order, and the first refusal wins (each leaves an event at step ``ade`` with its code, in
its own transaction):

1. the tenant exists (else UNKNOWN_ENROLLMENT, no event: the URL names no tenant);
2. the MachineInfo verifies against the trusted device CA keys (Apple's pinned iPhone Device CA key, and
   a test device CA only when ``POMONA_ADE_TEST_DEVICE_CA`` says so): MACHINEINFO_MALFORMED,
   MACHINEINFO_SIGNATURE_INVALID, MACHINEINFO_SIGNER_UNTRUSTED;
3. ABM lists the serial for this tenant and has not deleted it: DEP_DEVICE_NOT_IN_ABM;
4. the device has an ADE profile: its explicit assignment, else the profile ABM shows on it, else its
   token's default (DEP_PROFILE_NOT_ASSIGNED);
5. the policy (``domain.policy.decide``, corporate, userless until a user signs in): MDM authority, push
   certificate, blocked device, platform and OS range. An OS below the minimum on a device that says
   ``MDM_CAN_REQUEST_SOFTWARE_UPDATE`` gets Apple's 403 ``com.apple.softwareupdate.required`` answer
   (the event is still OS_VERSION_TOO_LOW, with ``software_update_required: true``).

Then the profile's authentication decides (:meth:`AdeEnrollmentService.enroll`): ``none`` serves the
profile at once, without a user; ``legacy`` asks Setup Assistant for a user name and password (401 with
``WWW-Authenticate: Basic``), checks them as the portal does (argon2, rate-limited per address and UPN),
refuses a user who must use MFA (DEP_MFA_WITH_LEGACY_AUTH: Setup Assistant's prompt cannot do MFA, the
founding document's "stuck at user login") and decides again with the user; ``modern`` is served by the
web view (http/ade.py), which signs the user in with the portal's sign-in and TOTP and then calls
:meth:`AdeEnrollmentService.profile_for`.

The profile served is the enrollment link's (``EnrollmentService.signed_profile``) whose SCEP challenge
is a one-use enrollment token of :data:`CHALLENGE_LIFETIME`, bound to the tenant, the user (if any) and
the serial (``EnrollmentToken.ade_serial``). SCEP copies the serial onto the identity it issues, and
Authenticate (services/checkin/core.py) enrolls that identity as ``EnrollmentType.ADE`` (corporate)
only for a device of that serial (else CERT_DEVICE_MISMATCH).

https://developer.apple.com/documentation/devicemanagement/machineinfo
https://developer.apple.com/documentation/devicemanagement/device_assignment/authenticating_through_web_views
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final, Protocol

from pomona.domain.ade_profile import AuthMode
from pomona.domain.errors import PolicyError, PomonaError, UnknownTenantError, from_protocol
from pomona.domain.models import EnrollmentToken, Step, Tenant, User, tenant_id_of
from pomona.domain.policy import Decision, Stage, decide, platform_of_product
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import AbmProfileRecord, AbmStore, EnrollmentTokenStore, HasEvents, TenantStore
from pomona.protocol import cms
from pomona.protocol.errors import ProtocolError
from pomona.protocol.machineinfo import (
    DEFAULT_MAX_SIZE,
    MachineInfo,
    SoftwareUpdateRequired,
    software_update_required_body,
    verify_machine_info,
)
from pomona.services.admin import hash_secret
from pomona.services.base import ServiceBase
from pomona.services.context import mark_identified
from pomona.services.enrollment import EnrollmentService
from pomona.services.policy import DecisionStores, PolicyService, refusal
from pomona.services.portal import SignIn, SignInStatus

#: The largest MachineInfo read (the body is cut off past it before anything is parsed).
MAX_MACHINE_INFO: Final = DEFAULT_MAX_SIZE
#: How long the SCEP challenge of a served ADE profile lasts (one use).
CHALLENGE_LIFETIME: Final = timedelta(minutes=15)
#: How long a verified MachineInfo is believed by the modern-authentication web view.
WEB_STATE_LIFETIME: Final = timedelta(minutes=15)
MAX_BASIC_AUTH: Final = 1024  # an Authorization header longer than this is not read


class AdeStores(DecisionStores, HasEvents, Protocol):
    """The ADE endpoint's stores: the tenant, the ABM devices and ADE profiles, the policy's facts, and
    the one-use enrollment tokens its profiles' SCEP challenges are."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def abm(self) -> AbmStore: ...
    @property
    def enrollment_tokens(self) -> EnrollmentTokenStore: ...


class AdeAnswerKind(StrEnum):
    """What the endpoint answers a device (the HTTP adapter picks the status from it)."""

    PROFILE = "profile"  # 200 application/x-apple-aspen-config
    CREDENTIALS = "credentials"  # 401 WWW-Authenticate: Basic (legacy authentication)
    SOFTWARE_UPDATE = "software_update"  # 403 com.apple.softwareupdate.required
    TRY_LATER = "try_later"  # 429: too many wrong passwords from this address for this UPN


@dataclass(frozen=True)
class AdeAnswer:
    kind: AdeAnswerKind
    body: bytes = b""
    realm: str = ""
    retry_after: int = 0
    update: dict[str, object] | None = None


@dataclass(frozen=True)
class AdeDevice:
    """A verified MachineInfo of a serial ABM lists for the tenant, and the ADE profile it gets. Kept by
    the web view between requests (signed, short-lived): :meth:`to_state` / :meth:`from_state`."""

    tenant: Tenant
    serial: str
    udid: str
    product: str
    os_version: str | None
    profile: str
    auth: AuthMode
    can_update: bool = False  # MDM_CAN_REQUEST_SOFTWARE_UPDATE

    def to_state(self, at: float) -> dict[str, object]:
        return {
            "t": self.tenant.id,
            "serial": self.serial,
            "udid": self.udid,
            "product": self.product,
            "os": self.os_version,
            "profile": self.profile,
            "auth": self.auth.value,
            "at": at,
        }


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header, or None (absent, another scheme, bad)."""
    if not header or len(header) > MAX_BASIC_AUTH:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = text.partition(":")
    return (user, password) if sep and user else None


@dataclass
class AdeEnrollmentService(ServiceBase[AdeStores]):
    enrollment: EnrollmentService
    policy: PolicyService
    #: The device CA keys a MachineInfo signer must chain to: Apple's, plus a test CA in test mode.
    trusted_keys: Sequence[cms.PublicKey]
    #: The portal's password sign-in (services/portal.py ``sign_in_password``): argon2, rate-limited.
    sign_in_password: Callable[[Tenant, str, str, str], SignIn]

    # --- the MachineInfo ---------------------------------------------------------------------------
    def machine_info(self, tenant_id: str, body: bytes) -> AdeDevice:
        """Checks 1 to 4 of the module doc: the verified device, its ABM listing and its profile."""
        tid = tenant_id_of(tenant_id)
        with self.db.unit_of_work(readonly=True) as uow:
            tenant = None if tid is None else uow.tenants.get(tid)
        if tenant is None:
            raise UnknownTenantError(f"no tenant {tenant_id[:64]!r}")
        try:
            info = verify_machine_info(body, self.trusted_keys, max_size=MAX_MACHINE_INFO).info
        except ProtocolError as exc:
            err = from_protocol(exc)
            self.record_failure(tenant.id, Step.ADE, err.reason, detail={"error": err.detail})
            raise err from None
        mark_identified()  # a device Apple (or the test CA) vouches for: its refusals are all recorded
        try:
            with self.db.unit_of_work(readonly=True) as uow:
                listed = [
                    r for r in uow.abm.devices(tenant.id, serial=info.serial, limit=10) if not r.deleted
                ]
                if not listed:
                    raise PolicyError(
                        msg("error.ade.not_in_abm", serial=info.serial),
                        reason=ReasonCode.DEP_DEVICE_NOT_IN_ABM,
                        serial=info.serial,
                    )
                record = self._profile_of(
                    uow, tenant.id, info.serial, listed[0].token_id, listed[0].device.profile_uuid
                )
            if record is None:
                raise PolicyError(
                    msg("error.ade.no_profile", serial=info.serial),
                    reason=ReasonCode.DEP_PROFILE_NOT_ASSIGNED,
                    serial=info.serial,
                )
        except PomonaError as exc:
            self._refused(tenant, info, exc)
            raise
        auth = AuthMode(str(record.settings.get("auth", AuthMode.MODERN.value)))
        device = AdeDevice(
            tenant,
            info.serial,
            info.udid,
            info.product,
            info.os_version,
            record.name,
            auth,
            info.mdm_can_request_software_update,
        )
        with self.db.unit_of_work() as uow:
            uow.events.append(
                self.ok_event(
                    tenant.id,
                    Step.ADE,
                    serial=info.serial,
                    udid=info.udid,
                    detail={
                        "stage": "machineinfo",
                        "product": info.product,
                        "os_version": info.os_version,
                        "auth": auth.value,
                        "profile": record.name,
                    },
                )
            )
        return device

    @staticmethod
    def _profile_of(
        uow: AdeStores, tenant_id: str, serial: str, token_id: str, profile_uuid: str
    ) -> AbmProfileRecord | None:
        """The ADE profile Pomona wants on the device: its explicit assignment, else the one ABM shows
        on it, else its token's default (then every token's)."""
        profiles = uow.abm.profiles(tenant_id)
        wanted = uow.abm.assignment(tenant_id, serial)
        if wanted is not None:
            found = next((p for p in profiles if p.id == wanted.profile_id), None)
            if found is not None:
                return found
        if profile_uuid:
            found = next((p for p in profiles if profile_uuid in p.definitions.values()), None)
            if found is not None:
                return found
        return next((p for p in profiles if p.is_default and p.token_id == token_id), None) or next(
            (p for p in profiles if p.is_default and p.token_id is None), None
        )

    def _refused(
        self,
        tenant: Tenant,
        info: MachineInfo | AdeDevice,
        exc: PomonaError,
        *,
        upn: str | None = None,
        user_id: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.record_failure(
            tenant.id,
            Step.ADE,
            exc.reason,
            user_id=user_id,
            upn=upn,
            serial=info.serial,
            udid=info.udid,
            detail={
                "error": exc.detail,
                **exc.context,
                "product": info.product,
                "os_version": info.os_version,
                **(extra or {}),
            },
        )

    # --- the policy --------------------------------------------------------------------------------
    def _decide(self, device: AdeDevice, user: User | None) -> Decision:
        with self.db.unit_of_work(readonly=True) as uow:
            tenant = uow.tenants.get(device.tenant.id) or device.tenant  # fresh: authority, push cert
            return decide(
                self.policy.policy_input(
                    uow,
                    tenant,
                    stage=Stage.PROFILE,
                    user=user,
                    platform=platform_of_product(device.product),
                    os_version=device.os_version,
                    serial=device.serial,
                    udid=device.udid,
                    ade=True,
                    userless=user is None,
                )
            )

    def check(self, device: AdeDevice, user: User | None, can_update: bool) -> AdeAnswer | None:
        """The policy for the device (and its user): None when allowed; Apple's software update answer
        for an OS below the minimum on a device that can update; else the refusal is raised. Either way a
        refusal leaves its event."""
        decision = self._decide(device, user)
        if decision.allowed:
            return None
        upn = None if user is None else user.upn
        user_id = None if user is None else user.id
        err = refusal(decision)
        if decision.reason is ReasonCode.OS_VERSION_TOO_LOW:
            minimum = str(decision.facts.get("minimum", ""))
            update = can_update and bool(minimum)
            self._refused(
                device.tenant,
                device,
                err,
                upn=upn,
                user_id=user_id,
                extra={"software_update_required": update, "minimum": minimum},
            )
            if update:
                answer = SoftwareUpdateRequired(
                    os_version=minimum, message=msg("error.ade.update", minimum=minimum)
                )
                return AdeAnswer(AdeAnswerKind.SOFTWARE_UPDATE, update=software_update_required_body(answer))
            raise err
        self._refused(device.tenant, device, err, upn=upn, user_id=user_id)
        raise err

    # --- the endpoint --------------------------------------------------------------------------------
    def enroll(self, tenant_id: str, body: bytes, authorization: str | None, client_ip: str) -> AdeAnswer:
        """``POST /ade/{tenant_id}/enroll``: the profile, a request for credentials, Apple's software
        update answer, or a raised refusal (module doc)."""
        device = self.machine_info(tenant_id, body)
        early = self.check(device, None, device.can_update)
        if early is not None:
            return early
        if device.auth is AuthMode.NONE:
            return AdeAnswer(AdeAnswerKind.PROFILE, self.profile_for(device, None))
        # legacy; and modern, which a device reaches through the web view, never here: a POST for it is
        # answered as legacy would be (password only), so an MFA-required user is refused all the same.
        creds = basic_credentials(authorization)
        if creds is None:
            return AdeAnswer(AdeAnswerKind.CREDENTIALS, realm=device.tenant.name)
        result = self.sign_in_password(device.tenant, creds[0], creds[1], client_ip)
        return self.after_sign_in(device, result, device.can_update, legacy=True)

    def after_sign_in(
        self, device: AdeDevice, result: SignIn, can_update: bool, *, legacy: bool
    ) -> AdeAnswer:
        """What a sign-in leads to: the profile for the signed-in user, or why not."""
        status = result.status
        if status is SignInStatus.BAD_CREDENTIALS:
            return AdeAnswer(AdeAnswerKind.CREDENTIALS, realm=device.tenant.name)
        if status is SignInStatus.RATE_LIMITED:
            return AdeAnswer(AdeAnswerKind.TRY_LATER, retry_after=result.retry_after)
        if status is SignInStatus.REFUSED:
            assert result.reason is not None
            err = PolicyError(msg(f"decision.{result.reason.value}", upn=result.upn), reason=result.reason)
            self._refused(device.tenant, device, err, upn=result.upn)
            raise err
        if legacy and status in (SignInStatus.NEED_TOTP, SignInStatus.ENROL_TOTP):
            err = PolicyError(
                msg("error.ade.mfa_legacy", upn=result.upn, profile=device.profile),
                reason=ReasonCode.DEP_MFA_WITH_LEGACY_AUTH,
            )
            user = result.user
            self._refused(
                device.tenant,
                device,
                err,
                upn=result.upn,
                user_id=None if user is None else user.id,
                extra={"upn": result.upn, "profile": device.profile},
            )
            raise err
        assert status is SignInStatus.SIGNED_IN and result.user is not None
        answer = self.check(device, result.user, can_update)
        if answer is not None:
            return answer
        return AdeAnswer(AdeAnswerKind.PROFILE, self.profile_for(device, result.user))

    def profile_for(self, device: AdeDevice, user: User | None) -> bytes:
        """The signed enrollment profile for the device (and its user): a one-use challenge bound to
        the tenant, the serial and the user, then the event that it was served."""
        now = self.clock.now()
        secret = secrets.token_urlsafe(32)
        token = EnrollmentToken(
            id=str(uuid.uuid4()),
            tenant_id=device.tenant.id,
            user_id=None if user is None else user.id,
            expires_at=now + CHALLENGE_LIFETIME,
            uses_allowed=1,
            uses_count=0,
            created_at=now,
            ade_serial=device.serial,
        )
        with self.db.unit_of_work(readonly=True) as uow:
            tenant = uow.tenants.get(device.tenant.id) or device.tenant
        signed = self.enrollment.signed_profile(tenant, secret)
        with self.db.unit_of_work() as uow:
            uow.enrollment_tokens.add(token, hash_secret(secret))
            uow.events.append(
                self.ok_event(
                    tenant.id,
                    Step.ADE,
                    user_id=token.user_id,
                    upn=None if user is None else user.upn,
                    serial=device.serial,
                    udid=device.udid,
                    detail={
                        "stage": "profile",
                        "auth": device.auth.value,
                        "profile": device.profile,
                        "upn": None if user is None else user.upn,
                        "token_id": token.id,
                    },
                )
            )
        return signed

    # --- the modern-authentication web view ------------------------------------------------------------
    def web_start(self, tenant_id: str, body: bytes) -> AdeDevice:
        """The web view's first request: the MachineInfo of its header, verified, and the policy's device
        checks (the user's come after sign-in, in :meth:`after_sign_in`). Setup Assistant opens the web
        view only for a ``modern`` profile; whoever opens it still has to sign in."""
        device = self.machine_info(tenant_id, body)
        self.check(device, None, False)
        return device

    def web_device(self, state: object, tenant_id: str, now_ts: float) -> AdeDevice | None:
        """The device the web view's signed state names, while it is fresh and for this tenant."""
        if not isinstance(state, dict) or state.get("t") != tenant_id:
            return None
        at = state.get("at")
        if not isinstance(at, int | float) or not 0 <= now_ts - at <= WEB_STATE_LIFETIME.total_seconds():
            return None
        with self.db.unit_of_work(readonly=True) as uow:
            tenant = uow.tenants.get(tenant_id)
        if tenant is None:
            return None
        try:
            return AdeDevice(
                tenant,
                str(state["serial"]),
                str(state["udid"]),
                str(state["product"]),
                None if state.get("os") is None else str(state["os"]),
                str(state["profile"]),
                AuthMode(str(state["auth"])),
            )
        except (KeyError, ValueError):
            return None
