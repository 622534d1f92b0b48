"""The enrollment link's refusal page: who gets it, and its texts in both languages (no I/O)."""

from __future__ import annotations

import re

import pytest

from pomona.domain.errors import EnrollmentTokenError, PolicyError, describe
from pomona.domain.reasons import ReasonCode
from pomona.http.link_pages import (
    GENERIC,
    INTERNAL,
    TEXTS,
    TOKEN_TEXTS,
    LinkRefusalPage,
    texts_for,
    wants_page,
)
from pomona.i18n import catalogue
from pomona.testing.clock import FrozenClock

FIELDS = re.compile(r"\{(\w+)\}")
# Every refusal GET /enroll/<secret> can answer (services/enrollment.py: the link, then the policy at
# the profile stage, which has no device facts but the User-Agent's platform and OS version).
LINK_REFUSALS = {
    ReasonCode.ENROLLMENT_TOKEN_EXPIRED,
    ReasonCode.MDM_AUTHORITY_NOT_SET,
    ReasonCode.APNS_CERT_MISSING,
    ReasonCode.APNS_CERT_EXPIRED,
    ReasonCode.USER_NOT_FOUND,
    ReasonCode.USER_DISABLED,
    ReasonCode.USER_NOT_LICENSED,
    ReasonCode.LICENSES_EXHAUSTED,
    ReasonCode.PLATFORM_BLOCKED,
    ReasonCode.OS_VERSION_TOO_LOW,
    ReasonCode.OS_VERSION_TOO_HIGH,
    ReasonCode.DEVICE_LIMIT_REACHED,
}


class TestWhoGetsThePage:
    @pytest.mark.parametrize(
        ("accept", "page"),
        [
            ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Safari
            ("TEXT/HTML", True),
            ("application/json, text/html; q=0.5", True),
            ("text/html;q=0", False),
            ("text/html;q=zero", False),
            ("*/*", False),  # curl, httpx, requests
            ("", False),
            (None, False),
            ("application/x-apple-aspen-config", False),
            ("text/htmlx", False),
        ],
    )
    def test_accept(self, accept: str | None, page: bool) -> None:
        """Only a request for text/html (non-zero q) gets the page; anything else, the device answer."""
        assert wants_page(accept) is page


class TestTexts:
    def test_every_link_key_has_both_languages(self) -> None:
        """Every link.* message exists in en and zh-CN with the same placeholders."""
        en = {k: v for k, v in catalogue("en").items() if k.startswith("link.")}
        zh = {k: v for k, v in catalogue("zh-CN").items() if k.startswith("link.")}
        assert en and set(en) == set(zh)
        for k in en:
            assert set(FIELDS.findall(en[k])) == set(FIELDS.findall(zh[k])), k

    def test_every_page_text_is_filled_by_its_facts(self) -> None:
        """Each page's texts exist in both languages and name only the facts the page may show."""
        for texts in [*TEXTS.values(), *TOKEN_TEXTS.values(), GENERIC, INTERNAL]:
            for lang in ("en", "zh-CN"):
                for key in (texts.title, texts.explain):
                    assert key in catalogue(lang), (lang, key)
                    assert set(FIELDS.findall(catalogue(lang)[key])) <= set(texts.facts), (lang, key)

    def test_every_link_refusal_has_its_own_text(self) -> None:
        """Each refusal a link can meet has its own texts, not the generic ones."""
        assert LINK_REFUSALS <= set(TEXTS)

    def test_token_cases(self) -> None:
        """An unknown, a used and a revoked link read differently; a fault of ours says so."""
        assert texts_for(describe(EnrollmentTokenError("unknown enrollment token"))) is TOKEN_TEXTS["unknown"]
        assert (
            texts_for(describe(EnrollmentTokenError("used", token_id="t", used=True))) is TOKEN_TEXTS["used"]
        )
        revoked = describe(EnrollmentTokenError("revoked", token_id="t", revoked=True))
        assert texts_for(revoked) is TOKEN_TEXTS["revoked"]
        assert texts_for(describe(RuntimeError("boom"))) is INTERNAL

    def test_only_the_facts_the_device_answer_names(self) -> None:
        """A fact the device answer's message does not name (the account) never reaches the page."""
        err = PolicyError("the user is disabled", reason=ReasonCode.USER_DISABLED, upn="ana@acme.example")
        page = LinkRefusalPage(FrozenClock()).render(describe(err), "rid1", "en").decode()
        assert "ana@acme.example" not in page and 'id="request-id">rid1<' in page
