"""How console accounts sign in beyond a password (issue 13, "Who signs in"): TOTP enrolment in the
browser, an account's own TOTP reset, and OpenID Connect per tenant.

TOTP. An account that must use TOTP and has none yet carries :data:`~pomona.services.console.TOTP_PENDING`
as its secret (`pomona admin totp-reset`): after its password it is shown a new secret, and the secret is
kept only when one code from it is confirmed (claimed as every TOTP code is, ``db.totp_claim``: a code is
good once). A signed-in account replaces its own secret the same way, after entering its password again.

OpenID Connect. A tenant's console may name an identity provider (issuer, client id and secret, kept in
the server settings, which are sealed at rest; the key ``console-oidc:<tenant id>``). The flow is the
authorization code flow with PKCE (S256), state and nonce; the ID token must be RS256, signed by a key of
the provider's JWKS, from the configured issuer, for our client id, not expired (at most
:data:`CLOCK_SKEW` of skew either way). The email in the token (or ``email_claim``) must name an enabled
console account of THAT tenant: nobody is created, and the role is the account's. Discovery and the JWKS
are fetched server-side with a timeout and a size cap, and kept five minutes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import httpx

from pomona.domain.errors import InvalidInputError, NotFoundError, UpstreamError
from pomona.domain.models import Step, Tenant
from pomona.domain.reasons import ReasonCode
from pomona.i18n import msg
from pomona.ports import AdminAccount, SettingsStore
from pomona.services.base import find_tenant
from pomona.services.console import TOTP_PENDING, ConsoleService
from pomona.services.passwords import verify_password
from pomona.services.portal import TOTP_DIGITS, TOTP_STEP, new_totp_secret, totp_at

OIDC_KEY_PREFIX: Final = "console-oidc:"
CLOCK_SKEW: Final = timedelta(minutes=2)
HTTP_TIMEOUT: Final = 10.0
MAX_DOCUMENT: Final = 256 * 1024  # discovery, JWKS and token answers: a few KiB in practice
META_SECONDS: Final = 300.0
ENROL_SECONDS: Final = 600  # how long a shown secret waits for its confirmation code


@dataclass(frozen=True)
class ConsoleOidc:
    """A tenant's console identity provider. ``client_secret`` is never shown back."""

    issuer: str
    client_id: str
    client_secret: str
    email_claim: str = "email"
    name: str = ""  # what the sign-in button says ("Sign in with <name>"); default: the issuer's host

    def label(self) -> str:
        return self.name or httpx.URL(self.issuer).host or self.issuer

    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ConsoleOidc:
        d = json.loads(raw)
        return cls(
            d["issuer"],
            d["client_id"],
            d["client_secret"],
            d.get("email_claim") or "email",
            d.get("name") or "",
        )


@dataclass(frozen=True)
class OidcStart:
    """Where the browser goes, and what the callback must match (kept in the signed session cookie)."""

    url: str
    state: str
    nonce: str
    verifier: str


class OidcRefused(Exception):
    """The callback is refused; ``why`` is a short code for the page and the event."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(why)
        self.why = why
        self.detail = detail


class AuthDatabase(SettingsStore, Protocol):
    """The server settings (sealed at rest), where each tenant's console OIDC settings are kept."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _check_url(name: str, value: str) -> str:
    value = value.strip().rstrip("/")
    u = httpx.URL(value) if value.startswith(("https://", "http://")) else None
    if u is None or not u.host or len(value) > 500:
        raise InvalidInputError(msg("error.url.http", name=name), field=name)
    return value


