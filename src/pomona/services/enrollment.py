"""Enrollment use cases: serving the signed profile, and answering a SCEP certificate request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pomona.domain.errors import EnrollmentTokenError, EnrollmentTokenExpiredError, PolicyError, PomonaError
from pomona.domain.models import EnrollmentToken, IssuedCert, Step, Tenant
from pomona.domain.policy import MAX_USER_AGENT, Stage, decide, platform_of_user_agent
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import CertStore, EnrollmentTokenStore, HasEvents, Pki, ProfileSigner, TenantStore
from pomona.protocol.profile import build_enrollment_profile, encode_profile
from pomona.services.admin import hash_secret
from pomona.services.base import ServiceBase
from pomona.services.context import mark_identified
from pomona.services.policy import DecisionStores, PolicyService, refusal

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"


@dataclass(frozen=True)
class Urls:
    public_url: str

    def scep(self, tenant_id: str) -> str:
        return f"{self.public_url}/scep/{tenant_id}"

    def checkin(self, tenant_id: str) -> str:
        return f"{self.public_url}/mdm/{tenant_id}/checkin"

    def server(self, tenant_id: str) -> str:
        return f"{self.public_url}/mdm/{tenant_id}/connect"

    def enroll(self, secret: str) -> str:
        return f"{self.public_url}/enroll/{secret}"

    def ade_enroll(self, tenant_id: str) -> str:
        """An ADE profile's ``url``: where the device posts its MachineInfo in Setup Assistant."""
        return f"{self.public_url}/ade/{tenant_id}/enroll"

    def ade_web(self, tenant_id: str) -> str:
        """An ADE profile's ``configuration_web_url``: the sign-in web view of modern authentication."""
        return f"{self.public_url}/ade/{tenant_id}/web"


def check_push_cert(tenant: Tenant, now: datetime) -> None:
    """A tenant without a usable push certificate cannot enroll anything ("No enrollment policy")."""
    if tenant.push_cert_pem is None or tenant.push_topic is None or tenant.push_not_after is None:
        raise PolicyError(msg("decision.APNS_CERT_MISSING"), reason=ReasonCode.APNS_CERT_MISSING)
    if tenant.push_not_after <= now:
        raise PolicyError(
            msg("error.push.expired_on", date=f"{tenant.push_not_after:%Y-%m-%d}"),
            reason=ReasonCode.APNS_CERT_EXPIRED,
        )


def check_token(token: EnrollmentToken | None, now: datetime) -> EnrollmentToken:
    if token is None:
        raise EnrollmentTokenError(msg("error.link.unknown"))
    if token.revoked:
        raise EnrollmentTokenError(msg("error.link.revoked"), token_id=token.id, revoked=True)
    if token.remaining() <= 0:
        raise EnrollmentTokenError(msg("error.link.used"), token_id=token.id, used=True)
    if token.expires_at <= now:
        raise EnrollmentTokenExpiredError(msg("error.link.expired"), token_id=token.id)
    return token


