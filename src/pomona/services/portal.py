"""Self-service enrollment portal use cases (our Company Portal): signing in, MFA, the user's own
devices, the enrollment check, retiring a device, and each tenant's OpenID Connect settings.

Outcomes a user can meet before any policy decision (a wrong password, too many tries, a pending TOTP
step) are values of :class:`SignInStatus`, not errors: they have no reason code. Policy refusals are
:class:`~pomona.domain.policy.Decision` values with their ReasonCode, and each leaves an event at step
``portal``, as every other refusal does.

Nothing here opens a socket except the OpenID Connect client, whose HTTP transport is injectable
(``PortalService.http_transport``), and nothing reads the wall clock except through ``self.clock``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
import struct
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from pomona.domain.errors import InvalidInputError, NotFoundError, PolicyError, UpstreamError
from pomona.domain.models import Event, Outcome, Step, Tenant, User
from pomona.domain.policy import Decision, Stage, decide, platform_of_user_agent
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import (
    DeviceStore,
    HasEvents,
    PortalSession,
    PortalSessionStore,
    SessionEnd,
    SettingsStore,
    SharedLimits,
    Transactions,
)
from pomona.services.admin import AdminService, TenantLookupStores
from pomona.services.base import ServiceBase
from pomona.services.context import current_request_id
from pomona.services.enrollment import EnrollmentService
from pomona.services.policy import DecisionStores, PolicyService

SESSION_SECRET_KEY = "portal_session_secret"
SESSION_LIFETIME = timedelta(hours=8)  # as the cookie's max age (http/portal.py)


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _stamp(user: User) -> str:
    """A digest of the user's password hash: a session opened before a password change does not match."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()


OIDC_KEY_PREFIX = "oidc:"
ENROLL_TOKEN_LIFETIME = timedelta(hours=1)
MAX_TRIES = 10
TRY_WINDOW = timedelta(minutes=5)
TOTP_STEP = 30
TOTP_DIGITS = 6
_OIDC_CACHE_SECONDS = 300.0


# --- sign-in outcomes -------------------------------------------------------------------------------
class SignInStatus(StrEnum):
    SIGNED_IN = "signed_in"
    ENROL_TOTP = "enrol_totp"  # MFA required and no secret yet: show one, then verify a code
    NEED_TOTP = "need_totp"  # MFA required: verify a code
    BAD_CREDENTIALS = "bad_credentials"  # unknown UPN or wrong password (the user is not told which)
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"  # a policy refusal before any device: USER_NOT_FOUND, USER_DISABLED


@dataclass(frozen=True)
class SignIn:
    status: SignInStatus
    upn: str
    user: User | None = None
    reason: ReasonCode | None = None
    retry_after: int = 0
    method: str = "password"
    mfa_done: bool = False  # the identity provider already did MFA (amr)


@dataclass(frozen=True)
class DeviceRow:
    """One of the user's enrolled devices, as the portal lists it."""

    udid: str
    name: str
    model: str
    os_version: str
    serial: str
    enrolled_since: datetime
    last_check_in: datetime | None


@dataclass(frozen=True)
class EnrollCheck:
    """The portal's decision for "Enroll this device": a one-time link secret, or a refusal."""

    decision: Decision
    facts: dict[str, object]  # what the refusal page names (decision facts plus tenant and user)
    secret: str | None = None
    request_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    metadata_url: str | None = None  # default: <issuer>/.well-known/openid-configuration
    claim: str | None = None  # the claim that holds the UPN; default: upn, preferred_username, email

    def discovery_url(self) -> str:
        return self.metadata_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "issuer": self.issuer,
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "metadata_url": self.metadata_url,
                "claim": self.claim,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> OidcConfig:
        d = json.loads(raw)
        return cls(d["issuer"], d["client_id"], d["client_secret"], d.get("metadata_url"), d.get("claim"))


@dataclass(frozen=True)
class OidcStart:
    url: str
    state: str
    nonce: str
    verifier: str


