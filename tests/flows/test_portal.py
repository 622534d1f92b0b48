"""The self-service portal through the real ASGI app (no mocks), on SQLite and PostgreSQL.

Single sign-on runs against a minimal OpenID Connect provider these tests start on 127.0.0.1
(discovery, authorize, token with an RS256 ID token, JWKS).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.protocol import cms
from pomona.protocol.profile import decode_profile
from pomona.services.portal import PortalService, totp_now
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

BASE = "https://pomona.test"
PASSWORD = "portal-pass-1"
PIA = "pia@acme.example"
BO = "bo@acme.example"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


# --- a minimal OpenID Connect provider --------------------------------------------------------------
class OidcProvider:
    """Discovery, authorize (signs in ``self.claims`` at once), token (client secret, PKCE), JWKS."""

    client_id = "pomona-portal"
    client_secret = "s3cret-" + secrets.token_hex(8)

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig", "alg": "RS256"})
        self.claims: dict[str, Any] = {}
        self.codes: dict[str, dict[str, str]] = {}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    return self._json(200, provider.discovery())
                if url.path == "/jwks":
                    return self._json(200, {"keys": [provider.key.as_dict(private=False)]})
                if url.path == "/authorize":
                    if q.get("client_id") != provider.client_id or q.get("response_type") != "code":
                        return self._json(400, {"error": "invalid_request"})
                    code = secrets.token_urlsafe(16)
                    provider.codes[code] = q
                    self.send_response(302)
                    loc = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
                    self.send_header("Location", loc)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                if urlsplit(self.path).path != "/token":
                    return self._json(404, {"error": "not_found"})
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                auth = self.headers.get("Authorization", "")
                expected = base64.b64encode(
                    f"{provider.client_id}:{provider.client_secret}".encode()
                ).decode()
                if auth != f"Basic {expected}":
                    return self._json(401, {"error": "invalid_client"})
                req = provider.codes.pop(form.get("code", ""), None)
                if req is None or form.get("redirect_uri") != req["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant"})
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if challenge != req.get("code_challenge"):
                    return self._json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                now = int(time.time())
                claims = {
                    "iss": provider.issuer,
                    "aud": provider.client_id,
                    "iat": now,
                    "exp": now + 300,
                    "nonce": req.get("nonce"),
                    **provider.claims,
                }
                token = jwt.encode({"alg": "RS256", "kid": "test-1"}, claims, provider.key)
                return self._json(200, {"access_token": "at", "token_type": "Bearer", "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    p = OidcProvider()
    yield p
    p.stop()


# --- the portal as a phone's browser ----------------------------------------------------------------
class Browser:
    def __init__(self, app: object, tenant: str = "acme", headers: dict[str, str] | None = None) -> None:
        self.c = TestClient(app, base_url=BASE, headers={"User-Agent": IPHONE, **(headers or {})})  # type: ignore[arg-type]
        self.t = tenant
        self.last = ""

    def close(self) -> None:
        self.c.close()

    def csrf(self) -> str:
        m = re.search(r'"X-CSRF-Token": "([^"]+)"', self.last)
        assert m, self.last[:300]
        return m.group(1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        r = self.c.get(f"/portal/{self.t}{path}", **kw)
        self.last = r.text
        return r

    def post(
        self, path: str, data: dict[str, str] | None = None, csrf: str | None = None, **kw: Any
    ) -> httpx.Response:
        form = {"csrf": self.csrf() if csrf is None else csrf, **(data or {})}
        r = self.c.post(f"/portal/{self.t}{path}", data=form, **kw)
        self.last = r.text
        return r

    def sign_in(self, upn: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/signin")
        return self.post("/signin", {"upn": upn, "password": password})

    def serials(self) -> set[str]:
        return set(re.findall(r'data-serial="([^"]*)"', self.get("/devices").text))


def reason_shown(html: str) -> str:
    m = re.search(r'data-reason="([A-Z_]+)"', html)
    return m.group(1) if m else ""


def lang_of(html: str) -> str:
    m = re.search(r'<html lang="([^"]+)"', html)
    return m.group(1) if m else ""


@pytest.fixture
def app(pomona: Pomona) -> object:
    return create_app(pomona=pomona, eager=False)


@pytest.fixture
def client(app: object) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    s = setup_tenant(pomona)
    for upn in (PIA, BO):
        pomona.admin.create_user(s.name, upn, password=PASSWORD)
        pomona.policy.licence(s.name, upn, assign=True)
    return s


@pytest.fixture
def browser(app: object, acme: TenantSetup) -> Iterator[Browser]:
    b = Browser(app)
    yield b
    b.close()


def enrolled_device(p: Pomona, client: TestClient, upn: str, **kw: Any) -> VirtualDevice:
    url = p.enrollment.urls.enroll(p.admin.create_enrollment_token("acme", upn).secret)
    d = VirtualDevice(url, client=client, **kw)
    d.enroll()
    return d


def portal_events(p: Pomona, **filters: Any) -> list[tuple[str, str | None, object]]:
    return [
        (e.outcome.value, e.reason, e.detail.get("action"))
        for e in p.commands.events("acme", **filters)
        if e.step.value == "portal"
    ]


# --- tests ------------------------------------------------------------------------------------------
class TestLocalSignIn:
    def test_password_sign_in(self, pomona: Pomona, browser: Browser) -> None:
        """UPN and password sign in to the device list, leaving an ok portal event."""
        r = browser.sign_in(PIA)
        assert r.status_code == 200 and r.url.path == "/portal/acme/devices"
        assert 'id="enroll"' in r.text
        assert ("ok", None, "sign_in") in portal_events(pomona)

    def test_session_cookie_flags(self, browser: Browser) -> None:
        """The session cookie is signed, Secure, HttpOnly, SameSite=Lax and scoped to /portal."""
        r = browser.get("/signin")
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith("pomona_portal=")
        for flag in ("secure", "httponly", "samesite=lax", "path=/portal"):
            assert flag in cookie, flag

    def test_wrong_password_and_unknown_user(self, pomona: Pomona, browser: Browser) -> None:
        """A wrong password and an unknown UPN get the same 401 page; the log tells them apart."""
        r = browser.sign_in(PIA, "not-the-password")
        assert r.status_code == 401 and 'data-error="portal.signin.bad_credentials"' in r.text
        r2 = browser.sign_in("nobody@acme.example")
        assert r2.status_code == 401 and 'data-error="portal.signin.bad_credentials"' in r2.text
        assert ("failed", "USER_NOT_FOUND", "sign_in") in portal_events(pomona)
        assert ("failed", None, "sign_in") in portal_events(pomona, upn=PIA)

    def test_rate_limit(self, pomona: Pomona, app: object, browser: Browser) -> None:
        """Ten failures for one IP and UPN in five minutes: the next try, even right, is 429."""
        for _ in range(10):
            assert browser.sign_in(PIA, "wrong-password").status_code == 401
        r = browser.sign_in(PIA)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert 'data-message="portal.error.rate_limited.body"' in r.text
        other = Browser(app)
        assert other.sign_in(BO).status_code == 200  # another UPN is not limited
        other.close()

    def test_csrf_refused(self, pomona: Pomona, browser: Browser) -> None:
        """A POST without the session's CSRF token is refused with 403 and does nothing."""
        browser.get("/signin")
        r = browser.post("/signin", {"upn": PIA, "password": PASSWORD}, csrf="forged")
        assert r.status_code == 403 and 'data-message="portal.error.csrf.body"' in r.text
        browser.sign_in(PIA)
        r = browser.post("/enroll", csrf="")
        assert r.status_code == 403
        r = browser.c.post("/portal/acme/enroll", headers={"X-CSRF-Token": "forged"})
        assert r.status_code == 403
        assert not [e for e in portal_events(pomona) if e[2] == "enroll"]

    def test_disabled_user(self, pomona: Pomona, browser: Browser) -> None:
        """A disabled user with the right password is refused with USER_DISABLED, and it is logged."""
        pomona.policy.set_user_flags("acme", PIA, enabled=False)
        r = browser.sign_in(PIA)
        assert r.status_code == 403 and reason_shown(r.text) == "USER_DISABLED"
        assert ("failed", "USER_DISABLED", "sign_in") in portal_events(pomona)
        assert browser.get("/devices").url.path == "/portal/acme/signin"

    def test_totp_enrolment_and_verification(self, pomona: Pomona, browser: Browser) -> None:
        """An MFA user enrols a TOTP secret on first sign-in, then must give a fresh code each time."""
        pomona.policy.set_user_flags("acme", PIA, mfa_required=True)
        r = browser.sign_in(PIA)
        assert r.url.path == "/portal/acme/mfa"
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', r.text)
        uri = re.search(r'id="otpauth">(otpauth://totp/[^<]+)<', r.text)
        assert secret and uri and f"secret={secret.group(1)}" in uri.group(1)
        assert browser.get("/devices").url.path == "/portal/acme/signin"  # not signed in yet
        browser.get("/mfa")
        bad = browser.post(
            "/mfa",
            {"code": "000000" if totp_now(secret.group(1), pomona.clock.now()) != "000000" else "111111"},
        )
        assert bad.status_code == 401 and 'data-error="portal.mfa.wrong_code"' in bad.text
        code = totp_now(secret.group(1), pomona.clock.now())
        ok = browser.post("/mfa", {"code": code})
        assert ok.url.path == "/portal/acme/devices"
        with pomona.db.unit_of_work(readonly=True) as uow:
            u = uow.users.by_upn(uow.tenants.by_name("acme").id, PIA)  # type: ignore[union-attr]
        assert u is not None and u.totp_secret == secret.group(1)
        browser.post("/signout")
        r = browser.sign_in(PIA)
        assert r.url.path == "/portal/acme/mfa" and 'id="totp-secret"' not in r.text
        replay = browser.post("/mfa", {"code": code})
        assert replay.status_code == 401  # a code is good once
        assert ("ok", None, "totp_enrol") in portal_events(pomona)