@dataclass
class ConsoleAuthService:
    console: ConsoleService
    settings: AuthDatabase
    http_transport: httpx.BaseTransport | None = None  # None: the network
    _meta: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict, init=False, repr=False)

    @property
    def clock(self) -> Any:
        return self.console.clock

    # --- TOTP -------------------------------------------------------------------------------------
    def require_totp(self, email: str, *, actor: str = "cli", source: str = "cli") -> AdminAccount:
        """The account must enrol a new authenticator at its next sign-in (its old secret is dropped)."""
        with self.console.db.unit_of_work() as uow:
            a = uow.admins.by_email(email.strip().lower())
            if a is None:
                raise NotFoundError(f"no admin account {email!r}", email=email)
            a = replace(a, totp_secret=TOTP_PENDING)
            uow.admins.update(a)
            self.console._audit(uow, actor, "admin.totp_require", a.tenant_id, a.email, source, {})
        return a

    @staticmethod
    def new_secret() -> str:
        return new_totp_secret()

    def check_password(self, account: AdminAccount, password: str, source: str) -> bool:
        """The password entered again (the security page), rate-limited as a sign-in."""
        now = self.clock.now()
        keys = (f"console:e:{account.email}", f"console:a:{source}")
        if max(self.console.limiter.blocked_for(k, now) for k in keys):
            return False
        with self.console.db.unit_of_work(readonly=True) as uow:
            a = uow.admins.get(account.id)
        ok, _ = verify_password(a.password_hash if a else None, password)
        if not ok:
            for k in keys:
                self.console.limiter.fail(k, now)
        return ok

    def pending_account(self, account_id: str) -> AdminAccount | None:
        """The account, while it still must enrol an authenticator (None otherwise)."""
        with self.console.db.unit_of_work(readonly=True) as uow:
            a = uow.admins.get(account_id)
        return a if a is not None and a.enabled and a.totp_secret == TOTP_PENDING else None

    def confirm_totp(
        self, account_id: str, secret: str, code: str, source: str, *, first: bool
    ) -> AdminAccount | None:
        """Keep ``secret`` as the account's once ``code`` is one of its codes (claimed: good once); None
        for a wrong, reused or late code. ``first``: the enrolment after the password, which only an
        account still pending may make."""
        now = self.clock.now()
        with self.console.db.unit_of_work(readonly=True) as uow:
            a = uow.admins.get(account_id)
        if a is None or not a.enabled or (first and a.totp_secret != TOTP_PENDING):
            return None
        key = f"console:e:{a.email}"
        if self.console.limiter.blocked_for(key, now):
            return None
        code = "".join(code.split())
        step = int(now.timestamp()) // TOTP_STEP
        matched = None
        if code.isdigit() and len(code) == TOTP_DIGITS:
            matched = next(
                (s for s in (step, step - 1, step + 1) if secrets.compare_digest(totp_at(secret, s), code)),
                None,
            )
        if matched is None or not self.console.db.totp_claim(a.id, matched):
            self.console.limiter.fail(key, now)
            self.console.audit(a.email, "admin.totp_refused", a.tenant_id, a.email, source, {"first": first})
            return None
        self.console.limiter.reset(key)
        with self.console.db.unit_of_work() as uow:
            current = uow.admins.get(a.id)  # again, in the writing transaction: one enrolment wins
            if current is None or (first and current.totp_secret != TOTP_PENDING):
                return None
            a = replace(
                current, totp_secret=secret, last_sign_in_at=now if first else current.last_sign_in_at
            )
            uow.admins.update(a)
            action = "admin.totp_enrol" if first else "admin.totp_reset"
            self.console._audit(uow, a.email, action, a.tenant_id, a.email, source, {})
            if first:
                self.console._audit(
                    uow, a.email, "console.sign_in", a.tenant_id, None, source, {"totp": "enrol"}
                )
        return a

    # --- OpenID Connect: settings -----------------------------------------------------------------
    def _tenant(self, tenant_ref: str) -> Tenant:
        with self.console.db.unit_of_work(readonly=True) as uow:
            return find_tenant(uow.tenants, tenant_ref)

    def set_oidc(
        self,
        tenant_ref: str,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        email_claim: str | None = None,
        name: str | None = None,
        actor: str = "cli",
        source: str = "cli",
    ) -> tuple[Tenant, ConsoleOidc]:
        t = self._tenant(tenant_ref)
        client_id, client_secret = client_id.strip(), client_secret.strip()
        if not client_id or not client_secret or len(client_id) > 300 or len(client_secret) > 1000:
            raise InvalidInputError(msg("error.sso.client"), field="client_id")
        claim = (email_claim or "email").strip()[:64] or "email"
        cfg = ConsoleOidc(
            _check_url("issuer", issuer), client_id, client_secret, claim, (name or "").strip()[:64]
        )
        self.settings.settings_put(OIDC_KEY_PREFIX + t.id, cfg.to_json())
        self._meta.pop(t.id, None)
        self.console.audit(actor, "console.oidc.set", t.id, cfg.issuer, source, {"client_id": client_id})
        return t, cfg

    def oidc(self, tenant: Tenant) -> ConsoleOidc | None:
        raw = self.settings.settings_get(OIDC_KEY_PREFIX + tenant.id)
        return None if not raw else ConsoleOidc.from_json(raw)

    def show_oidc(self, tenant_ref: str) -> tuple[Tenant, ConsoleOidc | None]:
        t = self._tenant(tenant_ref)
        return t, self.oidc(t)

    def clear_oidc(self, tenant_ref: str, *, actor: str = "cli", source: str = "cli") -> Tenant:
        t = self._tenant(tenant_ref)
        self.settings.settings_put(OIDC_KEY_PREFIX + t.id, b"")
        self._meta.pop(t.id, None)
        self.console.audit(actor, "console.oidc.clear", t.id, None, source, {})
        return t

    # --- OpenID Connect: the flow -----------------------------------------------------------------
    def _get_json(self, client: httpx.Client, url: str, method: str = "GET", **kw: Any) -> dict[str, Any]:
        """A JSON object from ``url``, read up to MAX_DOCUMENT bytes (more is refused, not read)."""
        with client.stream(method, url, headers={"Accept": "application/json"}, **kw) as r:
            r.raise_for_status()
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT:
                    raise UpstreamError(f"{url} answered more than {MAX_DOCUMENT} bytes")
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise UpstreamError(f"{url} answered no JSON object")
        return doc

    def _client(self) -> httpx.Client:
        return httpx.Client(transport=self.http_transport, timeout=HTTP_TIMEOUT, follow_redirects=False)

    def metadata(self, tenant: Tenant, cfg: ConsoleOidc) -> dict[str, Any]:
        """The provider's discovery document (its issuer must be the configured one) with its JWKS."""
        kept = self._meta.get(tenant.id)
        if kept is not None and kept[0] > time.monotonic() and kept[1].get("issuer") == cfg.issuer:
            return kept[1]
        try:
            with self._client() as client:
                meta = self._get_json(client, cfg.discovery_url())
                if str(meta.get("issuer", "")).rstrip("/") != cfg.issuer:
                    raise UpstreamError(msg("error.sso.issuer"))
                meta["issuer"] = cfg.issuer
                meta["_jwks"] = self._get_json(client, str(meta["jwks_uri"]))
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise UpstreamError(f"the identity provider's discovery failed: {type(exc).__name__}") from exc
        self._meta[tenant.id] = (time.monotonic() + META_SECONDS, meta)
        return meta

    def begin(self, tenant_ref: str, redirect_uri: str) -> tuple[Tenant, ConsoleOidc, OidcStart]:
        t = self._tenant(tenant_ref)
        cfg = self.oidc(t)
        if cfg is None:
            raise NotFoundError(msg("error.sso.off"))
        meta = self.metadata(t, cfg)
        state, nonce, verifier = (
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(64),
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": cfg.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid email profile",
                "state": state,
                "nonce": nonce,
                "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(meta["authorization_endpoint"])
        return (
            t,
            cfg,
            OidcStart(f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", state, nonce, verifier),
        )

    def finish(
        self, tenant_ref: str, redirect_uri: str, code: str, start: OidcStart, source: str
    ) -> AdminAccount:
        """The code exchanged and the ID token verified; the enabled account of THIS tenant its email
        names. Every refusal is an event (API_AUTH_FAILED, or USER_NOT_FOUND for an email no account of the tenant has) and an audit entry."""
        t = self._tenant(tenant_ref)
        cfg = self.oidc(t)
        if cfg is None:
            raise NotFoundError(msg("error.sso.off"))
        try:
            claims = self._id_token(t, cfg, redirect_uri, code, start)
        except OidcRefused as exc:
            self._refuse(t, ReasonCode.API_AUTH_FAILED, exc.why, None, source, exc.detail)
            raise
        email = str(claims.get(cfg.email_claim) or "").strip().lower()[:320]
        if claims.get("email_verified") is False and cfg.email_claim == "email":
            email = ""  # the provider says it did not verify it: it names nobody
        with self.console.db.unit_of_work(readonly=True) as uow:
            a = uow.admins.by_email(email) if email else None
        if a is None or a.tenant_id != t.id or not a.enabled:
            self._refuse(
                t, ReasonCode.USER_NOT_FOUND, "unknown_account", email or None, source, str(claims.get("sub"))
            )
            raise OidcRefused("unknown_account")
        with self.console.db.unit_of_work() as uow:
            a = replace(a, last_sign_in_at=self.clock.now())
            uow.admins.update(a)
            self.console._audit(uow, a.email, "console.sign_in", t.id, None, source, {"method": "oidc"})
        return a

    def refuse_callback(self, tenant_ref: str, why: str, source: str) -> None:
        """A callback refused before any token request (no or another state): its event and audit entry."""
        self._refuse(self._tenant(tenant_ref), ReasonCode.API_AUTH_FAILED, why, None, source, "")

    def _refuse(
        self, t: Tenant, reason: ReasonCode, why: str, email: str | None, source: str, detail: str
    ) -> None:
        info: dict[str, object] = {"action": "console.sign_in", "method": "oidc", "why": why}
        if detail:
            info["detail"] = detail[:300]
        self.console.record_failure(t.id, Step.ADMIN, reason, detail=info)
        self.console.audit(email or "oidc", "console.sign_in_refused", t.id, email, source, {"why": why})

    def _id_token(
        self, t: Tenant, cfg: ConsoleOidc, redirect_uri: str, code: str, start: OidcStart
    ) -> dict[str, Any]:
        from joserfc import jws
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        meta = self.metadata(t, cfg)
        try:
            with self._client() as client:
                answer = self._get_json(
                    client,
                    str(meta["token_endpoint"]),
                    "POST",
                    data={
                        "grant_type": "authorization_code",
                        "code": code[:2000],
                        "redirect_uri": redirect_uri,
                        "code_verifier": start.verifier,
                    },
                    auth=(cfg.client_id, cfg.client_secret),
                )
            raw = str(answer["id_token"])
        except (httpx.HTTPError, UpstreamError, KeyError, ValueError, TypeError) as exc:
            raise OidcRefused("token_error", f"{type(exc).__name__}: {exc}") from exc
        try:
            keys = KeySet.import_key_set(meta["_jwks"])
            obj = jws.deserialize_compact(raw, keys, algorithms=["RS256"])
            claims = json.loads(obj.payload)
        except (JoseError, KeyError, ValueError, TypeError) as exc:
            raise OidcRefused("signature", f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(claims, dict):
            raise OidcRefused("claims")
        now = self.clock.now().timestamp()
        skew = CLOCK_SKEW.total_seconds()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if str(claims.get("iss", "")).rstrip("/") != cfg.issuer:
            raise OidcRefused("issuer", str(claims.get("iss"))[:200])
        if cfg.client_id not in auds or (len(auds) > 1 and claims.get("azp") != cfg.client_id):
            raise OidcRefused("audience", str(aud)[:200])
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp + skew < now:
            raise OidcRefused("expired", f"exp={exp}")
        if isinstance(iat, int | float) and iat - skew > now:
            raise OidcRefused("not_yet_valid", f"iat={iat}")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not secrets.compare_digest(nonce, start.nonce):
            raise OidcRefused("nonce")
        return claims


__all__ = ["CLOCK_SKEW", "ConsoleAuthService", "ConsoleOidc", "OidcRefused", "OidcStart"]