# --- rate limiting ---------------------------------------------------------------------------------
class RateLimiter:
    """At most ``limit`` failed tries per key in a ``window`` opened by the first of them; each try while
    limited opens it again. The counts are in the database (``SharedLimits``): every process of the
    server shares them, so ``limit`` holds across workers and hosts. Keys are kept as their SHA-256
    (no UPN or address in the table); expired windows are removed by the leader's clean-up job."""

    def __init__(self, store: SharedLimits, limit: int = MAX_TRIES, window: timedelta = TRY_WINDOW) -> None:
        self.store = store
        self.limit = limit
        self.window = window.total_seconds()

    @staticmethod
    def _key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def blocked_for(self, key: str, now: datetime) -> int:
        """Seconds until the next try is allowed (0: allowed now). One read by primary key."""
        found = self.store.limit_hits(self._key(key), now, self.window)
        if found is None or found[0] < self.limit:
            return 0
        return max(1, int((found[1] - now).total_seconds() + self.window) + 1)

    def fail(self, key: str, now: datetime) -> None:
        self.store.limit_fail(self._key(key), now, self.window, self.limit)

    def reset(self, key: str) -> None:
        self.store.limit_reset(self._key(key))

    def purge(self, now: datetime) -> int:
        """Remove the windows that closed before ``now`` (the leader runs it on a schedule)."""
        return self.store.limit_purge(now - timedelta(seconds=self.window))


# --- TOTP (RFC 6238, SHA-1, 6 digits, 30 s) --------------------------------------------------------
def new_totp_secret() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def totp_at(secret: str, counter: int) -> str:
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**TOTP_DIGITS
    return str(code).zfill(TOTP_DIGITS)