class EnrollmentStores(DecisionStores, HasEvents, Protocol):
    """The enrollment service's stores: the link's token, its tenant and user, the policy's facts, and
    the identities SCEP issues."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def enrollment_tokens(self) -> EnrollmentTokenStore: ...
    @property
    def certs(self) -> CertStore: ...


@dataclass
class EnrollmentService(ServiceBase[EnrollmentStores]):
    pki: Pki
    signer: ProfileSigner
    urls: Urls
    policy: PolicyService

    def _user_facts(
        self, uow: EnrollmentStores, token: EnrollmentToken | None
    ) -> tuple[str | None, str | None]:
        if token is None or token.user_id is None:
            return None, None
        user = uow.users.get(token.tenant_id, token.user_id)
        return token.user_id, None if user is None else user.upn

    def signed_profile(self, tenant: Tenant, challenge: str) -> bytes:
        """The tenant's signed enrollment .mobileconfig whose SCEP payload carries ``challenge`` (an
        enrollment token's secret): the enrollment link's and the ADE endpoint's (services/ade.py)."""
        assert tenant.push_topic is not None
        profile = build_enrollment_profile(
            tenant_id=tenant.id,
            organization=tenant.name,
            display_name=f"{tenant.name} device management",
            scep_url=self.urls.scep(tenant.id),
            scep_challenge=challenge,
            scep_subject=[[["O", tenant.name]], [["CN", f"Pomona device ({tenant.domain})"]]],
            scep_name=f"{tenant.name} device identity",
            server_url=self.urls.server(tenant.id),
            check_in_url=self.urls.checkin(tenant.id),
            topic=tenant.push_topic,
            allow_loopback_http=True,
        )
        return self.signer.sign(encode_profile(profile))

    def profile(self, secret: str, user_agent: str | None = None) -> bytes:
        """The signed .mobileconfig for an enrollment link, or a refusal with its reason code.

        The same checks as the portal run first, with what the browser says (platform and OS version
        from the User-Agent); Authenticate checks again with the device's own facts.
        """
        now = self.clock.now()
        # Anyone may send any User-Agent: keep a bounded prefix, and read it only for a known link.
        user_agent = None if user_agent is None else user_agent[:MAX_USER_AGENT]
        decision = None
        active = 0
        with self.db.unit_of_work(readonly=True) as uow:
            raw = uow.enrollment_tokens.by_hash(hash_secret(secret))
            if raw is not None and raw.ade_serial is not None:
                raw = None  # an ADE profile's challenge is no enrollment link (services/ade.py)
            if raw is not None:
                mark_identified()  # a link that exists: its refusals are never rate-limited
            tenant = None if raw is None else uow.tenants.get(raw.tenant_id)
            user = None if raw is None or raw.user_id is None else uow.users.get(raw.tenant_id, raw.user_id)
            user_id, upn = (None if raw is None else raw.user_id), (None if user is None else user.upn)
            if tenant is not None and raw is not None:
                platform, os_version = platform_of_user_agent(user_agent)
                decision = decide(
                    self.policy.policy_input(
                        uow, tenant, stage=Stage.PROFILE, user=user, platform=platform, os_version=os_version
                    )
                )
                active = decision.device_count  # no device facts here: every active enrollment counts
        try:
            token = check_token(raw, now)
            assert tenant is not None and decision is not None
            if not decision.allowed:
                raise refusal(decision)
        except PomonaError as exc:
            if raw is not None:
                self.record_failure(
                    raw.tenant_id,
                    Step.PROFILE,
                    exc.reason,
                    user_id=user_id,
                    upn=upn,
                    detail={"error": exc.detail, **exc.context, "user_agent": user_agent},
                )
            raise
        signed = self.signed_profile(tenant, secret)
        with self.db.unit_of_work() as uow:
            # A user who already has an active enrollment and downloads the profile again: the evidence
            # diagnosis reads for MDM_PROFILE_ALREADY_INSTALLED (iOS refuses a second MDM profile).
            uow.events.append(
                self.ok_event(
                    tenant.id,
                    Step.PROFILE,
                    user_id=user_id,
                    upn=upn,
                    detail={
                        "token_id": token.id,
                        "user_agent": user_agent,
                        "user_active_enrollments": active,
                        "repeat_download": active > 0,
                    },
                )
            )
        return signed

    def scep_issue(
        self,
        tenant_id: str,
        challenge: str | None,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        subject: x509.Name,
    ) -> x509.Certificate:
        """Check the SCEP challenge against the enrollment token, consume one use, and issue the identity.

        Consuming the token and recording the certificate happen in one transaction.
        """
        now = self.clock.now()
        secret = challenge or ""
        user_id: str | None = None
        upn: str | None = None
        try:
            with self.db.unit_of_work() as uow:
                raw = uow.enrollment_tokens.by_hash_for_update(hash_secret(secret)) if secret else None
                if raw is not None and raw.tenant_id != tenant_id:
                    raw = None  # another tenant's token is no token here
                if raw is not None:
                    mark_identified()  # a challenge that exists: its refusals are never rate-limited
                user_id, upn = self._user_facts(uow, raw)
                token = check_token(raw, now)
                pair = uow.tenants.ca_keypair(tenant_id)
                assert pair is not None
                ca = self.pki.load_ca(pair.cert_pem, pair.key_pem)
                cert = ca.issue(public_key, subject, days=365)
                fp = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
                uow.enrollment_tokens.consume(token.id)
                uow.certs.add(
                    IssuedCert(
                        fingerprint=fp,
                        tenant_id=tenant_id,
                        serial=format(cert.serial_number, "x"),
                        token_id=token.id,
                        user_id=token.user_id,
                        not_after=cert.not_valid_after_utc,
                        issued_at=now,
                        ade_serial=token.ade_serial,
                    )
                )
                uow.events.append(
                    self.ok_event(
                        tenant_id,
                        Step.SCEP,
                        user_id=user_id,
                        upn=upn,
                        detail={"cert_serial": format(cert.serial_number, "x")},
                    )
                )
                return cert
        except PomonaError as exc:
            self.record_failure(
                tenant_id, Step.SCEP, exc.reason, user_id=user_id, upn=upn, detail={"error": exc.detail}
            )
            raise
