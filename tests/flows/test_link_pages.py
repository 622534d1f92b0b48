"""A refused enrollment link, opened in a browser, is a page in the browser's language; a device or a
script still gets the device answer. Through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from httpx import Response
from markupsafe import escape
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.i18n import catalogue
from pomona.testing.clock import FrozenClock
from pomona.testing.virtual_device import VirtualDevice

SAFARI_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
LANGS = {"en": "en-GB,en;q=0.9", "zh-CN": "zh-CN,zh-Hans;q=0.9,en;q=0.5"}


@pytest.fixture
def client(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


def open_in_browser(client: TestClient, url: str, lang: str = "en") -> Response:
    r: Response = client.get(
        url, headers={"Accept": SAFARI_ACCEPT, "Accept-Language": LANGS[lang], "User-Agent": IPHONE}
    )
    return r


def assert_page(pomona: Pomona, r: Response, s: TenantSetup, lang: str, code: str, title_key: str) -> None:
    """The page: its language, the title, the code and the request id of the header and the event, and
    nothing of the tenant or the account."""
    text: str = r.text
    rid: str = r.headers["x-request-id"]
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert f'<html lang="{lang}">' in text
    assert f"<h1>{escape(catalogue(lang)[title_key])}</h1>" in text
    assert f'<code id="reason-code">{code}</code>' in text
    assert f'<code id="request-id">{rid}</code>' in text
    (event,) = pomona.commands.events(s.name, reason=code)
    assert event.request_id == rid
    assert s.name not in text and s.upn not in text and s.tenant_id not in text
    assert '"reason"' not in text and "/portal/_static/portal.css" in text


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
class TestBrowserGetsAPage:
    def test_expired_link(self, pomona: Pomona, client: TestClient, acme: TenantSetup, lang: str) -> None:
        """An expired link opened in a browser: a 403 page saying the link expired, in its language."""
        issued = pomona.admin.create_enrollment_token(acme.name, acme.upn, expires_in=timedelta(minutes=1))
        pomona.enrollment.clock = FrozenClock(datetime.now(UTC) + timedelta(minutes=2))
        r = open_in_browser(client, pomona.enrollment.urls.enroll(issued.secret), lang)
        assert r.status_code == 403
        assert_page(pomona, r, acme, lang, "ENROLLMENT_TOKEN_EXPIRED", "link.token_expired.title")

    def test_used_link(self, pomona: Pomona, client: TestClient, lang: str) -> None:
        """A used one-time link opened in a browser: a 403 page saying it was already used."""
        s = setup_tenant(pomona, "oneshot", uses=1)
        VirtualDevice(s.enroll_url, client=client).enroll()
        r = open_in_browser(client, s.enroll_url, lang)
        assert r.status_code == 403
        assert_page(pomona, r, s, lang, "ENROLLMENT_TOKEN_INVALID", "link.token_used.title")

    def test_mdm_authority_not_set(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, lang: str
    ) -> None:
        """A tenant without an MDM authority: a 403 page naming the setup, not the user, as the cause."""
        with pomona.db.unit_of_work() as uow:
            uow.tenants.set_authority(acme.tenant_id, None)  # type: ignore[arg-type]
        r = open_in_browser(client, acme.enroll_url, lang)
        assert r.status_code == 403
        assert_page(
            pomona, r, acme, lang, "MDM_AUTHORITY_NOT_SET", "portal.reason.MDM_AUTHORITY_NOT_SET.title"
        )
        assert escape(catalogue(lang)["link.reason.MDM_AUTHORITY_NOT_SET.explain"]) in r.text


class TestPageContent:
    def test_unknown_and_revoked_links(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """An unknown link and a revoked one each get their own title (both ENROLLMENT_TOKEN_INVALID)."""
        r = open_in_browser(client, "/enroll/not-a-link")
        assert r.status_code == 403 and catalogue("en")["link.token_unknown.title"] in r.text
        issued = pomona.admin.create_enrollment_token(acme.name, acme.upn)
        pomona.admin.revoke_enrollment_token(acme.name, issued.token.id)
        r = open_in_browser(client, pomona.enrollment.urls.enroll(issued.secret))
        assert r.status_code == 403 and catalogue("en")["link.token_revoked.title"] in r.text

    def test_facts_are_escaped(self, pomona: Pomona, client: TestClient, acme: TenantSetup) -> None:
        """A restriction's name on the page is escaped, and the platform is named as people write it."""
        pomona.policy.create_group(acme.name, "staff")
        pomona.policy.add_member(acme.name, "staff", acme.upn)
        evil = '<script>alert("x")</script>'
        pomona.policy.create_restriction(
            acme.name, type_="platform", priority=1, groups=["staff"], name=evil, ios="block"
        )
        r = open_in_browser(client, acme.enroll_url)
        assert r.status_code == 403 and 'data-reason="PLATFORM_BLOCKED"' in r.text
        assert evil not in r.text and escape(evil) in r.text and "iOS" in r.text

    def test_security_headers(self, client: TestClient, acme: TenantSetup) -> None:
        """The page is not cached, framed or sent on as a referrer (its address holds the link's secret)."""
        r = open_in_browser(client, "/enroll/not-a-link")
        h = r.headers
        assert (h["cache-control"], h["referrer-policy"], h["x-frame-options"]) == (
            "no-store",
            "no-referrer",
            "DENY",
        )
        assert "default-src 'none'" in h["content-security-policy"] and "script" not in r.text


class TestDevicesAndScriptsUnchanged:
    @pytest.mark.parametrize(
        "accept",
        [None, "*/*", "application/json", "application/x-apple-aspen-config", "text/html;q=0"],
    )
    def test_refusal_is_the_device_answer(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, accept: str | None
    ) -> None:
        """Without a request for HTML a refused link answers the device JSON, with the same status."""
        with pomona.db.unit_of_work() as uow:
            uow.tenants.set_authority(acme.tenant_id, None)  # type: ignore[arg-type]
        headers = {"Accept-Language": LANGS["zh-CN"]} | ({"Accept": accept} if accept else {})
        r = client.get(acme.enroll_url, headers=headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/json"
        assert json.loads(r.content) == {
            "reason": "MDM_AUTHORITY_NOT_SET",
            "message": "the tenant's MDM authority is not set",
            "request_id": r.headers["x-request-id"],
        }

    def test_allowed_link_in_a_browser_is_the_profile(self, client: TestClient, acme: TenantSetup) -> None:
        """A link that is not refused gives a browser the profile itself, as before."""
        r = open_in_browser(client, acme.enroll_url)
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-apple-aspen-config"