class TestOidc:
    def _configure(
        self, pomona: Pomona, idp: OidcProvider, db_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Through the admin command, as an admin would."""
        data_dir = str(pomona.settings.data_dir)  # the server key is there (before the import rebinds)
        import pomona.cli.portal_cmds  # noqa: F401  (registers `pomona portal`)
        from pomona.cli.main import main

        monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
        monkeypatch.setenv("POMONA_DATA_DIR", data_dir)
        res = CliRunner().invoke(
            main,
            [
                "portal",
                "oidc",
                "--tenant",
                "acme",
                "--issuer",
                idp.issuer,
                "--client-id",
                idp.client_id,
                "--client-secret",
                idp.client_secret,
                "--json",
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["redirect_uri"].endswith("/portal/acme/oidc/callback")

    def _round_trip(self, browser: Browser) -> httpx.Response:
        start = browser.get("/oidc/start", follow_redirects=False)
        assert start.status_code == 303
        at_idp = httpx.get(start.headers["location"], follow_redirects=False)
        assert at_idp.status_code == 302
        back = urlsplit(at_idp.headers["location"])
        r = browser.c.get(f"{back.path}?{back.query}")
        browser.last = r.text
        return r

    def test_oidc_sign_in(
        self,
        pomona: Pomona,
        browser: Browser,
        idp: OidcProvider,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The organisation account signs in through the tenant's OpenID Connect provider."""
        self._configure(pomona, idp, db_url, monkeypatch)
        assert 'id="sso"' in browser.get("/signin").text
        idp.claims = {"sub": "u-1", "preferred_username": PIA.upper()}
        r = self._round_trip(browser)
        assert r.url.path == "/portal/acme/devices" and PIA in r.text
        assert ("ok", None, "sign_in") in portal_events(pomona, upn=PIA)

    def test_oidc_unknown_user(
        self,
        pomona: Pomona,
        browser: Browser,
        idp: OidcProvider,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An identity the provider vouches for but the directory lacks is refused: USER_NOT_FOUND."""
        self._configure(pomona, idp, db_url, monkeypatch)
        idp.claims = {"sub": "u-2", "email": "stranger@acme.example"}
        r = self._round_trip(browser)
        assert r.status_code == 403 and reason_shown(r.text) == "USER_NOT_FOUND"
        assert ("failed", "USER_NOT_FOUND", "sign_in") in portal_events(pomona)

    def test_oidc_forged_state(
        self,
        pomona: Pomona,
        browser: Browser,
        idp: OidcProvider,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A callback whose state is not the session's is refused before any token request."""
        self._configure(pomona, idp, db_url, monkeypatch)
        browser.get("/oidc/start", follow_redirects=False)
        r = browser.get("/oidc/callback", params={"code": "x", "state": "forged"})
        assert r.status_code == 403

    def test_oidc_mfa_from_provider(
        self,
        pomona: Pomona,
        browser: Browser,
        idp: OidcProvider,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An MFA user whose provider says amr=mfa is not asked for our TOTP; without it, is."""
        self._configure(pomona, idp, db_url, monkeypatch)
        pomona.policy.set_user_flags("acme", PIA, mfa_required=True)
        idp.claims = {"sub": "u-1", "upn": PIA, "amr": ["pwd", "mfa"]}
        assert self._round_trip(browser).url.path == "/portal/acme/devices"
        browser.post("/signout")
        idp.claims = {"sub": "u-1", "upn": PIA, "amr": ["pwd"]}
        assert self._round_trip(browser).url.path == "/portal/acme/mfa"


class TestDevices:
    def test_only_own_devices(self, pomona: Pomona, client: TestClient, browser: Browser) -> None:
        """The list shows the user's own devices only; another user's device cannot be retired."""
        mine = enrolled_device(pomona, client, PIA, os_version="17.5")
        theirs = enrolled_device(pomona, client, BO)
        browser.sign_in(PIA)
        assert browser.serials() == {mine.serial}
        page = browser.last
        assert "17.5" in page and theirs.udid not in page and BO not in page
        r = browser.post(f"/devices/{theirs.udid}/retire", headers={"HX-Request": "true"})
        assert r.status_code == 404 and 'data-notice="portal.devices.not_yours"' in r.text
        assert pomona.commands.device("acme", theirs.udid).enrollment is not None

    def test_retire_frees_a_slot(self, pomona: Pomona, client: TestClient, browser: Browser) -> None:
        """At the limit, retiring a device frees its slot; the device is told to unenroll at check-in."""
        old = enrolled_device(pomona, client, PIA)
        pomona.policy.edit_restriction("acme", type_="limit", default=True, limit=1)
        browser.sign_in(PIA)
        r = browser.post("/enroll")
        assert r.status_code == 403 and reason_shown(r.text) == "DEVICE_LIMIT_REACHED"
        assert f'data-udid="{old.udid}"' in r.text  # the refusal lists what can be removed
        r = browser.post(f"/devices/{old.udid}/retire", headers={"HX-Request": "true"})
        assert r.status_code == 200 and 'data-notice="portal.devices.retired"' in r.text
        assert r.text.lstrip().startswith('<section id="devices"')  # htmx gets the list only
        assert browser.serials() == set()
        r = browser.post("/enroll")
        assert r.status_code == 200 and r.url.path == "/portal/acme/install"
        with pytest.raises(EnrollmentRefused) as err:
            old.poll()
        assert err.value.status == 403
        assert ("ok", None, "retire") in portal_events(pomona)

    def test_retire_without_javascript(self, pomona: Pomona, client: TestClient, browser: Browser) -> None:
        """The retire form works as a plain POST too, then shows the list again."""
        d = enrolled_device(pomona, client, PIA)
        browser.sign_in(PIA)
        r = browser.post(f"/devices/{d.udid}/retire")
        assert r.url.path == "/portal/acme/devices" and d.serial not in r.text


class TestProfile:
    def test_profile_is_signed_and_enrolls(self, pomona: Pomona, app: object, browser: Browser) -> None:
        """Enroll this device: steps page, then a signed profile that decodes and enrolls the device."""
        browser.sign_in(PIA)
        r = browser.post("/enroll")
        assert r.url.path == "/portal/acme/install" and 'id="download"' in r.text
        prof = browser.get("/profile")
        assert prof.status_code == 200
        assert prof.headers["content-type"] == "application/x-apple-aspen-config"
        content, signer = cms.verify_attached(prof.content)
        assert signer == pomona.signer.certificate
        decoded = decode_profile(content)
        assert decoded.scep_challenge and decoded.topic
        d = VirtualDevice(client=browser.c)  # the same Safari session downloads it on the phone
        d.download(f"{BASE}/portal/acme/profile")
        d.install()
        assert d.enrolled and browser.serials() == {d.serial}
        with pytest.raises(EnrollmentRefused) as err:  # the portal's link is good once
            VirtualDevice(client=browser.c).enroll(f"{BASE}/portal/acme/profile")
        assert err.value.reason in ("ENROLLMENT_TOKEN_INVALID", "HTTP_403")

    def test_profile_needs_a_session(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """Without a signed-in session there is no profile, only the sign-in page."""
        r = client.get("/portal/acme/profile", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("/portal/acme/signin")


class TestLanguage:
    def test_accept_language(self, app: object, acme: TenantSetup) -> None:
        """Accept-Language picks zh-CN or en; unknown languages fall back to English."""
        for header, lang in (
            ("zh-CN,zh;q=0.9", "zh-CN"),
            ("en-GB,en;q=0.8", "en"),
            ("fr-FR", "en"),
            ("fr, zh;q=0.5", "zh-CN"),
        ):
            b = Browser(app, headers={"Accept-Language": header})
            assert lang_of(b.get("/signin").text) == lang, header
            b.close()

    def test_switch_beats_accept_language(self, app: object, acme: TenantSetup) -> None:
        """The visible switch sets a lang cookie that wins over Accept-Language, and stays local."""
        b = Browser(app, headers={"Accept-Language": "en"})
        page = b.get("/signin").text
        assert 'id="lang-switch"' in page and lang_of(page) == "en"
        r = b.get("/lang/zh-CN", params={"next": "/portal/acme/signin"})
        assert r.url.path == "/portal/acme/signin" and lang_of(r.text) == "zh-CN"
        assert lang_of(b.get("/signin").text) == "zh-CN"
        r = b.get("/lang/en", params={"next": "//evil.example/x"}, follow_redirects=False)
        assert r.headers["location"] == "/portal/acme"
        b.close()

    def test_every_portal_key_has_both_languages(self) -> None:
        """Every portal.* message exists in en and zh-CN with the same placeholders."""
        from pomona.i18n import catalogue

        en = {k: v for k, v in catalogue("en").items() if k.startswith("portal.")}
        zh = {k: v for k, v in catalogue("zh-CN").items() if k.startswith("portal.")}
        assert set(en) == set(zh)
        fields = re.compile(r"\{(\w+)\}")
        for k in en:
            assert set(fields.findall(en[k])) == set(fields.findall(zh[k])), k
        for code in (
            "USER_NOT_FOUND USER_DISABLED USER_NOT_LICENSED LICENSES_EXHAUSTED MDM_AUTHORITY_NOT_SET "
            "APNS_CERT_MISSING APNS_CERT_EXPIRED PLATFORM_BLOCKED PERSONAL_DEVICE_BLOCKED OS_VERSION_TOO_LOW "
            "OS_VERSION_TOO_HIGH DEVICE_LIMIT_REACHED DEVICE_BLOCKED DEVICE_ENROLLED_TO_OTHER_USER"
        ).split():
            assert f"portal.reason.{code}.title" in en and f"portal.reason.{code}.explain" in en, code

    def test_unknown_tenant(self, client: TestClient) -> None:
        """A portal address naming no tenant is a plain 404 page."""
        assert client.get("/portal/nope/signin").status_code == 404


class TestService:
    def test_portal_service_is_shared(self, pomona: Pomona, app: object) -> None:
        """The app wires one PortalService (its rate limiter is per process)."""
        assert isinstance(pomona.portal, PortalService)


class TestServerSideSessions:
    def test_cookie_reused_after_sign_out_is_signed_out(
        self, pomona: Pomona, app: object, browser: Browser
    ) -> None:
        """Sign-out ends the session on the server: the same cookie, replayed, signs nobody in."""
        assert browser.sign_in(PIA).url.path == "/portal/acme/devices"
        stolen = browser.c.cookies["pomona_portal"]
        browser.get("/devices")
        browser.post("/signout")
        replay = Browser(app)
        try:
            replay.c.cookies.set("pomona_portal", stolen, domain="pomona.test", path="/portal")
            assert replay.get("/devices").url.path == "/portal/acme/signin"
        finally:
            replay.close()

    def test_disabled_user_session_ends(self, pomona: Pomona, browser: Browser) -> None:
        """A user disabled while signed in is refused, and the session stays ended once re-enabled."""
        browser.sign_in(PIA)
        pomona.policy.set_user_flags("acme", PIA, enabled=False)
        r = browser.get("/devices")
        assert reason_shown(r.text) == "USER_DISABLED" or r.url.path.endswith("/refused")
        pomona.policy.set_user_flags("acme", PIA, enabled=True)
        assert browser.get("/devices").url.path == "/portal/acme/signin"

    def test_password_change_ends_sessions(self, pomona: Pomona, browser: Browser) -> None:
        """A changed password signs out the sessions opened with the old one."""
        from pomona.services.admin import hash_password

        browser.sign_in(PIA)
        assert browser.get("/devices").url.path == "/portal/acme/devices"
        pomona.policy.set_user_flags("acme", PIA, password_hash=hash_password("a-new-password-2"))
        assert browser.get("/devices").url.path == "/portal/acme/signin"

    def test_the_cookie_carries_no_user_id(self, pomona: Pomona, browser: Browser) -> None:
        """The session cookie names a random session id; the store keeps only its hash."""
        browser.sign_in(PIA)
        raw = browser.c.cookies["pomona_portal"].split(".")[0]
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4)))
        with pomona.db.unit_of_work(readonly=True) as uow:
            user = uow.users.by_upn(uow.tenants.by_name("acme").id, PIA)  # type: ignore[union-attr]
        assert user is not None and user.id not in json.dumps(data)
        assert "uid" not in data and isinstance(data.get("sid"), str)
