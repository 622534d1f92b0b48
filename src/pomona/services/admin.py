"""Admin use cases: tenants, admin API tokens, users, enrollment tokens and the push certificate."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Protocol

from pomona.domain.errors import (
    ApiTokenExpiredError,
    ApiTokenRevokedError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    TenantNameInvalidError,
)
from pomona.domain.models import ApiToken, EnrollmentToken, Step, Tenant, User, is_upn, tenant_id_of
from pomona.i18n import msg
from pomona.ports import ApiTokenStore, EnrollmentTokenStore, EventLog, Pki, TenantStore, UserStore
from pomona.services.base import ServiceBase, find_tenant
from pomona.services.passwords import MIN_LENGTH
from pomona.services.passwords import hash_password as _hash_password
from pomona.services.policy import DefaultsStores, ensure_default_restrictions

# fullmatch and \Z: "$" would also accept a trailing newline ("acme\n" is not a name).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}")

# What an admin's front doors (`pomona tenant create`, POST /api/v1/tenants) give a new tenant so that its
# first device enrolls: Pomona as the MDM authority (the only one there is) and 25 licence seats, as an
# Intune trial has; `pomona licence set` tightens the pool later. The service itself defaults to neither,
# so a tenant made without them shows what MDM_AUTHORITY_NOT_SET and USER_NOT_LICENSED look like.
DAY_ONE_AUTHORITY = "pomona"
DAY_ONE_SEATS = 25
#: How precisely an admin token's last use is kept: at most one write per token in this time.
TOKEN_USE_PRECISION = timedelta(minutes=1)


def hash_password(password: str) -> str:
    """argon2id (services.passwords), for local sign-in to the portal."""
    if len(password) < MIN_LENGTH:
        raise InvalidInputError(msg("error.password.short", min=MIN_LENGTH), field="password")
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
    def create_tenant(
        self,
        name: str,
        domain: str,
        *,
        key_type: str = "rsa",
        authority: str | None = None,
        seats: int = 0,
    ) -> Tenant:
        """A new tenant with its own device CA and the built-in Default restrictions; ``authority`` and
        ``seats`` set its MDM authority and licence seats in the same transaction (DAY_ONE_*: the CLI's
        and the API's defaults)."""
        if not _NAME_RE.fullmatch(name):
            raise InvalidInputError(msg("error.tenant.name_chars"), field="name")
        if tenant_id_of(name) is not None:
            raise TenantNameInvalidError(msg("error.tenant.name_uuid"), field="name", name=name)
        if not _DOMAIN_RE.fullmatch(domain):
            raise InvalidInputError(msg("error.tenant.domain"), field="domain")
        if key_type not in ("rsa", "p256"):
            raise InvalidInputError(msg("error.tenant.key_type"), field="key_type")
        if authority not in (None, "pomona"):
            raise InvalidInputError(msg("error.tenant.authority"), field="authority")
        if not 0 <= seats <= 10_000_000:
            raise InvalidInputError(msg("error.licence.seats"), field="seats")
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
                raise ConflictError(msg("error.tenant.exists", name=name), name=name)
            uow.tenants.add(tenant, key_pem)
            if authority is not None:
                uow.tenants.set_authority(tenant.id, authority)
            if seats:
                uow.tenants.set_seats(tenant.id, seats)
            ensure_default_restrictions(uow, tenant.id, tenant.created_at)
            uow.events.append(
                self.ok_event(
                    tenant.id,
                    Step.ADMIN,
                    detail={"action": "tenant.create", "mdm_authority": authority, "seats": seats},
                )
            )
            return uow.tenants.get(tenant.id) or tenant

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
            raise InvalidInputError(msg("error.tenant.authority"), field="authority")
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            uow.tenants.set_authority(t.id, authority)
            uow.events.append(self.ok_event(t.id, Step.ADMIN, detail={"action": "tenant.set_authority"}))
            return self.tenant(uow, t.id)

    # --- admin API tokens -------------------------------------------------------------------------
    def create_api_token(
        self, tenant_name: str | None, name: str = "admin", *, expires_in: timedelta | None = None
    ) -> IssuedApiToken:
        """A new admin token (its secret is shown once); ``expires_in`` None: it works until revoked."""
        if expires_in is not None and not timedelta(minutes=1) <= expires_in <= timedelta(days=3650):
            raise InvalidInputError(msg("error.token.expiry"), field="expires_in")
        secret = "pom_" + secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            tenant_id = None if tenant_name is None else self.tenant(uow, tenant_name).id
            tok = ApiToken(
                id=str(uuid.uuid4()),
                tenant_id=tenant_id,
                name=name,
                created_at=now,
                expires_at=None if expires_in is None else now + expires_in,
            )
            uow.api_tokens.add(tok, hash_secret(secret))
            if tenant_id is not None:
                detail: dict[str, object] = {"action": "token.create", "token_id": tok.id}
                uow.events.append(self.ok_event(tenant_id, Step.ADMIN, detail=detail))
        return IssuedApiToken(tok, secret)

    def authenticate_api_token(self, secret: str | None, *, record_use: bool = True) -> ApiToken:
        """The token a bearer secret is, or the refusal: missing or unknown (API_AUTH_FAILED), revoked
        (API_TOKEN_REVOKED) or past its expiry (API_TOKEN_EXPIRED). A tenant token's refusal leaves an
        event in its tenant. With ``record_use`` (an admin API request) the token's last use is written,
        at most once a minute: the time read with the token decides, so a script's loop of requests
        does not write on each (TOKEN_USE_PRECISION)."""
        if not secret:
            raise ForbiddenError(msg("error.token.missing"))
        with self.db.unit_of_work(readonly=True) as uow:
            tok = uow.api_tokens.by_hash(hash_secret(secret))
        if tok is None:
            raise ForbiddenError(msg("error.token.unknown"))
        now = self.clock.now()
        refusal: ForbiddenError | None = None
        if tok.revoked_at is not None:
            refusal = ApiTokenRevokedError(msg("error.token.revoked"), token_id=tok.id)
        elif tok.expires_at is not None and tok.expires_at <= now:
            refusal = ApiTokenExpiredError(msg("error.token.expired"), token_id=tok.id)
        if refusal is not None:
            if tok.tenant_id is not None:
                detail: dict[str, object] = {
                    "action": "token.use",
                    "token_id": tok.id,
                    "token_name": tok.name,
                }
                self.record_failure(tok.tenant_id, Step.ADMIN, refusal.reason, detail=detail)
            raise refusal
        if record_use and (tok.last_used_at is None or now - tok.last_used_at >= TOKEN_USE_PRECISION):
            with self.db.unit_of_work() as uow:  # conditional: another process's write of this minute wins
                uow.api_tokens.mark_used(tok.id, now, since=now - TOKEN_USE_PRECISION)
            tok = replace(tok, last_used_at=now)
        return tok

    def list_api_tokens(self, tenant_ref: str | None = None) -> list[ApiToken]:
        """Every admin token (never a secret), or a tenant's; server-wide tokens are listed with all."""
        with self.db.unit_of_work(readonly=True) as uow:
            tenant_id = None if tenant_ref is None else self.tenant(uow, tenant_ref).id
            return uow.api_tokens.list(tenant_id)

    def revoke_api_token(self, token_id: str, *, tenant_ref: str | None = None) -> ApiToken:
        """Revoke an admin token for good (revoking it again changes nothing). With ``tenant_ref`` only a
        token of that tenant is found: another's answers NOT_FOUND."""
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            tok = uow.api_tokens.get(token_id.strip())
            if tenant_ref is not None:
                tenant_id = self.tenant(uow, tenant_ref).id
                if tok is not None and tok.tenant_id != tenant_id:
                    tok = None
            if tok is None:
                raise NotFoundError(msg("error.token.not_found", token_id=token_id), token_id=token_id)
            uow.api_tokens.revoke(tok.id, now)
            if tok.tenant_id is not None:
                detail: dict[str, object] = {"action": "token.revoke", "token_id": tok.id}
                uow.events.append(self.ok_event(tok.tenant_id, Step.ADMIN, detail=detail))
            found = uow.api_tokens.get(tok.id)
            assert found is not None
            return found

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
            raise InvalidInputError(msg("error.user.upn"), field="upn")
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            if uow.users.by_upn(t.id, upn) is not None:
                raise ConflictError(msg("error.user.exists", upn=upn), upn=upn)
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

    def set_password(self, tenant_ref: str, upn: str, password: str) -> None:
        """Set a user's portal password (stored hashed; the event names the user, never the password)."""
        password_hash = hash_password(password)
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_ref)
            user = uow.users.by_upn(t.id, upn.strip().lower())
            if user is None:
                raise NotFoundError(msg("error.user.not_found", upn=upn, tenant=t.name), upn=upn)
            uow.users.update(t.id, user.id, password_hash=password_hash)
            uow.events.append(
                self.ok_event(
                    t.id, Step.ADMIN, user_id=user.id, upn=user.upn, detail={"action": "user.password"}
                )
            )

    def list_users(self, tenant_name: str, *, limit: int = 100, offset: int = 0) -> list[User]:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.users.list(self.tenant(uow, tenant_name).id, limit=limit, offset=offset)

    # --- enrollment tokens ------------------------------------------------------------------------
    def create_enrollment_token(
        self, tenant_name: str, upn: str, *, uses: int = 1, expires_in: timedelta = timedelta(hours=24)
    ) -> IssuedEnrollmentToken:
        if not 1 <= uses <= 100_000:
            raise InvalidInputError(msg("error.link.uses"), field="uses")
        if not timedelta(minutes=1) <= expires_in <= timedelta(days=90):
            raise InvalidInputError(msg("error.link.expiry"), field="expires")
        secret = secrets.token_urlsafe(24)
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_name)
            user = uow.users.by_upn(t.id, upn)
            if user is None:
                raise NotFoundError(msg("error.user.not_found", upn=upn, tenant=t.name), upn=upn)
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

    def list_enrollment_tokens(
        self, tenant_ref: str, *, limit: int = 100, offset: int = 0
    ) -> list[tuple[EnrollmentToken, User | None]]:
        """A tenant's enrollment links, newest first, each with its user (the secrets are never stored)."""
        with self.db.unit_of_work(readonly=True) as uow:
            t = self.tenant(uow, tenant_ref)
            tokens = uow.enrollment_tokens.list(t.id, limit=limit, offset=offset)
            return [
                (tok, None if tok.user_id is None else uow.users.get(t.id, tok.user_id)) for tok in tokens
            ]

    def revoke_enrollment_token(self, tenant_ref: str, token_id: str) -> EnrollmentToken:
        """Revoke an enrollment link (and so its SCEP challenge): its next use is ENROLLMENT_TOKEN_INVALID.
        Devices that already enrolled with it stay enrolled."""
        with self.db.unit_of_work() as uow:
            t = self.tenant(uow, tenant_ref)
            tok = uow.enrollment_tokens.get(t.id, token_id.strip())
            if tok is None:
                raise NotFoundError(
                    msg("error.link.not_found", token_id=token_id, tenant=t.name), token_id=token_id
                )
            uow.enrollment_tokens.revoke(tok.id)
            uow.events.append(
                self.ok_event(
                    t.id,
                    Step.ADMIN,
                    user_id=tok.user_id,
                    detail={"action": "enroll_token.revoke", "token_id": tok.id},
                )
            )
            found = uow.enrollment_tokens.get(t.id, tok.id)
            assert found is not None
            return found