def totp_now(secret: str, when: datetime) -> str:
    return totp_at(secret, int(when.timestamp()) // TOTP_STEP)


def totp_uri(secret: str, upn: str, issuer: str) -> str:
    label = quote(f"{issuer}:{upn}")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&algorithm=SHA1&digits=6&period=30"


# --- the service ------------------------------------------------------------------------------------
class PortalStores(TenantLookupStores, DecisionStores, HasEvents, Protocol):
    """The portal's stores: the tenant, its users, their devices and enrollments, and the policy's facts
    for the enrollment check."""

    @property
    def devices(self) -> DeviceStore: ...
    @property
    def portal_sessions(self) -> PortalSessionStore: ...


class PortalDatabase(Transactions[PortalStores], SettingsStore, SharedLimits, Protocol):
    """The portal's stores, the server settings that hold its session key and each tenant's OpenID
    Connect settings, and the sign-in limits and used TOTP steps every process shares."""


@dataclass
class PortalService(ServiceBase[PortalStores]):
    db: PortalDatabase
    admin: AdminService
    policy: PolicyService
    enrollment: EnrollmentService
    http_transport: httpx.BaseTransport | None = None  # OpenID Connect calls; None: the network
    _oidc_meta: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    @functools.cached_property
    def limiter(self) -> RateLimiter:
        """Failed sign-in tries per key, shared by every process (in the database)."""
        return RateLimiter(self.db)

    # --- helpers ----------------------------------------------------------------------------------
    def session_secret(self) -> str:
        """The session-signing key: generated once, kept in the database (all workers share it)."""
        raw = self.db.settings_get(SESSION_SECRET_KEY)
        if raw is None:  # two processes at once: the first writer's, for both
            raw = self.db.settings_add(SESSION_SECRET_KEY, secrets.token_urlsafe(48).encode())
        return raw.decode()

    # --- server-side sessions ---------------------------------------------------------------------
    def open_session(self, tenant: Tenant, user_id: str) -> str:
        """A new signed-in session for the user: its random id (for the cookie); the store keeps its hash."""
        sid = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.db.unit_of_work() as uow:
            user = uow.users.get(tenant.id, user_id)
            if user is None:
                raise NotFoundError(msg("error.user.no_such"), tenant=tenant.id)
            uow.portal_sessions.purge(tenant.id, user_id, now)
            uow.portal_sessions.add(
                _sid_hash(sid), PortalSession(tenant.id, user_id, now, now + SESSION_LIFETIME, _stamp(user))
            )
        return sid

    def session_user(self, tenant: Tenant, sid: str) -> str | None:
        """The user a session id is signed in as, or None: unknown, another tenant's, expired, signed
        out, or ended by a password change. A user disabled or deleted since ends the session for good
        (re-enabling does not revive it), but their id is still returned while they stay so: every page
        then refuses them with the reason (USER_DISABLED, USER_NOT_FOUND), as it refuses at sign-in."""
        now = self.clock.now()
        h = _sid_hash(sid)
        with self.db.unit_of_work(readonly=True) as uow:
            found = uow.portal_sessions.get(h)
            if found is None or found.tenant_id != tenant.id or found.expires_at <= now:
                return None
            user = uow.users.get(tenant.id, found.user_id)
        if user is None or not user.enabled:
            if found.revoked_at is None:
                self._end(h, "user")
            return found.user_id if found.revoked_why in (None, "user") else None
        if found.revoked_at is not None:
            return None
        if _stamp(user) != found.stamp:
            self._end(h, "password")
            return None
        return found.user_id

    def close_session(self, sid: str) -> None:
        """Sign out: the session is revoked, so its cookie no longer signs anyone in."""
        self._end(_sid_hash(sid), "signout")

    def _end(self, id_hash: str, why: SessionEnd) -> None:
        with self.db.unit_of_work() as uow:
            uow.portal_sessions.revoke(id_hash, self.clock.now(), why)

    def tenant(self, name: str) -> Tenant:
        with self.db.unit_of_work(readonly=True) as uow:
            t = uow.tenants.by_name(name)
        if t is None:
            raise NotFoundError(msg("error.tenant.not_found", tenant=name), tenant=name)
        return t

    def user(self, tenant: Tenant, user_id: str) -> User | None:
        with self.db.unit_of_work(readonly=True) as uow:
            return uow.users.get(tenant.id, user_id)

    def _event(
        self,
        tenant: Tenant,
        outcome: Outcome,
        reason: ReasonCode | None,
        user: User | None,
        upn: str | None,
        detail: dict[str, object],
    ) -> None:
        with self.db.unit_of_work() as uow:
            uow.events.append(
                Event(
                    tenant_id=tenant.id,
                    at=self.clock.now(),
                    step=Step.PORTAL,
                    outcome=outcome,
                    reason=None if reason is None else reason.value,
                    user_id=None if user is None else user.id,
                    upn=upn if user is None else user.upn,
                    request_id=current_request_id(),
                    detail=detail,
                )
            )

    def _ok(self, tenant: Tenant, user: User | None, action: str, **detail: object) -> None:
        self._event(tenant, Outcome.OK, None, user, None, {"action": action, **detail})

    def refuse(
        self,
        tenant: Tenant,
        reason: ReasonCode,
        *,
        user: User | None = None,
        upn: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Record a portal refusal (step ``portal``, outcome failed, with its reason code)."""
        self.record_failure(
            tenant.id,
            Step.PORTAL,
            reason,
            user_id=None if user is None else user.id,
            upn=upn if user is None else user.upn,
            detail=detail or {},
        )

    def _after_identity(self, tenant: Tenant, user: User, method: str, mfa_done: bool) -> SignIn:
        if not user.enabled:
            self.refuse(
                tenant, ReasonCode.USER_DISABLED, user=user, detail={"action": "sign_in", "method": method}
            )
            return SignIn(SignInStatus.REFUSED, user.upn, user, ReasonCode.USER_DISABLED, method=method)
        if user.mfa_required and not mfa_done:
            status = SignInStatus.NEED_TOTP if user.totp_secret else SignInStatus.ENROL_TOTP
            return SignIn(status, user.upn, user, method=method)
        self._ok(tenant, user, "sign_in", method=method, mfa=bool(user.mfa_required))
        return SignIn(SignInStatus.SIGNED_IN, user.upn, user, method=method, mfa_done=mfa_done)

    # --- local sign-in ----------------------------------------------------------------------------
    def sign_in_password(self, tenant: Tenant, upn: str, password: str, client_ip: str) -> SignIn:
        """UPN and password (argon2 against users.password_hash), rate-limited per client IP and UPN.

        An unknown UPN and a wrong password look the same to the client (no account enumeration); the
        event log tells them apart (USER_NOT_FOUND for an unknown UPN)."""
        from pomona.services.passwords import verify_password

        upn = upn.strip().lower()[:320]
        key = f"pw|{tenant.id}|{client_ip}|{upn}"
        now = self.clock.now()
        wait = self.limiter.blocked_for(key, now)
        if wait:
            return self._limited(tenant, key, upn, wait, "password")
        with self.db.unit_of_work(readonly=True) as uow:
            user = uow.users.by_upn(tenant.id, upn) if upn else None
        ok, upgraded = verify_password(user.password_hash if user is not None else None, password)
        if ok and upgraded is not None and user is not None:
            with self.db.unit_of_work() as uow:
                uow.users.update(tenant.id, user.id, password_hash=upgraded)
        if not ok:
            self.limiter.fail(key, now)
            if user is None:
                self.refuse(
                    tenant,
                    ReasonCode.USER_NOT_FOUND,
                    upn=upn,
                    detail={"action": "sign_in", "method": "password"},
                )
            else:
                self._event(
                    tenant,
                    Outcome.FAILED,
                    None,
                    user,
                    None,
                    {
                        "action": "sign_in",
                        "method": "password",
                        "error": "no password set" if not user.password_hash else "wrong password",
                    },
                )
            return SignIn(SignInStatus.BAD_CREDENTIALS, upn)
        assert user is not None
        self.limiter.reset(key)
        return self._after_identity(tenant, user, "password", False)

    def _limited(self, tenant: Tenant, key: str, upn: str, wait: int, method: str) -> SignIn:
        self.limiter.fail(key, self.clock.now())  # each try while limited opens the window again
        self._event(
            tenant,
            Outcome.FAILED,
            None,
            None,
            upn,
            {"action": "sign_in", "method": method, "error": "rate limited", "retry_after": wait},
        )
        return SignIn(SignInStatus.RATE_LIMITED, upn, retry_after=wait)

    # --- TOTP -------------------------------------------------------------------------------------
    def verify_totp(
        self, tenant: Tenant, user_id: str, code: str, client_ip: str, *, enrol_secret: str | None = None
    ) -> SignIn:
        """Check a TOTP code (this step or one either side); the first success with ``enrol_secret``
        stores the secret. A code is accepted once (replays are refused)."""
        user = self.user(tenant, user_id)
        if user is None:
            self.refuse(tenant, ReasonCode.USER_NOT_FOUND, detail={"action": "totp"})
            return SignIn(SignInStatus.REFUSED, "", None, ReasonCode.USER_NOT_FOUND)
        key = f"totp|{tenant.id}|{client_ip}|{user.upn}"
        now = self.clock.now()
        wait = self.limiter.blocked_for(key, now)
        if wait:
            return self._limited(tenant, key, user.upn, wait, "totp")
        secret = enrol_secret or user.totp_secret
        code = "".join(code.split())
        step = int(self.clock.now().timestamp()) // TOTP_STEP
        matched = None
        if secret and code.isdigit() and len(code) == TOTP_DIGITS:
            for delta in (0, -1, 1):
                if hmac.compare_digest(totp_at(secret, step + delta), code):
                    matched = step + delta
                    break
        # A matched code is claimed in the database: one process wins it, every other sees a replay.
        if matched is None or not self.db.totp_claim(user.id, matched):
            self.limiter.fail(key, now)
            self._event(
                tenant,
                Outcome.FAILED,
                None,
                user,
                None,
                {"action": "totp", "error": "code reused" if matched is not None else "wrong code"},
            )
            return SignIn(SignInStatus.ENROL_TOTP if enrol_secret else SignInStatus.NEED_TOTP, user.upn, user)
        self.limiter.reset(key)
        if enrol_secret:
            user = self.policy.set_user_flags(tenant.name, user.upn, totp_secret=enrol_secret)
            self._ok(tenant, user, "totp_enrol")
        if not user.enabled:
            return self._after_identity(tenant, user, "totp", True)
        self._ok(tenant, user, "sign_in", method="totp", mfa=True)
        return SignIn(SignInStatus.SIGNED_IN, user.upn, user, method="totp", mfa_done=True)

    # --- OpenID Connect ---------------------------------------------------------------------------
    def set_oidc(
        self,
        tenant_name: str,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        metadata_url: str | None = None,
        claim: str | None = None,
    ) -> OidcConfig:
        for name, value in (("issuer", issuer), ("metadata_url", metadata_url)):
            if value is not None and not value.startswith(("https://", "http://")):
                raise InvalidInputError(msg("error.url.http", name=name), field=name)
        if not client_id or not client_secret:
            raise InvalidInputError(msg("error.sso.client"), field="client_id")
        cfg = OidcConfig(issuer.rstrip("/"), client_id, client_secret, metadata_url, claim)
        with self.db.unit_of_work() as uow:
            t = self.admin.tenant(uow, tenant_name)
            uow.events.append(
                self.ok_event(t.id, Step.ADMIN, detail={"action": "portal.oidc.set", "issuer": cfg.issuer})
            )
        self.db.settings_put(OIDC_KEY_PREFIX + t.id, cfg.to_json())
        self._oidc_meta.pop(t.id, None)
        return cfg

    def oidc_config(self, tenant: Tenant) -> OidcConfig | None:
        raw = self.db.settings_get(OIDC_KEY_PREFIX + tenant.id)
        return None if raw is None else OidcConfig.from_json(raw)

    def _http(self) -> httpx.Client:
        return httpx.Client(transport=self.http_transport, timeout=10.0)

    def _metadata(self, tenant: Tenant, cfg: OidcConfig) -> dict[str, Any]:
        cached = self._oidc_meta.get(tenant.id)
        if (
            cached is not None
            and cached[0] > time.monotonic()
            and cached[1].get("_url") == cfg.discovery_url()
        ):
            return cached[1]
        with self._http() as client:
            meta: dict[str, Any] = client.get(cfg.discovery_url()).raise_for_status().json()
            meta["_jwks"] = client.get(meta["jwks_uri"]).raise_for_status().json()
        if str(meta.get("issuer", "")).rstrip("/") != cfg.issuer:
            raise UpstreamError(msg("error.sso.issuer"))
        meta["_url"] = cfg.discovery_url()
        self._oidc_meta[tenant.id] = (time.monotonic() + _OIDC_CACHE_SECONDS, meta)
        return meta

    def oidc_begin(self, tenant: Tenant, redirect_uri: str) -> OidcStart:
        """The authorization URL (code flow, PKCE S256, nonce), and what to keep until the callback."""
        from authlib.common.security import generate_token
        from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        cfg = self.oidc_config(tenant)
        if cfg is None:
            raise NotFoundError(msg("error.sso.off"))
        meta = self._metadata(tenant, cfg)
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            meta["authorization_endpoint"],
            cfg.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope="openid profile email",
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return OidcStart(url, state, nonce, verifier)

    def oidc_finish(
        self, tenant: Tenant, redirect_uri: str, code: str, start: OidcStart, client_ip: str
    ) -> SignIn:
        """Exchange the code, validate the ID token (signature, iss, aud, exp, nonce), map it to a user."""
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        cfg = self.oidc_config(tenant)
        if cfg is None:
            raise NotFoundError(msg("error.sso.off"))
        key = f"oidc|{tenant.id}|{client_ip}"
        now = self.clock.now()
        wait = self.limiter.blocked_for(key, now)
        if wait:
            return self._limited(tenant, key, "", wait, "oidc")
        meta = self._metadata(tenant, cfg)
        with self._http() as client:
            r = client.post(
                meta["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": start.verifier,
                },
                auth=(cfg.client_id, cfg.client_secret),
                headers={"Accept": "application/json"},
            )
        try:
            id_token = str(r.raise_for_status().json()["id_token"])
            token = jwt.decode(id_token, KeySet.import_key_set(meta["_jwks"]), algorithms=["RS256", "ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": cfg.issuer},
                aud={"essential": True, "value": cfg.client_id},
                nonce={"essential": True, "value": start.nonce},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(token.claims)
        except (httpx.HTTPError, KeyError, ValueError, JoseError) as exc:
            self.limiter.fail(key, now)
            self._event(
                tenant,
                Outcome.FAILED,
                None,
                None,
                None,
                {"action": "sign_in", "method": "oidc", "error": f"{type(exc).__name__}: {exc}"[:300]},
            )
            return SignIn(SignInStatus.BAD_CREDENTIALS, "", method="oidc")
        claims = token.claims
        names = [cfg.claim] if cfg.claim else ["upn", "preferred_username", "email"]
        upn = next((str(claims[n]).strip().lower() for n in names if claims.get(n)), "")
        with self.db.unit_of_work(readonly=True) as uow:
            user = uow.users.by_upn(tenant.id, upn) if upn else None
        if user is None:
            self.refuse(
                tenant,
                ReasonCode.USER_NOT_FOUND,
                upn=upn or None,
                detail={"action": "sign_in", "method": "oidc", "subject": str(claims.get("sub"))},
            )
            return SignIn(SignInStatus.REFUSED, upn, None, ReasonCode.USER_NOT_FOUND, method="oidc")
        amr = claims.get("amr") or []
        mfa_done = isinstance(amr, list) and bool({"mfa", "otp", "hwk", "swk"} & {str(a) for a in amr})
        return self._after_identity(tenant, user, "oidc", mfa_done)

    # --- devices ----------------------------------------------------------------------------------
    def devices(self, tenant: Tenant, user: User) -> list[DeviceRow]:
        """The user's actively enrolled devices, newest first. Never another user's."""
        rows: list[DeviceRow] = []
        with self.db.unit_of_work(readonly=True) as uow:
            for e in uow.enrollments.active_for_user(user.id):
                if e.tenant_id != tenant.id or e.user_id != user.id:
                    continue
                d = uow.devices.get(tenant.id, e.device_id)
                if d is None:
                    continue
                rows.append(
                    DeviceRow(
                        udid=d.udid,
                        name=d.device_name or d.model_name or d.product_name or "",
                        model=d.model_name or d.product_name or "",
                        os_version=d.os_version or "",
                        serial=d.serial or "",
                        enrolled_since=e.started_at,
                        last_check_in=d.last_seen_at,
                    )
                )
        rows.sort(key=lambda r: r.enrolled_since, reverse=True)
        return rows

    def retire(self, tenant: Tenant, user: User, udid: str) -> None:
        """Retire one of the user's OWN devices: its slot is freed, and it unenrolls at its next check-in."""
        try:
            self.policy.retire(tenant.name, udid=udid, by_user=user)
        except NotFoundError:
            self._event(tenant, Outcome.FAILED, None, user, None, {"action": "retire", "error": "not yours"})
            raise
        self._ok(tenant, user, "retire", udid=udid)

    # --- the enrollment check ---------------------------------------------------------------------
    def check_enroll(self, tenant: Tenant, user_id: str | None, user_agent: str | None) -> EnrollCheck:
        """Run the policy at stage ``portal`` with what the browser says; on success issue a one-time,
        one-hour enrollment link for the user. Either way an event at step ``portal`` is left."""
        platform, os_version = platform_of_user_agent(user_agent)
        with self.db.unit_of_work(readonly=True) as uow:
            t = uow.tenants.get(tenant.id) or tenant
            user = None if user_id is None else uow.users.get(t.id, user_id)
            decision = decide(
                self.policy.policy_input(
                    uow, t, stage=Stage.PORTAL, user=user, platform=platform, os_version=os_version
                )
            )
            seats, assigned = t.licence_seats, uow.users.licensed_count(t.id)
        facts: dict[str, object] = {
            "tenant": t.name,
            "upn": "" if user is None else user.upn,
            "seats": seats,
            "assigned": assigned,
            **{k: v for k, v in decision.facts.items() if v is not None},
        }
        if decision.reason is ReasonCode.DEVICE_LIMIT_REACHED:
            facts.setdefault("restriction", "")
        now = self.clock.now()
        rid = current_request_id()
        if not decision.allowed:
            assert decision.reason is not None
            self.refuse(
                t,
                decision.reason,
                user=user,
                detail={
                    "action": "enroll",
                    "error": decision.message,
                    "user_agent": user_agent,
                    **decision.facts,
                },
            )
            return EnrollCheck(decision, facts, None, rid, now)
        assert user is not None
        issued = self.admin.create_enrollment_token(
            t.name, user.upn, uses=1, expires_in=ENROLL_TOKEN_LIFETIME
        )
        self._ok(
            t,
            user,
            "enroll",
            token_id=issued.token.id,
            platform=None if platform is None else platform.value,
            os_version=os_version,
        )
        return EnrollCheck(decision, facts, issued.secret, rid, now)

    def profile(self, tenant: Tenant, user: User | None, secret: str, user_agent: str | None) -> bytes:
        """The signed profile for the portal's one-time link (the enrollment service checks again)."""
        if user is None:
            raise PolicyError(msg("decision.USER_NOT_FOUND"), reason=ReasonCode.USER_NOT_FOUND)
        return self.enrollment.profile(secret, user_agent)
