"""Admin use cases: tenants, admin API tokens, users, enrollment tokens and the push certificate."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from pomona.domain.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from pomona.domain.models import ApiToken, EnrollmentToken, Step, Tenant, User, is_upn
from pomona.ports import ApiTokenStore, EnrollmentTokenStore, EventLog, Pki, TenantStore, UserStore
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.passwords import MIN_LENGTH
from pomona.services.passwords import hash_password as _hash_password
from pomona.services.policy import DefaultsStores, ensure_default_restrictions

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}$")


def hash_password(password: str) -> str:
    """argon2id (services.passwords), for local sign-in to the portal."""
    if len(password) < MIN_LENGTH:
        raise InvalidInputError(f"a password needs at least {MIN_LENGTH} characters", field="password")
    return _hash_password(password)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    token: EnrollmentToken
    secret: str  # shown once: the enrollment link's last segment and the SCEP challenge


@dataclass(frozen=True)
class IssuedApiToken:
    token: ApiToken
    secret: str


class TenantLookupStores(Protocol):
    """What :meth:`AdminService.tenant` reads, in the caller's unit of work."""

    @property
    def tenants(self) -> TenantStore: ...


class AdminStores(TenantLookupStores, DefaultsStores, Protocol):
    """The admin service's stores: tenants, users, both kinds of token, the restrictions a new tenant
    gets by default, and events."""

    @property
    def users(self) -> UserStore: ...
    @property
    def api_tokens(self) -> ApiTokenStore: ...
    @property
    def enrollment_tokens(self) -> EnrollmentTokenStore: ...
    @property
    def events(self) -> EventLog: ...


@dataclass
class AdminService(ServiceBase[AdminStores]):
    pki: Pki

    # --- tenants ----------------------------------------------------------------------------------
    def create_tenant(self, name: str, domain: str, *, key_type: str = "rsa") -> Tenant:
        if not _NAME_RE.match(name):
            raise InvalidInputError("tenant name: letters, digits, '.', '_' or '-', at most 63", field="name")
        if not _DOMAIN_RE.match(domain):
            raise InvalidInputError("domain must be a DNS name such as example.com", field="domain")
        if key_type not in ("rsa", "p256"):
            raise InvalidInputError("key type must be rsa or p256", field="key_type")
        ca = self.pki.new_ca(f"Pomona device CA ({name})", key_type)
        cert_pem, key_pem = ca.to_pem()
        tenant = Tenant(
            id=str(uuid.uuid4()),
            name=name,
            domain=domain.lower(),
            created_at=self.clock.now(),
            ca_cert_pem=cert_pem,
        )
        with self.db.unit_of_work() as uow:
            if uow.tenants.by_name(name) is not None:
                raise ConflictError(f"a tenant named {name!r} exists", name=name)
            uow.tenants.add(tenant, key_pem)
            ensure_default_restrictions(uow, tenant.id, tenant.created_at)
            uow.events.append(self.ok_event(tenant.id, Step.ADMIN, detail={"action": "tenant.create"}))
        return tenant

    def list_tenants(self) -> list[Tenant]:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.tenants.list()

    def tenant(self, uow: TenantLookupStores, name_or_id: str) -> Tenant:
        t = find_tenant(uow.tenants, name_or_id)
        return t

    def get_tenant(self, name_or_id: str) -> Tenant:
        with self.db.unit_of_work(readonly=True) as uow:
            return self.tenant(uow, name_or_id)

    def set_authority(self, tenant_name: str, authority: str) -> Tenant:
        if authority != "pomona":
            raise InvalidInputError("the only MDM authority is 'pomona'", field="authority")
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            uow.tenants.set_authority(t.id, authority)
            uow.events.append(self.ok_event(t.id, Step.ADMIN, detail={"action": "tenant.set_authority"}))
            return self.tenant(uow, t.id)

    # --- admin API tokens -------------------------------------------------------------------------
    def create_api_token(self, tenant_name: str | None, name: str = "admin") -> IssuedApiToken:
        secret = "pom_" + secrets.token_urlsafe(32)
        with self.db.unit_of_work() as uow:
            tenant_id = None if tenant_name is None else self.tenant(uow, tenant_name).id
            tok = ApiToken(id=str(uuid.uuid4()), tenant_id=tenant_id, name=name, created_at=self.clock.now())
            uow.api_tokens.add(tok, hash_secret(secret))
            if tenant_id is not None:
                uow.events.append(self.ok_event(tenant_id, Step.ADMIN, detail={"action": "token.create"}))
        return IssuedApiToken(tok, secret)

    def authenticate_api_token(self, secret: str | None) -> ApiToken:
        if not secret:
            raise ForbiddenError("missing bearer token")
        with self.db.unit_of_work(readonly=True) as uow:
            tok = uow.api_tokens.by_hash(hash_secret(secret))
        if tok is None:
            raise ForbiddenError("unknown token")
        return tok

    # --- users ------------------------------------------------------------------------------------
    def create_user(
        self,
        tenant_name: str,
        upn: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        password: str | None = None,
        enabled: bool = True,
        is_dem: bool = False,
        mfa_required: bool = False,
    ) -> User:
        upn = upn.strip().lower()
        if not is_upn(upn):
            raise InvalidInputError("UPN must look like name@example.com", field="upn")
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            if uow.users.by_upn(t.id, upn) is not None:
                raise ConflictError(f"user {upn} exists", upn=upn)
            user = User(
                id=str(uuid.uuid4()),
                tenant_id=t.id,
                upn=upn,
                email=(email or upn).lower(),
                display_name=display_name or upn.split("@", 1)[0],
                password_hash=None if password is None else hash_password(password),
                created_at=self.clock.now(),
                enabled=enabled,
                is_dem=is_dem,
                mfa_required=mfa_required,
            )
            uow.users.add(user)
            uow.events.append(
                self.ok_event(t.id, Step.ADMIN, user_id=user.id, upn=upn, detail={"action": "user.create"})
            )
        return user

    def list_users(self, tenant_name: str, *, limit: int = 100, offset: int = 0) -> list[User]:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.users.list(self.tenant(uow, tenant_name).id, limit=limit, offset=offset)

    # --- enrollment tokens ------------------------------------------------------------------------
    def create_enrollment_token(
        self, tenant_name: str, upn: str, *, uses: int = 1, expires_in: timedelta = timedelta(hours=24)
    ) -> IssuedEnrollmentToken:
        if not 1 <= uses <= 100_000:
            raise InvalidInputError("uses must be between 1 and 100000", field="uses")
        if not timedelta(minutes=1) <= expires_in <= timedelta(days=90):
            raise InvalidInputError("expiry must be between 1 minute and 90 days", field="expires")
        secret = secrets.token_urlsafe(24)
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            user = uow.users.by_upn(t.id, upn)
            if user is None:
                raise NotFoundError(f"no user {upn} in tenant {t.name}", upn=upn)
            now = self.clock.now()
            tok = EnrollmentToken(
                id=str(uuid.uuid4()),
                tenant_id=t.id,
                user_id=user.id,
                expires_at=now + expires_in,
                uses_allowed=uses,
                uses_count=0,
                created_at=now,
            )
            uow.enrollment_tokens.add(tok, hash_secret(secret))
            uow.events.append(
                self.ok_event(
                    t.id,
                    Step.ADMIN,
                    user_id=user.id,
                    upn=user.upn,
                    detail={"action": "enroll_token.create", "uses": uses},
                )
            )
        return IssuedEnrollmentToken(tok, secret)
